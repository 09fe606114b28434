"""Pure analysis of a run: reconciliation, integrity, fault windows, tag search, statistics,
the planner, verdicts and gates. Nothing here starts a process or talks to a network."""

"""Adaptive concurrency for the read-back: an AIMD limit on the queries in flight, driven by what
the backend answers (pure and thread-safe: no clock, no I/O; the caller measures latency).

Every request attempt is bracketed by `begin()` (a ticket: the limit's generation when it
started) and `record(ticket, outcome, latency_s)`. The limit moves between `minimum` (1) and
`maximum`, starting at `start`:

- additive increase: +1 once `limit` successful answers (at least `min_window`) that started at
  the current limit came back while the latency EWMA stays below `increase_below` x the
  baseline (the lowest EWMA seen: the backend's latency when it is not queueing our requests).
  The step up to the limit that was last throttled (or failed) waits `plateau_rounds` times as
  many answers: the limit lingers just below where the backend pushed back (as TCP CUBIC does
  near its last loss) instead of meeting another 429 every few rounds; once a limit above it
  is reached, the backend has more room and the climb is back to normal;
- multiplicative decrease: x `decrease_factor` (halved) on a throttled answer (429/503, whatever
  its Retry-After), down to `minimum`; on a failed attempt (timeout, connection error,
  500/502/504) down to `start` only (a failing or vanished backend is not helped by one request
  at a time: against a backend gone mid-run, that made a read-back's poll several times longer);
  and on the latency EWMA above `decrease_above` x the baseline, down to `start` only:
  latency alone (which also grows with the client's own CPU load) never takes back more than the
  increases gave, so an adaptive reader is never slower than a fixed one for it. At that floor,
  the EWMA becomes the new baseline: the backend got slower, not our load heavier. Only attempts
  that started after the previous decrease can decrease again (those in flight then were sent
  under the old limit: one decrease per round, as TCP does), and a latency decrease waits for a
  round of answers sent at the current limit (as many as the limit).

Between `increase_below` and `decrease_above` the limit holds: more requests in flight would only
queue at the backend. With `adaptive=False` the limit stays at `start`; answers are still counted.

Latency is taken from successful answers only (a 429 is fast and says nothing of the backend's
speed). Any answer that is not throttled or failed counts as a success, a 404 included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

__all__ = ["AimdController", "AimdSettings", "BusyClock", "ControllerState", "Outcome"]


class Outcome(Enum):
    """What one request attempt came back with, as the controller sees it."""

    OK = "ok"
    """Any answer that is not throttled or failed (200, 404, 400, ...)."""
    THROTTLED = "throttled"
    """429 or 503: the backend asks us to slow down."""
    SERVER_ERROR = "server_error"
    """500, 502 or 504: a transient server failure, often overload behind a gateway."""
    TRANSPORT_ERROR = "transport_error"
    """No answer: a timeout or a connection error."""


@dataclass(frozen=True)
class AimdSettings:
    """How the limit moves; see the module docstring."""

    start: int
    """The limit at first (`BackendOptions.concurrency`), and the fixed limit when not adaptive."""
    maximum: int
    """The highest limit (`BackendOptions.max_concurrency`, or the reader's default)."""
    adaptive: bool = True
    minimum: int = 1
    min_window: int = 4
    """Fewest successful answers per +1, whatever the limit."""
    increase_below: float = 2.0
    decrease_above: float = 3.0
    decrease_factor: float = 0.5
    ewma_alpha: float = 0.3
    plateau_rounds: int = 8
    """Answers per +1 are multiplied by this for the step to the last throttled limit."""
    warmup: int = 5
    """Successful answers before the EWMA may become the baseline (no latency decisions before)."""

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.start <= self.maximum:
            raise ValueError(
                f"need 1 <= minimum <= start <= maximum, got {self.minimum}, {self.start}, {self.maximum}"
            )
        if not 1.0 <= self.increase_below <= self.decrease_above:
            raise ValueError("need 1 <= increase_below <= decrease_above")
        if not 0.0 < self.decrease_factor < 1.0 or not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError("need 0 < decrease_factor < 1 and 0 < ewma_alpha <= 1")
        if self.min_window < 1 or self.warmup < 1 or self.plateau_rounds < 1:
            raise ValueError("need min_window >= 1, plateau_rounds >= 1 and warmup >= 1")


@dataclass(frozen=True)
class ControllerState:
    """A consistent snapshot of the controller's limit and counts."""

    limit: int
    lowest: int
    """The lowest limit so far (the start, until a decrease)."""
    highest: int
    """The highest limit so far."""
    requests: int
    """Attempts recorded (each retry is one more)."""
    throttled: int
    server_errors: int
    transport_errors: int
    increases: int
    decreases: int
    latency_ewma_s: float | None
    """None before the first successful answer."""
    baseline_s: float | None
    """None during the warm-up."""


class AimdController:
    """The limit and its rules (module docstring); every method is safe from any thread."""

    def __init__(self, settings: AimdSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._limit = settings.start
        self._lowest = self._highest = settings.start
        self._generation = 0  # +1 at every change of the limit
        self._decreased_at = 0  # the generation a decrease produced last
        self._ceiling: int | None = None  # the limit last throttled or failed at
        self._good = 0  # fast successes started at this generation: towards the next increase
        self._fresh = 0  # successes started at this generation: a round judges the limit
        self._ok = 0
        self._ewma: float | None = None
        self._baseline: float | None = None
        self._counts = {outcome: 0 for outcome in Outcome}
        self._increases = self._decreases = 0

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self._limit  # an int read: atomic

    @property
    def maximum(self) -> int:
        return self.settings.maximum if self.settings.adaptive else self.settings.start

    def begin(self) -> int:
        """A ticket for an attempt about to be sent: pass it back to `record`."""
        return self._generation

    def record(self, ticket: int, outcome: Outcome, latency_s: float) -> None:
        """One attempt's outcome and how long it took (seconds, from send to answer or failure)."""
        with self._lock:
            self._counts[outcome] += 1
            if outcome is Outcome.OK:
                self._on_success(ticket, latency_s)
            elif self.settings.adaptive and ticket >= self._decreased_at:
                self._ceiling = self._limit
                # Only the backend's own "slow down" takes the limit below the start: a backend
                # that fails or is gone is not helped by being asked one request at a time, and
                # a read-back against it would take that many times longer.
                self._decrease(floor=None if outcome is Outcome.THROTTLED else self.settings.start)

    def state(self) -> ControllerState:
        with self._lock:
            return ControllerState(
                limit=self._limit,
                lowest=self._lowest,
                highest=self._highest,
                requests=sum(self._counts.values()),
                throttled=self._counts[Outcome.THROTTLED],
                server_errors=self._counts[Outcome.SERVER_ERROR],
                transport_errors=self._counts[Outcome.TRANSPORT_ERROR],
                increases=self._increases,
                decreases=self._decreases,
                latency_ewma_s=self._ewma,
                baseline_s=self._baseline,
            )

    # -- under the lock ------------------------------------------------------------------------

    def _on_success(self, ticket: int, latency_s: float) -> None:
        s = self.settings
        latency_s = max(0.0, latency_s)  # a clock that went backwards
        self._ewma = latency_s if self._ewma is None else self._ewma + s.ewma_alpha * (latency_s - self._ewma)
        self._ok += 1
        if self._ok >= s.warmup and (self._baseline is None or self._ewma < self._baseline):
            self._baseline = self._ewma
        if not s.adaptive or self._baseline is None:
            return
        if ticket == self._generation:
            self._fresh += 1
        if self._ewma > s.decrease_above * self._baseline:
            if self._fresh >= self._limit:
                if self._limit <= s.start:
                    # Nothing latency may take back: this latency is the backend's own.
                    self._baseline = self._ewma
                else:
                    self._decrease(floor=s.start)
            return
        if self._ewma >= s.increase_below * self._baseline or ticket != self._generation:
            return
        self._good += 1
        window = max(self._limit, s.min_window)
        if self._ceiling is not None and self._limit + 1 >= self._ceiling:
            window *= s.plateau_rounds
        if self._good >= window and self._limit < s.maximum:
            self._set_limit(self._limit + 1)
            self._increases += 1
            if self._ceiling is not None and self._limit > self._ceiling:
                self._ceiling = None

    def _decrease(self, floor: int | None = None) -> None:
        s = self.settings
        lower = max(s.minimum if floor is None else floor, int(self._limit * s.decrease_factor))
        if lower < self._limit:
            self._set_limit(lower)
            self._decreases += 1
        else:  # at the minimum: still a new round, which answers already in flight are not part of
            self._generation += 1
            self._good = self._fresh = 0
        self._decreased_at = self._generation

    def _set_limit(self, limit: int) -> None:
        self._limit = limit
        self._lowest = min(self._lowest, limit)
        self._highest = max(self._highest, limit)
        self._generation += 1
        self._good = self._fresh = 0


class BusyClock:
    """Wall time spent inside calls, overlapping calls (nested or on other threads) counted once:
    `with clock.busy(): ...` around each call, `seconds()` for the total so far."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._depth = 0
        self._since = 0.0
        self._total = 0.0

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._since = self._clock()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._total += self._clock() - self._since

    def seconds(self) -> float:
        """The total so far, including the call in progress if there is one."""
        with self._lock:
            return self._total + (self._clock() - self._since if self._depth else 0.0)

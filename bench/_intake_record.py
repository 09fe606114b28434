"""The ledger record bench/master_intake.py's synthetic workers append (and its in-process
baseline writes): the fields and typical lengths of what the traced user writes. Pure data, so
the master_intake script imports it without importing Locust (which patches the process)."""

RECORD = {
    "rid": "",
    "mode": "b3_multi_no_flag",
    "path": "/headers",
    "inj_trace": "463ac35c9f6413ad48485a3953bb6124",
    "inj_span": "a2fb4a1d1a96d312",
    "inj_flag": None,
    "latency_ms": 3.217,
    "ts": 1767225600.123456,
    "status": 200,
    "up_trace": "463ac35c9f6413ad48485a3953bb6124",
    "up_span": "2b0be974ad915801",
    "up_flag": "0",
    "up_xrid": "2cc12a23-e3b4-4b66-8689-60999f258179",
    "error": None,
}

"""Stand-ins for the watch's unit tests: a clock, a backend whose answers the test sets, ledger
records as Locust writes them, and segments written straight into a folder."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.backends.base import Fetched, FetchStatus, ProgressCallback, Span, TraceBackend
from loadgen.mesh.ids import normalize_trace_id

SERVICES = ("istio-ingressgateway", "httpbin")


class Clock:
    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def spans_of(trace_id: str, n: int, services: Sequence[str] = SERVICES) -> tuple[Span, ...]:
    """`n` spans of one trace, a chain through `services` (the first is the root)."""
    out = []
    for i in range(n):
        span: dict[str, Any] = {
            "traceId": trace_id,
            "id": f"{i + 1:016x}",
            "kind": "SERVER",
            "name": "get",
            "localEndpoint": {"serviceName": services[min(i, len(services) - 1)]},
        }
        if i:
            span["parentId"] = f"{i:016x}"
        out.append(span)
    return tuple(out)


class FakeBackend(TraceBackend):
    """Answers from `held` (trace id -> spans); an id not held is MISSING; `down` answers ERROR
    for every id. `reads` lists the ids of each fetch; `gate`, when set, holds fetches until it
    is released."""

    name = "fake"
    url = "http://fake"

    def __init__(self) -> None:
        self.held: dict[str, tuple[Span, ...]] = {}
        self.down = False
        self.reads: list[list[str]] = []
        self.gate: threading.Event | None = None

    def hold(self, trace_id: str, spans: int) -> None:
        self.held[normalize_trace_id(trace_id)] = spans_of(trace_id, spans)

    def check(self) -> None:
        pass

    def fetch_many(
        self, trace_ids: Sequence[str], on_progress: ProgressCallback | None = None
    ) -> dict[str, Fetched]:
        if self.gate is not None:
            self.gate.wait(10)
        ids = [normalize_trace_id(t) for t in trace_ids]
        self.reads.append(ids)
        if self.down:
            return {t: Fetched(FetchStatus.ERROR, error="connection refused") for t in ids}
        return {
            t: Fetched(FetchStatus.FOUND, self.held[t]) if t in self.held else Fetched(FetchStatus.MISSING)
            for t in ids
        }

    def search(self, **_: Any) -> list[list[Span]]:
        return []

    def close(self) -> None:
        pass


def record(
    rid: str, trace: str, *, ts: float, sampled: bool | None = True, mode: str = "none", status: int = 200
) -> dict[str, Any]:
    """A ledger record as the traced user writes it (the upstream's echoed flag is the decision)."""
    rec: dict[str, Any] = {"rid": rid, "mode": mode, "ts": ts, "status": status, "inj_trace": None}
    if status == 200:
        rec["up_trace"] = trace
        rec["up_flag"] = None if sampled is None else ("1" if sampled else "0")
    else:
        rec["error"] = "connection refused"
    return rec


def write_segment(
    directory: Path, name: str, records: Sequence[Mapping[str, Any]], tail: bytes = b""
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)
    return path


def tid(i: int) -> str:
    return f"a{i:031x}"


Factory = Callable[..., Any]

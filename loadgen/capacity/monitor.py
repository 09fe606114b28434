"""The live monitor of a capacity run (`RunOptions.on_tick`): collector ingest samples and the
safety abort.

**The safety abort** stops a run that hurts more than it measures. Live errors come from the
ledger counts (the last `window_s`). Live collection is a quick backend query of the sampled
trace ids whose requests ended `settle_s` to `settle_s + window_s` ago (each id queried once,
at most `max_ids` per check): the same end-to-end definition as the final collection rate, for
any backend. (The collector's own counters would only see loss at the collector, not spans an
Envoy never sent, and exist only on the embedded collector.) It is an early signal, so its
bound is meant to be loose (hard limits, not the knee's).

The collector's ingest counters are sampled once a second (embedded collector only:
`GET /loadgen/stats`) and appended to ingest.jsonl.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from loadgen.analysis.reconcile import (
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    upstream_decision,
)
from loadgen.backends import BackendError, BackendOptions, TraceBackend, parse_backend_spec
from loadgen.capacity.metrics import IngestSample
from loadgen.capacity.model import INGEST_LOG, SafetyBounds
from loadgen.ledger import LiveCounts
from loadgen.mesh.ids import normalize_trace_id


class LiveMonitor:
    """Called once a second by execute_run: samples the collector's ingest counters and checks
    the safety bounds; returns the abort reason when one trips. Never raises: a check that
    fails is turned off and noted."""

    def __init__(
        self,
        run_dir: Path,
        safety: SafetyBounds,
        *,
        backend_spec: str = "",
        backend_flags: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        backend: TraceBackend | None = None,
        expect: Expectation | None = None,
        settle_s: float | None = None,
        stats_url: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.safety = safety
        self.clock = clock
        self.samples: list[IngestSample] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.abort_reason: str | None = None
        self.abort_at: float | None = None
        self.abort_elapsed_s: float | None = None
        self._backend_spec = backend_spec
        self._backend_flags = dict(backend_flags or {})
        self._backend = backend
        self._expect = expect
        self._settle_s = settle_s
        self._stats_url = stats_url
        self._meta_loaded = backend is not None and expect is not None
        self._http: httpx.Client | None = None
        self._snapshots: deque[tuple[float, int, int]] = deque()
        self._offset = 0
        self._partial = b""
        self._pending: list[tuple[float, str]] = []  # (request end, trace id) of sampled requests
        self._results: deque[tuple[float, bool]] = deque()  # (request end, found complete)
        self._last_check = 0.0
        self._collection_off = safety.min_collection is None
        self._ingest_off = False

    # -- the hook --

    def __call__(self, live: LiveCounts, elapsed_s: float) -> str | None:
        now = self.clock()
        if not self._meta_loaded:
            self._load_meta()
        if not self._ingest_off:
            self._guard("collector ingest stats", self._poll_ingest, now, "_ingest_off")
        reason = self._check_errors(live, now)
        if reason is None and not self._collection_off and self._meta_loaded:
            reason = self._guard("live collection check", self._check_collection, now, "_collection_off")
        if reason:
            self.abort_reason, self.abort_at, self.abort_elapsed_s = reason, now, elapsed_s
        return reason

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._http is not None:
            self._http.close()

    def _guard(self, what: str, fn: Callable[[float], str | None], now: float, off_flag: str) -> str | None:
        try:
            return fn(now)
        except Exception as exc:  # a monitoring failure must not break the run
            self.notes.append(f"{what} turned off: {exc!r}")
            setattr(self, off_flag, True)
            return None

    def _load_meta(self) -> None:
        """run.json (written before the load starts) says where the collector is and what a
        complete trace looks like."""
        try:
            meta = json.loads((self.run_dir / "run.json").read_text())
        except (OSError, ValueError):
            return
        self._meta_loaded = True
        target = meta.get("target") or {}
        exp = meta.get("expectation") or {}
        if self._expect is None:
            self._expect = Expectation.from_run_json(exp)
        if self._settle_s is None:
            quiet = exp.get("quiet_s")
            self._settle_s = (
                self.safety.settle_s
                if self.safety.settle_s is not None
                else (float(quiet) if isinstance(quiet, int | float) else 6.0) + 1.0
            )
        collector = str(target.get("collector") or "")
        if self._stats_url is None and collector:
            self._stats_url = collector.rstrip("/") + "/loadgen/stats"
        if self._stats_url is None:
            self._ingest_off = True
        if self._backend is None and not self._collection_off:
            spec = self._backend_spec or (f"zipkin:{collector}" if target.get("kind") == "embedded" else "")
            if not spec:
                self._collection_off = True
                self.notes.append("live collection check off: no backend to query")
                return
            try:
                self._backend = parse_backend_spec(
                    spec, BackendOptions.from_env(os.environ).merged(self._backend_flags)
                )
            except (ValueError, BackendError) as exc:
                self._collection_off = True
                self.notes.append(f"live collection check off: {exc}")

    # -- collector ingest --

    def _poll_ingest(self, now: float) -> str | None:
        if self._stats_url is None:
            return None
        if self._http is None:
            self._http = httpx.Client(timeout=1.0)
        resp = self._http.get(self._stats_url)
        if resp.status_code != 200:
            self._ingest_off = True
            self.notes.append(
                f"collector ingest stats unavailable ({self._stats_url} answered {resp.status_code})"
            )
            return None
        sample = IngestSample.from_stats(now, resp.json())
        self.samples.append(sample)
        with open(self.run_dir / INGEST_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(sample), separators=(",", ":")) + "\n")
        return None

    # -- errors --

    def _check_errors(self, live: LiveCounts, now: float) -> str | None:
        s = self.safety
        if not self._snapshots:
            self._snapshots.append((now - 1.0, 0, 0))
        self._snapshots.append((now, live.requests, live.errors))
        # Keep one snapshot at or before the window's start as the baseline.
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - s.window_s:
            self._snapshots.popleft()
        if s.max_error_rate is None:
            return None
        t0, r0, e0 = self._snapshots[0]
        requests, errors = live.requests - r0, live.errors - e0
        if requests >= s.min_requests and errors / requests > s.max_error_rate:
            return (
                f"safety: errors {errors / requests:.0%} of the last {now - t0:.0f} s's {requests} requests "
                f"> {s.max_error_rate:.0%}"
            )
        return None

    # -- live collection --

    def _read_new_records(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.run_dir / "ledger.jsonl", "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec

    def _check_collection(self, now: float) -> str | None:
        s = self.safety
        assert self._expect is not None
        tracer = self._expect.mode_context().tracer  # run.json's: where each sampled fact is read
        for rec in self._read_new_records():
            tid = ledger_trace_id(rec)
            ts = rec.get("ts")
            if tid and upstream_decision(rec, tracer) and isinstance(ts, int | float):
                self._pending.append((float(ts) + float(rec.get("latency_ms") or 0.0) / 1000.0, tid))
        if now - self._last_check < s.check_every_s:
            return None
        self._last_check = now
        assert self._settle_s is not None and self._expect is not None and self._backend is not None
        due_before = now - self._settle_s
        due = [p for p in self._pending if p[0] <= due_before]
        self._pending = [p for p in self._pending if p[0] > due_before]
        if len(due) > s.max_ids:
            step = len(due) / s.max_ids
            due = [due[int(i * step)] for i in range(s.max_ids)]
        if due:
            fetched = self._backend.fetch_many([tid for _, tid in due])
            for end, tid in due:
                got = fetched.get(normalize_trace_id(tid))
                obs = TraceObservation.from_fetched(got) if got is not None else None
                outcome = classify(True, obs, self._expect)
                if outcome is not Outcome.UNKNOWN:
                    self._results.append((end, outcome is Outcome.FOUND))
        while self._results and self._results[0][0] < due_before - s.window_s:
            self._results.popleft()
        n = len(self._results)
        k = sum(1 for _, found in self._results if found)
        self.checks.append({"t": now, "k": k, "n": n, "queried": len(due)})
        if s.min_collection is not None and n >= s.min_sampled and k / n < s.min_collection:
            return (
                f"safety: live collection {k}/{n} = {k / n:.0%} of the sampled traces whose requests ended "
                f"{self._settle_s:g}-{self._settle_s + s.window_s:g} s ago < {s.min_collection:.0%}"
            )
        return None

"""`loadgen probe`: learn the mesh before measuring it (plain I/O; the profile is loadgen.mesh.profile).

A short, bounded sequence of crafted requests through the gateway, all carrying the run id
`<run-id>-probe` (so they stay out of the ledger, every estimate and the run-tag search), then a
read-back of the traces they started:

    3 x  a client x-request-id marked forced (char 14 `a`), no trace headers
         -> header echo; the gateway replaces / keeps / honours a client x-request-id
    5 x  X-B3-TraceId/SpanId with X-B3-Sampled: 1      -> B3 continued; forced-sampled traces
    3 x  traceparent ...-01 only                        -> W3C continued
    5 x  x-envoy-force-trace: true                      -> honoured (char 14 `a` upstream)?
    8 x  x-client-trace-id: <uuid>                      -> forces? for what share?

Every trace the upstream saw sampled is read back until its span counts settle: their largest
(service, kind) counts are the shape of a complete trace, the first time each became whole is
the time to queryable, and the span tag holding the probe's run id is the run-id tag key.
At most 24 requests and `max_wait_s` (default 25 s) of read-back.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from loadgen.analysis.integrity import TraceShape
from loadgen.backends.base import BackendError, Fetched, FetchStatus, TraceBackend, redact_url
from loadgen.mesh.echo import parse_echo, same_request_id
from loadgen.mesh.headers import RUN_ID_HEADER, X_REQUEST_ID
from loadgen.mesh.ids import (
    forced_request_id,
    new_span_id,
    new_trace_id,
    normalize_trace_id,
    random_request_id,
)
from loadgen.mesh.profile import Forcing, MeshProfile, RequestIdHandling, SpanShape, with_given_tracer
from loadgen.mesh.rule import XRID_TRACE_REASON
from loadgen.mesh.tracer import TracerFamily, added_context_headers, detect_tracer

__all__ = ["ProbeError", "probe_mesh"]

Status = Callable[[str], None]

# Char 14 of the x-request-id the upstream sees: the trace reason Envoy packed for each header.
_FORCED_MARK = next(k for k, v in XRID_TRACE_REASON.items() if v == "forced")
_CLIENT_MARK = next(k for k, v in XRID_TRACE_REASON.items() if v == "client_forced")


class ProbeError(RuntimeError):
    """The probe cannot run at all (gateway unreachable, backend trace route untrustworthy)."""


@dataclass(frozen=True)
class _Sent:
    kind: str  # xrid | b3 | w3c | force | client
    sent_trace: str | None
    sent_xrid: str | None
    status: int
    echoed: bool
    up_trace: str | None
    up_xrid: str | None
    sampled: bool | None
    ended_at: float
    tracer: TracerFamily | None = None  # whose context the upstream saw (`detect_tracer`)
    added: tuple[str, ...] = ()  # the propagation headers Envoy added (`added_context_headers`)
    echo: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def read_as(self, tracer: TracerFamily) -> _Sent:
        """The upstream's view of this request read as `tracer` writes it (loadgen.mesh.tracer)."""
        if self.echo is None:
            return self
        view = parse_echo(self.echo, tracer)
        up_trace = normalize_trace_id(view.trace_id) if view.trace_id else None
        return replace(self, up_trace=up_trace, up_xrid=view.request_id, sampled=view.sampled)


def _mesh_tracer(sent: list[_Sent]) -> tuple[TracerFamily | None, tuple[str, ...]]:
    """The tracer family most echoes show (None: none tells), and the propagation headers Envoy
    added in those echoes (the evidence)."""
    seen = Counter(s.tracer for s in sent if s.tracer is not None)
    if not seen:
        return None, ()
    family = seen.most_common(1)[0][0]
    return family, tuple(sorted({h for s in sent if s.tracer is family for h in s.added}))


def _request(
    client: httpx.Client, url: str, host: str, run_id: str, kind: str, rng: random.Random
) -> _Sent | None:
    headers = {"Host": host, RUN_ID_HEADER: run_id}
    trace: str | None = None
    xrid: str | None = None
    if kind == "xrid":
        xrid = forced_request_id(rng)
        headers[X_REQUEST_ID] = xrid
    elif kind == "b3":
        trace = new_trace_id(rng)
        headers |= {"X-B3-TraceId": trace, "X-B3-SpanId": new_span_id(rng), "X-B3-Sampled": "1"}
    elif kind == "w3c":
        trace = new_trace_id(rng)
        headers["traceparent"] = f"00-{trace}-{new_span_id(rng)}-01"
    elif kind == "force":
        headers["x-envoy-force-trace"] = "true"
    elif kind == "client":
        headers["x-client-trace-id"] = random_request_id(rng)
    try:
        resp = client.get(url, headers=headers)
    except httpx.HTTPError:
        return None
    ended = time.time()
    echo: object = None
    try:
        body = resp.json()
        echo = body.get("headers") if isinstance(body, dict) else None
    except ValueError:
        echo = None
    if not isinstance(echo, dict) or resp.status_code != 200:
        return _Sent(kind, trace, xrid, resp.status_code, False, None, None, None, ended)
    # The echo is read (`read_as`) once the mesh's tracer is known, in `probe_mesh`.
    return _Sent(
        kind, trace, xrid, resp.status_code, True, None, None, None, ended,
        detect_tracer(headers, echo), added_context_headers(headers, echo), echo,
    )  # fmt: skip


PLAN: tuple[tuple[str, int], ...] = (("xrid", 3), ("b3", 5), ("w3c", 3), ("force", 5), ("client", 8))


def _request_id_handling(sent: list[_Sent]) -> RequestIdHandling | None:
    seen = [s for s in sent if s.kind == "xrid" and s.echoed and s.up_xrid and s.sent_xrid]
    if not seen:
        return None
    kept = [s for s in seen if same_request_id(s.sent_xrid, s.up_xrid)]
    if len(kept) * 2 < len(seen):
        return RequestIdHandling.REPLACED
    honoured = [s for s in kept if (s.up_xrid or "")[14:15].lower() == _FORCED_MARK and s.sampled]
    return RequestIdHandling.KEPT_HONOURED if len(honoured) * 2 > len(kept) else RequestIdHandling.KEPT_RESET


def _forcing(sent: list[_Sent], kind: str, mark: str) -> Forcing | None:
    seen = [s for s in sent if s.kind == kind and s.echoed]
    if not seen:
        return None
    return Forcing(
        sent=len(seen),
        traced=sum(1 for s in seen if s.sampled),
        marked=sum(1 for s in seen if (s.up_xrid or "")[14:15].lower() == mark),
    )


def _continued(sent: list[_Sent], kind: str) -> bool | None:
    seen = [s for s in sent if s.kind == kind and s.echoed and s.up_trace and s.sent_trace]
    if not seen:
        return None
    return sum(1 for s in seen if s.up_trace == normalize_trace_id(s.sent_trace or "")) * 2 > len(seen)


def _tag_key(fetched: Mapping[str, Fetched], run_id: str) -> str | None:
    keys: Counter[str] = Counter()
    for f in fetched.values():
        for span in f.spans:
            for key, value in (span.get("tags") or {}).items():
                if value == run_id:
                    keys[str(key)] += 1
    return keys.most_common(1)[0][0] if keys else None


def _read_back(
    backend: TraceBackend,
    wanted: dict[str, float],
    *,
    max_wait_s: float,
    settle_s: float,
    poll_s: float,
    status: Status,
) -> tuple[dict[str, Fetched], dict[str, float]]:
    """Poll the wanted trace ids (id -> request end) until every one is found and no span count
    has changed for `settle_s`, or `max_wait_s` passed. Returns the last answers and, per trace,
    when it first reached its final span count."""
    deadline = time.monotonic() + max_wait_s
    latest: dict[str, Fetched] = {}
    counts: dict[str, int] = {}
    whole_at: dict[str, float] = {}
    last_change = time.monotonic()
    while True:
        answers = backend.fetch_many(list(wanted))
        now_wall, now = time.time(), time.monotonic()
        for tid, f in answers.items():
            if f.status is FetchStatus.ERROR and tid in latest:
                continue  # keep what an earlier poll learned
            latest[tid] = f
            n = len(f.spans) if f.status is FetchStatus.FOUND else 0
            if n != counts.get(tid, 0):
                counts[tid] = n
                whole_at[tid] = now_wall
                last_change = now
        found = sum(1 for n in counts.values() if n)
        status(f"probe: {found} of {len(wanted)} sampled probe traces read back")
        if found == len(wanted) and now - last_change >= settle_s:
            break
        if now >= deadline:
            break
        time.sleep(poll_s)
    return latest, whole_at


def _send_all(
    client: httpx.Client | None, url: str, host: str, run_id: str, rng: random.Random
) -> tuple[list[_Sent], int]:
    """Every request of the PLAN, in order: (the answers, how many failed to connect)."""
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(5.0))
    sent: list[_Sent] = []
    failures = 0
    try:
        for kind, count in PLAN:
            for _ in range(count):
                answer = _request(http, url, host, run_id, kind, rng)
                if answer is None:
                    failures += 1
                else:
                    sent.append(answer)
    finally:
        if own:
            http.close()
    return sent, failures


def _answer_notes(sent: list[_Sent], failures: int, requests: int) -> list[str]:
    notes: list[str] = []
    if failures:
        notes.append(f"{failures} of {requests} probe requests failed to connect")
    codes = Counter(s.status for s in sent if s.status != 200)
    if codes:
        notes.append(
            "probe answers other than 200: " + ", ".join(f"{c} x{n}" for c, n in codes.most_common())
        )
    return notes


def _wanted(answered: list[_Sent], echo: bool | None) -> dict[str, float]:
    """The traces to read back (id -> request end): what the upstream saw sampled (with an echo),
    else the B3-forced ones by the id we sent (found or not, that is what the backend holds)."""
    if echo:
        return {s.up_trace: s.ended_at for s in answered if s.sampled and s.up_trace}
    return {normalize_trace_id(s.sent_trace): s.ended_at for s in answered if s.kind == "b3" and s.sent_trace}


def probe_mesh(
    gateway: str,
    host: str,
    backend: TraceBackend,
    run_id: str,
    *,
    path: str = "/headers",
    status: Status = lambda _m: None,
    max_wait_s: float = 25.0,
    settle_s: float = 2.0,
    poll_s: float = 0.5,
    seed: int | None = None,
    client: httpx.Client | None = None,
    tracer: TracerFamily | None = None,
) -> MeshProfile:
    """Send the probe, read it back, and return what was learned. `run_id` is the probe's own
    run id (`<run-id>-probe`). Raises ProbeError only when nothing can be learned at all.
    The tracer family is learned from which context headers Envoy added upstream (B3: zipkin,
    traceparent only: opentelemetry), and the echoes are read as it writes them. `tracer`
    (--tracer), when given, is kept as `tracer_given` for the run, with a warning note when the
    probe saw another; it reads the echoes only when none shows the tracer."""
    rng = random.Random(seed)
    try:
        backend.check_trace_route()
    except BackendError as exc:
        raise ProbeError(str(exc)) from exc
    url = gateway.rstrip("/") + path
    requests = sum(n for _k, n in PLAN)
    status(f"probe: {requests} crafted requests to {redact_url(url)} (run id {run_id})")
    sent, failures = _send_all(client, url, host, run_id, rng)
    learned, evidence = _mesh_tracer(sent)
    # The probe learns the mesh as it is: its echoes are read as the tracer they show. A given
    # tracer reads them only when none shows; it is kept for the run (`with_given_tracer`).
    mesh_tracer = learned or tracer
    sent = [s.read_as(mesh_tracer or TracerFamily.ZIPKIN) for s in sent]
    if not sent:
        raise ProbeError(f"gateway {redact_url(gateway)} did not answer any of {requests} probe requests")
    notes = _answer_notes(sent, failures, requests)
    answered = [s for s in sent if s.status == 200]
    echo = any(s.echoed for s in answered) if answered else None
    wanted = _wanted(answered, echo)
    fetched: dict[str, Fetched] = {}
    whole_at: dict[str, float] = {}
    if wanted:
        fetched, whole_at = _read_back(
            backend, wanted, max_wait_s=max_wait_s, settle_s=settle_s, poll_s=poll_s, status=status
        )
    found = {t: f for t, f in fetched.items() if f.status is FetchStatus.FOUND and f.spans}
    errors = [f.error for f in fetched.values() if f.status is FetchStatus.ERROR]
    if errors:
        notes.append(f"{len(errors)} probe trace lookups failed: {errors[0]}")
    shape = SpanShape.merge(SpanShape.from_counts(TraceShape.from_spans(f.spans).spans) for f in found.values()) if found else None  # fmt: skip
    ttq = max((whole_at[t] - wanted[t] for t in found if t in whole_at), default=None)
    profile = MeshProfile(
        probe_run_id=run_id,
        path=path,
        requests=requests,
        answered=len(answered),
        echo=echo,
        shape=shape,
        traces_sampled=len(wanted),
        traces_found=len(found),
        request_id=_request_id_handling(answered),
        b3=_continued(answered, "b3"),
        w3c=_continued(answered, "w3c"),
        tracer=learned,
        tracer_headers=evidence,
        force_trace=_forcing(answered, "force", _FORCED_MARK),
        client_trace_id=_forcing(answered, "client", _CLIENT_MARK),
        run_id_tag=_tag_key(found, run_id),
        reader=backend.name,
        not_found_form=True,  # check_trace_route passed: the backend answers a missing trace clearly
        time_to_queryable_s=None if ttq is None else max(0.0, round(ttq, 2)),
        notes=tuple(notes),
    )
    return with_given_tracer(profile, tracer)

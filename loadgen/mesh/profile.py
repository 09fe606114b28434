"""The mesh profile: what the probe learned about the mesh being measured (pure).

loadgen measures meshes it did not build, so nothing about a mesh's shape is assumed: the probe
(loadgen.probe) sends a few crafted requests, reads them back, and records here what the mesh
actually did. The profile, not a default, then sets the run's expectations:

- `shape`: the spans a complete sampled trace holds, as a multiset of (service, kind) pairs. For
  each pair the largest count seen in any probe trace (loss only removes spans, so the largest is
  the true shape). A trace is complete only when it holds every span of the shape.
- `echo`: whether the upstream echoes request headers (per-request decisions need it).
- `request_id`: what the gateway does with a client x-request-id.
- `force_trace`, `client_trace_id`: whether `x-envoy-force-trace` / `x-client-trace-id` force a
  trace, and for what share of requests.
- `b3`, `w3c`: whether a B3 / W3C `traceparent` trace id is continued.
- `tracer`: the tracer family whose context the upstream saw (`tracer_headers`: the propagation
  headers Envoy added); `tracer_given`: `--tracer`, which overrides it (`with_given_tracer`).
- `run_id_tag`: the span tag key that carries the run id, if any span carries it.
- `reader`, `not_found_form`: which reader answers, and whether its trace route answers an unknown
  id with the backend's own "not found".
- `time_to_queryable_s`: from a request's end until its whole trace is queryable.

A fact the probe could not learn is None, with a note saying why; the verdicts that depend on it
are then inconclusive (`expectation_gaps`), never judged against a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.tracer import TRACERS, TracerFamily

__all__ = [
    "PROFILE_FILE",
    "Forcing",
    "MeshProfile",
    "ProfileError",
    "RequestIdHandling",
    "SpanShape",
    "expectation_context",
    "expectation_gaps",
    "load_profile",
    "profile_facts",
    "suggested_quiet_s",
    "with_given_tracer",
]

PROFILE_FILE = "mesh-profile.json"
SCHEMA_VERSION = 1


class ProfileError(ValueError):
    """A profile file that cannot be used (unreadable, not JSON, wrong shape)."""


@dataclass(frozen=True)
class SpanShape:
    """A multiset of (service, kind) span pairs: `entries` is sorted (service, kind, count)."""

    entries: tuple[tuple[str, str, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(sorted(self.entries)))  # one canonical order

    @classmethod
    def from_counts(cls, counts: Mapping[str, Mapping[str, int]]) -> SpanShape:
        """From `TraceShape.spans` (service -> kind -> count)."""
        return cls(
            tuple(
                sorted(
                    (str(svc), str(kind), int(n))
                    for svc, kinds in counts.items()
                    for kind, n in kinds.items()
                    if n > 0
                )
            )
        )

    @classmethod
    def merge(cls, shapes: Iterable[SpanShape]) -> SpanShape:
        """For each (service, kind), the largest count seen in any of `shapes`."""
        best: dict[tuple[str, str], int] = {}
        for shape in shapes:
            for svc, kind, n in shape.entries:
                best[(svc, kind)] = max(best.get((svc, kind), 0), n)
        return cls(tuple(sorted((svc, kind, n) for (svc, kind), n in best.items())))

    @property
    def total(self) -> int:
        return sum(n for _s, _k, n in self.entries)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(svc for svc, _k, _n in self.entries))

    def covered_by(self, counts: Mapping[str, Mapping[str, int]]) -> bool:
        """The observed trace (service -> kind -> count) holds every span of this shape."""
        return all((counts.get(svc) or {}).get(kind, 0) >= n for svc, kind, n in self.entries)

    def describe(self) -> str:
        """e.g. `3 spans: istio-ingressgateway SERVER+CLIENT, httpbin SERVER`."""
        if not self.entries:
            return "0 spans"
        parts: dict[str, list[str]] = {}
        for svc, kind, n in self.entries:
            parts.setdefault(svc or "(no service)", []).append(kind if n == 1 else f"{n}×{kind}")
        spans = "span" if self.total == 1 else "spans"
        return f"{self.total} {spans}: " + ", ".join(f"{svc} {'+'.join(k)}" for svc, k in parts.items())

    def to_json(self) -> list[list[Any]]:
        return [[svc, kind, n] for svc, kind, n in self.entries]

    @classmethod
    def from_json(cls, data: Any) -> SpanShape:
        if not isinstance(data, list):
            raise ProfileError("shape must be a list of [service, kind, count]")
        entries = []
        for item in data:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], int) and item[2] >= 0):
                raise ProfileError(f"shape entry {item!r} is not [service, kind, count]")
            entries.append((str(item[0]), str(item[1]), int(item[2])))
        return cls(tuple(sorted(entries)))


class RequestIdHandling(StrEnum):
    """What the gateway does with a client's x-request-id (shared/ENVOY-NOTES.md, Edge behaviour)."""

    REPLACED = "replaced"  # an edge gateway: Envoy makes its own id and decides on it
    KEPT_RESET = "kept_reset"  # kept (preserve_external_request_id) but its trace mark reset
    KEPT_HONOURED = "kept_honoured"  # kept with its trace mark honoured (not an edge)


@dataclass(frozen=True)
class Forcing:
    """What one forcing header did: requests sent, traced (upstream saw sampled), and marked
    (Envoy wrote that header's trace reason into the x-request-id)."""

    sent: int
    traced: int
    marked: int

    @property
    def honoured(self) -> bool | None:
        """Envoy recognised the header (None: nothing sent or nothing observable)."""
        return None if self.sent == 0 else self.marked > 0

    @property
    def fraction(self) -> float | None:
        return None if self.sent == 0 else self.traced / self.sent


@dataclass(frozen=True)
class MeshProfile:
    probe_run_id: str
    path: str
    requests: int = 0
    answered: int = 0
    echo: bool | None = None
    shape: SpanShape | None = None
    traces_sampled: int = 0  # probe traces the upstream saw sampled (read back for the shape)
    traces_found: int = 0
    request_id: RequestIdHandling | None = None
    b3: bool | None = None
    w3c: bool | None = None
    tracer: TracerFamily | None = None  # the tracer family whose context the upstream saw
    tracer_headers: tuple[str, ...] = ()  # the propagation headers Envoy added upstream (evidence)
    tracer_given: TracerFamily | None = None  # --tracer: overrides `tracer` (with_given_tracer)
    force_trace: Forcing | None = None
    client_trace_id: Forcing | None = None
    run_id_tag: str | None = None
    reader: str | None = None
    not_found_form: bool | None = None
    time_to_queryable_s: float | None = None
    source: str = "probe"  # probe | file | flags (--no-probe)
    notes: tuple[str, ...] = ()

    def with_notes(self, *notes: str) -> MeshProfile:
        return replace(self, notes=(*self.notes, *notes))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema_version"] = SCHEMA_VERSION
        d["shape"] = self.shape.to_json() if self.shape is not None else None
        d["shape_text"] = self.shape.describe() if self.shape is not None else None
        d["request_id"] = self.request_id.value if self.request_id else None
        d["notes"] = list(self.notes)
        d["tracer_headers"] = list(self.tracer_headers)
        d["facts"] = [
            {"name": f.name, "value": f.value, "learned": f.learned, "evidence": f.evidence}
            for f in profile_facts(self)
        ]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeshProfile:
        try:

            def forcing(v: Any) -> Forcing | None:
                return None if v is None else Forcing(int(v["sent"]), int(v["traced"]), int(v["marked"]))

            def opt_bool(v: Any) -> bool | None:
                if v is not None and not isinstance(v, bool):
                    raise ProfileError(f"expected true, false or null, got {v!r}")
                return v

            ttq = d.get("time_to_queryable_s")
            if ttq is not None and not (isinstance(ttq, int | float) and math.isfinite(ttq) and ttq >= 0):
                raise ProfileError(f"time_to_queryable_s must be a number >= 0, got {ttq!r}")
            return cls(
                probe_run_id=str(d.get("probe_run_id", "")),
                path=str(d.get("path", "/headers")),
                requests=int(d.get("requests", 0)),
                answered=int(d.get("answered", 0)),
                echo=opt_bool(d.get("echo")),
                shape=SpanShape.from_json(d["shape"]) if d.get("shape") is not None else None,
                traces_sampled=int(d.get("traces_sampled", 0)),
                traces_found=int(d.get("traces_found", 0)),
                request_id=RequestIdHandling(d["request_id"]) if d.get("request_id") else None,
                b3=opt_bool(d.get("b3")),
                w3c=opt_bool(d.get("w3c")),
                tracer=TracerFamily(d["tracer"]) if d.get("tracer") else None,
                tracer_headers=tuple(str(h) for h in d.get("tracer_headers") or ()),
                tracer_given=TracerFamily(d["tracer_given"]) if d.get("tracer_given") else None,
                force_trace=forcing(d.get("force_trace")),
                client_trace_id=forcing(d.get("client_trace_id")),
                run_id_tag=str(d["run_id_tag"]) if d.get("run_id_tag") else None,
                reader=str(d["reader"]) if d.get("reader") else None,
                not_found_form=opt_bool(d.get("not_found_form")),
                time_to_queryable_s=float(ttq) if ttq is not None else None,
                source=str(d.get("source", "file")),
                notes=tuple(str(n) for n in d.get("notes", ())),
            )
        except ProfileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"not a loadgen mesh profile ({type(exc).__name__}: {exc})") from exc


def load_profile(path: Path) -> MeshProfile:
    """Read a saved mesh-profile.json (`--profile FILE`); ProfileError says what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from exc
    if len(raw) > 1_000_000:
        raise ProfileError(f"profile {path} is {len(raw)} bytes; a mesh profile is a few KB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProfileError(f"profile {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} is not a JSON object")
    profile = MeshProfile.from_dict(data)
    return replace(profile, source="file")


@dataclass(frozen=True)
class Fact:
    """One line of "what loadgen learned about this mesh"."""

    name: str
    value: str
    learned: bool
    evidence: str


def _vetoed(f: Forcing | None, *, veto_resets_mark: bool) -> bool:
    """overall_sampling below 100 shows on a forcing header: Envoy's mark without a trace (the
    veto leaves `b` in place), or, for x-envoy-force-trace, whose `a` the veto resets, a mark on
    only some requests (measured: docs/header-modes.md, "overall_sampling")."""
    if f is None or f.sent == 0:
        return False
    return f.traced < f.marked or (veto_resets_mark and 0 < f.marked < f.sent)


def _forcing_text(f: Forcing | None, header: str, *, veto_resets_mark: bool) -> tuple[str, bool, str]:
    if f is None or f.sent == 0:
        return "unknown", False, f"no {header} request was answered with a header echo"
    marked = f"Envoy decided to trace {f.marked} of {f.sent} requests for {header}, {f.traced} were traced"
    if f.marked == 0:
        return "ignored", True, marked
    if _vetoed(f, veto_resets_mark=veto_resets_mark):
        return f"forces {f.traced} of {f.sent}", True, marked + ": overall_sampling is below 100"
    if f.marked == f.sent:
        return "forces a trace", True, marked
    return f"forces {f.marked} of {f.sent}", True, marked + ": client_sampling is below 100"


def _tracer_text(p: MeshProfile) -> tuple[str, bool, str]:
    """The tracer fact: learned when the probe saw it (and a given --tracer agrees), else given."""
    seen = (
        f"the probe saw {p.tracer.value} (Envoy added {', '.join(p.tracer_headers) or 'its headers'} upstream)"
        if p.tracer is not None
        else "no probe echo showed the propagation headers Envoy adds"
    )
    if p.tracer_given is None:
        if p.tracer is None:
            return "unknown", False, seen + "; give --tracer to say which"
        return p.tracer.value, True, seen
    if p.tracer_given is p.tracer:
        return p.tracer_given.value, True, seen + "; --tracer agrees"
    return p.tracer_given.value, False, f"given by --tracer; {seen}"


def profile_facts(p: MeshProfile) -> list[Fact]:
    """The profile as display lines (terminal, report.md, report.html)."""
    facts: list[Fact] = []
    if p.shape is not None:
        facts.append(
            Fact(
                "trace shape",
                p.shape.describe(),
                True,
                f"{p.traces_found} of {p.traces_sampled} sampled probe traces read back",
            )
        )
    else:
        facts.append(Fact("trace shape", "unknown", False, _shape_gap(p)))
    facts.append(
        Fact(
            "header echo",
            {True: "yes", False: "no", None: "unknown"}[p.echo],
            p.echo is not None,
            "the upstream's answer lists the request headers"
            if p.echo
            else "the upstream's answer does not list request headers"
            if p.echo is False
            else "no probe request was answered",
        )
    )
    rid = {
        RequestIdHandling.REPLACED: ("replaced", "the gateway makes its own x-request-id (an edge gateway)"),
        RequestIdHandling.KEPT_RESET: (
            "kept, trace mark reset",
            "the client's x-request-id reaches the upstream; its char 14 is rewritten",
        ),
        RequestIdHandling.KEPT_HONOURED: (
            "kept, trace mark honoured",
            "the client's x-request-id and its forced mark reach the upstream (not an edge)",
        ),
    }
    if p.request_id is not None:
        facts.append(Fact("client x-request-id", rid[p.request_id][0], True, rid[p.request_id][1]))
    else:
        facts.append(Fact("client x-request-id", "unknown", False, "needs a header echo"))
    facts.append(Fact("tracer", *_tracer_text(p)))
    facts.append(
        Fact(
            "x-envoy-force-trace", *_forcing_text(p.force_trace, "x-envoy-force-trace", veto_resets_mark=True)
        )
    )
    facts.append(
        Fact(
            "x-client-trace-id",
            *_forcing_text(p.client_trace_id, "x-client-trace-id", veto_resets_mark=False),
        )
    )
    for name, v in (("B3 trace id", p.b3), ("W3C traceparent", p.w3c)):
        facts.append(
            Fact(name, {True: "continued", False: "not continued", None: "unknown"}[v], v is not None,
                 "the upstream saw the trace id the probe sent" if v else "the upstream saw another trace id" if v is False else "needs a header echo")
        )  # fmt: skip
    facts.append(
        Fact("run-id tag", p.run_id_tag or "absent", p.run_id_tag is not None or p.traces_found > 0,
             "a span tag holds the probe's run id" if p.run_id_tag else "no span of a found probe trace carries the run id" if p.traces_found else "no probe trace was read back")
    )  # fmt: skip
    facts.append(
        Fact("reader", p.reader or "unknown", p.reader is not None,
             "its trace route answers an unknown id with the backend's own not-found" if p.not_found_form else "the trace route's not-found answer was not checked" if p.not_found_form is None else "the trace route does not answer the backend's own not-found")
    )  # fmt: skip
    ttq = p.time_to_queryable_s
    facts.append(
        Fact("time to queryable", "unknown" if ttq is None else f"{ttq:.1f} s", ttq is not None,
             "from a probe request's end until its whole trace was read back" if ttq is not None else "no sampled probe trace was read back")
    )  # fmt: skip
    return facts


def _shape_gap(p: MeshProfile) -> str:
    if p.source == "flags":
        return "the probe was skipped (--no-probe) and no --expected-spans was given"
    if p.answered == 0:
        return "no probe request was answered"
    if p.traces_sampled == 0:
        return "the upstream saw no probe request sampled"
    return f"none of {p.traces_sampled} sampled probe traces came back from the backend in time"


def expectation_context(
    p: MeshProfile, sampling_percent: float | None, base: ExpectationContext | None = None
) -> ExpectationContext:
    """The header-mode expectations for the probed mesh. Facts the probe could not learn keep
    `base`'s value (a user's declaration; Istio's ingress gateway when none); the caller marks
    the header-modes verdict inconclusive when they matter (`expectation_gaps`)."""
    ctx = base or ExpectationContext()
    ctx = replace(ctx, sampling_percent=sampling_percent)
    if p.request_id is RequestIdHandling.REPLACED:
        ctx = replace(ctx, use_remote_address=True, preserve_external_request_id=False)
    elif p.request_id is RequestIdHandling.KEPT_RESET:
        ctx = replace(ctx, use_remote_address=True, preserve_external_request_id=True)
    elif p.request_id is RequestIdHandling.KEPT_HONOURED:
        ctx = replace(ctx, use_remote_address=False)
    if p.force_trace is not None and p.force_trace.honoured is not None:
        ctx = replace(
            ctx, client_internal=p.force_trace.honoured or (p.request_id is RequestIdHandling.KEPT_HONOURED)
        )
    if p.w3c is not None:
        ctx = replace(ctx, w3c=p.w3c)
    tracer = p.tracer_given or p.tracer  # --tracer overrides what the probe saw
    if tracer is not None:
        ctx = replace(ctx, tracer=tracer)
    # Envoy marks char 14 of the x-request-id with the reason it traced: `b` for
    # x-client-trace-id. Honoured for only some requests, it is a coin the client cannot see
    # (client_sampling, or overall_sampling, strictly between 0 and 100): those modes are then
    # unpredictable. overall_sampling itself is never estimated from the probe's few requests:
    # an estimate would make exact x-request-id predictions wrong. If it is below 100, the
    # sampling verdict finds decisions that disagree with the configured percentage, which is
    # the truth about such a gateway.
    ct = p.client_trace_id
    if ct is not None and ct.sent:
        ctx = replace(ctx, client_sampling_percent=100.0 * ct.marked / ct.sent)
    return ctx


def with_given_tracer(p: MeshProfile, given: TracerFamily | None) -> MeshProfile:
    """`--tracer` over what the probe (or a saved profile) learned: the given tracer decides
    where each request's sampled fact is read; a warning note when the probe saw another."""
    if given is None:
        return p
    out = replace(p, tracer_given=given)
    if p.tracer is None or p.tracer is given:
        return out
    added = ", ".join(p.tracer_headers) or "its propagation headers"
    note = (
        f"warning: --tracer {given.value} overrides the probe, which saw the {p.tracer.value} tracer "
        f"(Envoy added {added} upstream); each request's sampled fact is read where {given.value} "
        f"writes it ({TRACERS[given].decision_header}); if the mesh runs {p.tracer.value}, drop --tracer"
    )
    return out if note in p.notes else out.with_notes(note)


def expectation_gaps(p: MeshProfile) -> dict[str, str]:
    """Verdicts that cannot be judged because the probe could not learn a fact they need:
    {verdict name: reason naming the fact}."""
    gaps: dict[str, str] = {}
    if p.echo is False or p.echo is None:
        why = (
            "the upstream does not echo request headers, so per-request sampling decisions are unknown"
            if p.echo is False
            else "no probe request was answered, so whether the upstream echoes headers is unknown"
        )
        for name in ("sampling", "sampling_prediction", "mesh_collection", "no_leaks", "header_modes"):
            gaps[name] = why
    if p.shape is None:
        why = f"the trace shape is unknown: {_shape_gap(p)}"
        gaps.setdefault("mesh_collection", why)
        gaps.setdefault("propagation_integrity", why)
    if p.request_id is None and "header_modes" not in gaps:
        gaps["header_modes"] = "what the gateway does with a client x-request-id is unknown"
    return gaps


def suggested_quiet_s(p: MeshProfile) -> float | None:
    """Read-back's quiet period from the measured time to queryable: the slowest probe trace,
    rounded up to half a second, plus one second of margin. None when it was not measured."""
    if p.time_to_queryable_s is None:
        return None
    return math.ceil(p.time_to_queryable_s * 2.0) / 2.0 + 1.0


def flags_profile(path: str, expected_spans: int | None) -> MeshProfile:
    """`--no-probe`: only what flags declare. A declared span count has no services or kinds, so
    its shape is one pseudo pair ("*", "*", n) that `shape_covered` checks by total."""
    shape = SpanShape((("*", "*", expected_spans),)) if expected_spans else None
    return MeshProfile(
        probe_run_id="",
        path=path,
        source="flags",
        shape=shape,
        notes=("the probe was skipped (--no-probe): facts come from flags only",),
    )


def resolved_shape(p: MeshProfile, expected_spans: int | None) -> tuple[SpanShape | None, list[str]]:
    """The shape a run judges completeness by: the probed one, unless `--expected-spans` overrides
    it (a warning when they disagree). Returns (shape, notes)."""
    if not expected_spans:
        return p.shape, []
    declared = SpanShape((("*", "*", expected_spans),))
    if p.shape is None or p.shape.total == expected_spans or p.source == "flags":
        return (declared if p.shape is None or p.source == "flags" else p.shape), []
    return declared, [
        f"warning: --expected-spans {expected_spans} disagrees with the probe, which read back "
        f"{p.shape.describe()}; judging completeness by the flag"
    ]


_DECLARED = (
    ("use_remote_address", "--gateway-use-remote-address/--no-gateway-use-remote-address"),
    ("preserve_external_request_id", "--gateway-preserve-request-id"),
    ("client_internal", "--gateway-internal-cidr"),
    ("w3c", "--trace-context"),
    ("client_sampling_percent", "--client-sampling"),
)


def declaration_warnings(declared: ExpectationContext, learned: ExpectationContext) -> list[str]:
    """Warnings for gateway flags (an existing mesh's declarations) that the probe contradicts;
    the probe's facts are used."""
    out = []
    for attr, flag in _DECLARED:
        a, b = getattr(declared, attr), getattr(learned, attr)
        if a != b:
            out.append(f"warning: {flag} declares {attr}={a}, but the probe found {b}; using the probe's")
    return out


def profile_line(p: MeshProfile) -> str:
    """One terminal line: the facts that set the expectations."""
    if p.source == "flags":
        return "probe skipped (--no-probe)" + (
            f"; {p.shape.total} spans per trace declared" if p.shape else ""
        )
    shape = p.shape.describe() if p.shape is not None else "trace shape unknown"
    echo = "echo" if p.echo else "no echo"
    rid = f"x-request-id {p.request_id.value}" if p.request_id else "x-request-id unknown"
    ttq = (
        f"queryable in {p.time_to_queryable_s:.1f} s"
        if p.time_to_queryable_s is not None
        else "time to queryable unknown"
    )
    return f"{shape}; {echo}; {rid}; {ttq}"


RUN_ID_TAG_ADVICE = (
    "add the run-id custom tag so the run-tag search and leak attribution work: Istio Telemetry "
    "`tracing: [{customTags: {loadgen.run_id: {header: {name: x-loadgen-run-id}}}}]`"
)


def profile_advice(p: MeshProfile) -> list[str]:
    """What to change, in loadgen flags or Istio settings, for each fact that limits a run."""
    out: list[str] = []
    if p.echo is False:
        out.append(
            "the upstream does not echo request headers: route the Host to an httpbin-like /headers "
            "(or pass --path to one); without it sampling, collection and leaks are inconclusive"
        )
    if p.shape is None and p.source != "flags":
        out.append(
            "no sampled probe trace came back: check the mesh -> collector path (`loadgen doctor "
            "--collector URL`), the backend's base path and tenant, or give --expected-spans N"
        )
    if p.run_id_tag is None and p.traces_found:
        out.append(RUN_ID_TAG_ADVICE)
    if p.request_id in (RequestIdHandling.KEPT_RESET, RequestIdHandling.KEPT_HONOURED):
        out.append(
            "the gateway keeps client x-request-ids (not an edge, or preserve_external_request_id): "
            "loadgen uses this automatically; add xrid_crafted to --mix to know each decision before sending"
        )
    ft = p.force_trace
    if ft is not None and ft.marked == 0:
        out.append(
            "x-envoy-force-trace is stripped (the client is external): force_* modes are decided by "
            "random sampling; to honour it, add the client's CIDR to the gateway's internal_address_config"
        )
    ct = p.client_trace_id
    if _vetoed(ft, veto_resets_mark=True) or _vetoed(ct, veto_resets_mark=False):
        out.append(
            "forcing headers were traced for only some probe requests Envoy decided to force: an "
            "EnvoyFilter sets tracing.overall_sampling below 100 (Istio sets 100), which vetoes forced "
            "and random decisions alike"
        )
    elif ct is not None and 0 < ct.marked < ct.sent:
        out.append(
            f"x-client-trace-id forced only {ct.marked} of {ct.sent} probe requests: tracing.client_sampling "
            "is below 100 (Istio sets 100)"
        )
    return out


def shape_covered(shape: SpanShape, counts: Mapping[str, Mapping[str, int]]) -> bool:
    """`covered_by`, with the `--expected-spans` pseudo pair ("*", "*", n) checked by total."""
    if shape.entries and all(svc == "*" and kind == "*" for svc, kind, _n in shape.entries):
        return sum(sum(kinds.values()) for kinds in counts.values()) >= shape.total
    return shape.covered_by(counts)

"""Which propagation headers the mesh honours, and which modes of the header mix mean nothing on
it (pure).

`mesh.tracer` names the tracer family (from `--tracer`, else what the gateway showed, else the
bootstrap, else the Istio YAML) and the headers it reads (loadgen.mesh.tracer.TRACERS).
`mesh.header_mix` warns about modes whose trace context the tracer ignores: B3 under the
OpenTelemetry tracer (forwarded untouched, measured on Envoy 1.40), `traceparent` under the
Zipkin tracer without `USE_B3_WITH_W3C_PROPAGATION`. Such a mode measures the same thing as the
headers it has left (often `none`), so its name promises a question the run cannot answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loadgen.doctor.bootstrap import compact_headers
from loadgen.doctor.model import Check, CheckStatus, skipped
from loadgen.mesh.expect import TRACER_RULES
from loadgen.mesh.modes import MODE_SPECS, HeaderMode, format_mix
from loadgen.mesh.sends import Sends
from loadgen.mesh.tracer import TRACERS, TracerFamily, propagation_headers

__all__ = ["ModeReach", "TracerFact", "check_header_mix", "check_mesh_tracer", "mode_reach", "tracer_facts"]

#: Where a fact came from, most trusted first: the user's word, then what the gateway did, then
#: configuration (a dump may be of another proxy; YAML may not be what istiod applied).
_SOURCE_ORDER = ("--tracer", "gateway", "bootstrap", "Istio YAML")
W3C_FIX = (
    "or let the Zipkin tracer read traceparent: Istio's zipkin provider traceContextOption: "
    "USE_B3_WITH_W3C_PROPAGATION (Envoy ZipkinConfig.trace_context_option)"
)


@dataclass(frozen=True)
class TracerFact:
    """One source's word on the mesh's tracer. `w3c`: whether a Zipkin tracer reads traceparent
    (None: that source does not say)."""

    family: TracerFamily
    w3c: bool | None
    source: str  # one of _SOURCE_ORDER
    where: str = ""


def tracer_facts(checks: Sequence[Check], declared: TracerFamily | None = None) -> list[TracerFact]:
    """The tracer facts in the checks' data (`family`, `w3c`), the declared one first."""
    facts = [TracerFact(declared, None, "--tracer")] if declared is not None else []
    for check in checks:
        family = check.data.get("family")
        if check.status is CheckStatus.SKIP or not isinstance(family, str):
            continue
        source = (
            "gateway"
            if check.name.startswith("gateway")
            else "bootstrap"
            if check.name.startswith("bootstrap")
            else "Istio YAML"
        )
        w3c = check.data.get("w3c")
        facts.append(
            TracerFact(TracerFamily(family), w3c if isinstance(w3c, bool) else None, source, check.name)
        )
    return sorted(facts, key=lambda f: _SOURCE_ORDER.index(f.source))


def _describe(family: TracerFamily, w3c: bool) -> tuple[str, str]:
    honoured, ignored = propagation_headers(family, w3c)
    return compact_headers(honoured), compact_headers(ignored)


def check_mesh_tracer(facts: Sequence[TracerFact]) -> Check:
    """`mesh.tracer`: the family the run should assume, and the headers it honours."""
    if not facts:
        return skipped(
            "mesh.tracer", "no tracer known: give --tracer, --gateway, --bootstrap or --istio-config"
        )
    chosen = facts[0]
    w3c = next((f.w3c for f in facts if f.family is chosen.family and f.w3c is not None), None)
    honoured, ignored = _describe(chosen.family, bool(w3c))
    details = [
        f"honours: {honoured}",
        f"ignores (forwarded untouched): {ignored}",
        f"each request's sampled fact: {TRACERS[chosen.family].decision_header}",
    ]
    if chosen.family is TracerFamily.ZIPKIN and w3c is None:
        details.append("whether it reads traceparent (USE_B3_WITH_W3C_PROPAGATION) is unknown: assumed not")
    others = sorted({f"{f.family.value} ({f.source})" for f in facts if f.family is not chosen.family})
    data = {"family": chosen.family.value, "w3c": bool(w3c), "source": chosen.source}
    if others:
        return Check(
            "mesh.tracer",
            CheckStatus.WARN,
            f"{chosen.family.value} (from {chosen.source}), but other sources say {', '.join(others)}",
            "check which proxies the dump and YAML describe; the run follows --tracer, else what the probe sees",
            tuple(details),
            data,
        )
    sources = ", ".join(dict.fromkeys(f.source for f in facts))
    return Check(
        "mesh.tracer",
        CheckStatus.PASS,
        f"{chosen.family.value} tracer ({TRACERS[chosen.family].envoy_name}), from {sources}",
        details=tuple(details),
        data=data,
    )


@dataclass(frozen=True)
class ModeReach:
    """What of a mode's request the tracer reads: trace context parts honoured and ignored, and
    whether the mode carries anything else Envoy acts on (forcing headers, an x-request-id)."""

    honoured: tuple[str, ...]
    ignored: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def meaningless(self) -> bool:
        """Nothing of the mode's trace context is read, and it carries nothing else."""
        return bool(self.ignored) and not self.honoured and not self.other


def _other_parts(sends: Sends) -> tuple[str, ...]:
    parts = (
        ("x-envoy-force-trace", sends.force_trace),
        ("x-client-trace-id", sends.client_trace_id),
        ("x-request-id", sends.xrid is not None),
    )
    return tuple(name for name, sent in parts if sent)


def mode_reach(mode: HeaderMode, family: TracerFamily, w3c: bool) -> ModeReach:
    sends = MODE_SPECS[mode].sends
    rules = TRACER_RULES[family]
    honoured: list[str] = []
    ignored: list[str] = []
    if sends.b3 is not None:
        (honoured if rules.reads_b3 else ignored).append("B3")
    if sends.w3c is not None:
        (honoured if rules.w3c_always or w3c else ignored).append("traceparent")
    return ModeReach(tuple(honoured), tuple(ignored), _other_parts(sends))


def _counterpart(mode: HeaderMode, family: TracerFamily) -> HeaderMode:
    """The mode that asks the same question in headers the tracer reads (same sampled flag)."""
    sends = MODE_SPECS[mode].sends
    if family is TracerFamily.OPENTELEMETRY:
        if sends.b3_invalid_trace:
            return HeaderMode.W3C_INVALID_TRACE
        flag = sends.b3_flag
        return {
            "1": HeaderMode.W3C_SAMPLED,
            "d": HeaderMode.W3C_SAMPLED,
            "0": HeaderMode.W3C_NOT_SAMPLED,
        }.get(flag or "", HeaderMode.NONE)
    if sends.w3c_invalid:
        return HeaderMode.B3_MULTI_INVALID_TRACE
    return HeaderMode.B3_MULTI_SAMPLED if sends.w3c == "01" else HeaderMode.B3_MULTI_NOT_SAMPLED


def suggested_mix(
    mix: Mapping[HeaderMode, float], family: TracerFamily, w3c: bool
) -> dict[HeaderMode, float]:
    """The mix with every meaningless mode replaced by its counterpart (weights merged)."""
    out: dict[HeaderMode, float] = {}
    for mode, weight in mix.items():
        target = _counterpart(mode, family) if mode_reach(mode, family, w3c).meaningless else mode
        out[target] = out.get(target, 0.0) + weight
    return out


def check_header_mix(mix: Mapping[HeaderMode, float], tracer: Check) -> Check:
    """`mesh.header_mix`: modes of `mix` whose trace context the tracer of `tracer` (the
    `mesh.tracer` check) ignores."""
    family_name = tracer.data.get("family")
    if tracer.status is CheckStatus.SKIP or not isinstance(family_name, str):
        return skipped("mesh.header_mix", "the mesh's tracer is unknown (see mesh.tracer)")
    family, w3c = TracerFamily(family_name), bool(tracer.data.get("w3c"))
    used = {m: w for m, w in mix.items() if w > 0}
    reach = {m: mode_reach(m, family, w3c) for m in used}
    dead = [m for m, r in reach.items() if r.meaningless]
    partial = [m for m, r in reach.items() if r.ignored and not r.meaningless]
    total = sum(used.values()) or 1.0
    tracer_name = f"the {family.value} tracer" + (
        " (USE_B3)" if family is TracerFamily.ZIPKIN and not w3c else ""
    )
    if not dead and not partial:
        return Check(
            "mesh.header_mix",
            CheckStatus.PASS,
            f"every mode of the mix sends headers {tracer_name} reads ({len(used)} modes)",
            data={"ignored": [], "partly_ignored": []},
        )
    details = [
        f"{m.value}: its {' and '.join(reach[m].ignored)} is ignored, so it behaves as "
        f"{_counterpart_words(m, reach[m], family)}"
        for m in dead + partial
    ]
    if family is TracerFamily.OPENTELEMETRY:
        details.append("under the OpenTelemetry tracer traceparent 00 vetoes a trace, 01 forces none")
    weight = sum(used[m] for m in dead + partial)
    fix = f"--mix {format_mix(suggested_mix(used, family, w3c))}" if dead else "drop or replace those modes"
    if family is TracerFamily.ZIPKIN and not w3c:
        fix += f"; {W3C_FIX}"
    return Check(
        "mesh.header_mix",
        CheckStatus.WARN,
        f"{len(dead) + len(partial)} of {len(used)} modes ({100 * weight / total:.0f} % of the weight) send "
        f"headers {tracer_name} ignores: {', '.join(m.value for m in dead + partial)}",
        fix,
        tuple(details),
        {"ignored": [m.value for m in dead], "partly_ignored": [m.value for m in partial]},
    )


def _counterpart_words(mode: HeaderMode, reach: ModeReach, family: TracerFamily) -> str:
    if reach.meaningless:
        return "none (no trace headers)"
    left = reach.honoured + reach.other
    return f"a request with only its {', '.join(left)}"

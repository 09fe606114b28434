"""The mesh profile (loadgen.mesh.profile): shapes, the expectations it sets, and the gaps it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.analysis.integrity import TraceShape
from loadgen.analysis.reconcile import Expectation, Outcome, TraceObservation, classify
from loadgen.backends.base import FetchStatus
from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.profile import (
    Forcing,
    MeshProfile,
    ProfileError,
    RequestIdHandling,
    SpanShape,
    declaration_warnings,
    expectation_context,
    expectation_gaps,
    load_profile,
    profile_advice,
    resolved_shape,
    suggested_quiet_s,
)

GW, SC = "istio-ingressgateway", "httpbin"


def _span(service: str, kind: str, sid: str) -> dict[str, object]:
    return {"traceId": "a" * 32, "id": sid, "kind": kind, "localEndpoint": {"serviceName": service}}


def _obs(*pairs: tuple[str, str]) -> TraceObservation:
    spans = [_span(svc, kind, f"{i + 1:016x}") for i, (svc, kind) in enumerate(pairs)]
    return TraceObservation(
        FetchStatus.FOUND,
        len(spans),
        tuple(sorted({svc for svc, _k in pairs})),
        shape=TraceShape.from_spans(spans),
    )


FOUR = SpanShape(((GW, "CLIENT", 1), (GW, "SERVER", 1), (SC, "CLIENT", 1), (SC, "SERVER", 1)))


def test_merge_keeps_the_largest_count_of_each_pair() -> None:
    a = SpanShape(((GW, "SERVER", 1), (SC, "SERVER", 1)))
    b = SpanShape(((GW, "CLIENT", 1), (GW, "SERVER", 1)))
    c = SpanShape(((SC, "SERVER", 2),))
    merged = SpanShape.merge([a, b, c])
    assert set(merged.entries) == {(GW, "CLIENT", 1), (GW, "SERVER", 1), (SC, "SERVER", 2)}
    assert merged.total == 4
    assert set(merged.services) == {GW, SC}


def test_complete_needs_every_span_of_the_shape_not_just_the_count() -> None:
    expect = Expectation(FOUR.total, FOUR.services, 100.0, shape=FOUR)
    whole = _obs((GW, "SERVER"), (GW, "CLIENT"), (SC, "SERVER"), (SC, "CLIENT"))
    # Four spans, but two gateway SERVER spans and no sidecar CLIENT: partial, not found.
    lookalike = _obs((GW, "SERVER"), (GW, "SERVER"), (GW, "CLIENT"), (SC, "SERVER"))
    three = _obs((GW, "SERVER"), (GW, "CLIENT"), (SC, "SERVER"))
    assert classify(True, whole, expect) is Outcome.FOUND
    assert classify(True, lookalike, expect) is Outcome.PARTIAL
    assert classify(True, three, expect) is Outcome.PARTIAL


def test_a_three_span_default_would_have_called_a_partial_four_span_trace_complete() -> None:
    """Issue 9, case 9: "at least 3 spans" over-reports on a 4-span mesh; the shape does not."""
    three = _obs((GW, "SERVER"), (GW, "CLIENT"), (SC, "SERVER"))
    old = Expectation(3, (GW, SC), 100.0)
    assert classify(True, three, old) is Outcome.FOUND
    assert classify(True, three, Expectation(4, (GW, SC), 100.0, shape=FOUR)) is Outcome.PARTIAL


def test_one_span_mesh_traces_are_complete_with_one_span() -> None:
    """Issue 9, case 1: a gateway without upstream span or sidecar leaves one span."""
    one = SpanShape(((GW, "SERVER", 1),))
    assert classify(True, _obs((GW, "SERVER")), Expectation(1, (GW,), 100.0, shape=one)) is Outcome.FOUND


def test_declared_span_count_is_judged_by_total() -> None:
    shape, notes = resolved_shape(MeshProfile("p", "/headers", source="flags"), 2)
    assert shape is not None and shape.total == 2 and notes == []
    assert (
        classify(True, _obs((GW, "SERVER"), (GW, "CLIENT")), Expectation(2, (), None, shape=shape))
        is Outcome.FOUND
    )
    assert classify(True, _obs((GW, "SERVER")), Expectation(2, (), None, shape=shape)) is Outcome.PARTIAL


def test_a_flag_that_disagrees_with_the_probe_wins_with_a_warning() -> None:
    probed = MeshProfile("p", "/headers", shape=FOUR)
    shape, notes = resolved_shape(probed, 3)
    assert shape is not None and shape.total == 3
    assert len(notes) == 1 and "disagrees" in notes[0] and "4 spans" in notes[0]
    same, quiet = resolved_shape(probed, 4)
    assert same == FOUR and quiet == []
    assert resolved_shape(probed, None) == (FOUR, [])


@pytest.mark.parametrize(
    ("handling", "edge", "preserve"),
    [
        (RequestIdHandling.REPLACED, True, False),
        (RequestIdHandling.KEPT_RESET, True, True),
        (RequestIdHandling.KEPT_HONOURED, False, False),
    ],
)
def test_request_id_handling_sets_the_gateway_context(
    handling: RequestIdHandling, edge: bool, preserve: bool
) -> None:
    ctx = expectation_context(MeshProfile("p", "/", request_id=handling), 10.0)
    assert ctx.use_remote_address is edge
    assert ctx.preserve_external_request_id is preserve
    assert ctx.sampling_percent == 10.0
    # What the header-mode rules derive from it: a kept id is honoured only without an edge.
    assert ctx.keeps_client_request_id is (handling is not RequestIdHandling.REPLACED)
    assert ctx.honours_client_trace_reason is (handling is RequestIdHandling.KEPT_HONOURED)


def test_forcing_headers_set_internal_client_and_sampling_percentages() -> None:
    p = MeshProfile(
        "p",
        "/",
        request_id=RequestIdHandling.REPLACED,
        force_trace=Forcing(sent=5, traced=5, marked=5),
        client_trace_id=Forcing(sent=8, traced=8, marked=2),
    )
    ctx = expectation_context(p, 100.0)
    assert ctx.client_internal is True
    assert ctx.client_sampling_percent == pytest.approx(25.0)
    assert ctx.overall_sampling_percent == 100.0
    # A partly honoured force-trace (overall_sampling < 100) is not turned into an estimate of
    # overall_sampling: the configured percentage stays what decisions are judged against.
    cut = MeshProfile("p", "/", force_trace=Forcing(sent=4, traced=1, marked=1))
    assert expectation_context(cut, 100.0).overall_sampling_percent == 100.0
    ignored = MeshProfile("p", "/", force_trace=Forcing(sent=5, traced=0, marked=0))
    assert expectation_context(ignored, 100.0).client_internal is False


def test_unlearned_facts_keep_the_declared_base() -> None:
    base = ExpectationContext(use_remote_address=False, w3c=True, client_sampling_percent=40.0)
    ctx = expectation_context(MeshProfile("p", "/"), None, base=base)
    assert (ctx.use_remote_address, ctx.w3c, ctx.client_sampling_percent) == (False, True, 40.0)


def test_declaration_warnings_name_the_flag() -> None:
    declared = ExpectationContext()
    learned = ExpectationContext(use_remote_address=False)
    warnings = declaration_warnings(declared, learned)
    assert len(warnings) == 1 and "--no-gateway-use-remote-address" in warnings[0]
    assert declaration_warnings(declared, declared) == []


def test_gaps_name_the_fact_not_learned() -> None:
    no_echo = expectation_gaps(MeshProfile("p", "/", answered=5, echo=False, shape=FOUR))
    assert set(no_echo) >= {"sampling", "mesh_collection", "no_leaks", "header_modes"}
    assert all("echo" in why for why in no_echo.values())
    no_shape = expectation_gaps(
        MeshProfile(
            "p", "/", answered=24, echo=True, traces_sampled=10, request_id=RequestIdHandling.REPLACED
        )
    )
    assert set(no_shape) == {"mesh_collection", "propagation_integrity"}
    assert "none of 10 sampled probe traces came back" in no_shape["mesh_collection"]
    full = MeshProfile("p", "/", answered=24, echo=True, shape=FOUR, request_id=RequestIdHandling.REPLACED)
    assert expectation_gaps(full) == {}


def test_quiet_period_follows_the_time_to_queryable() -> None:
    assert suggested_quiet_s(MeshProfile("p", "/", time_to_queryable_s=5.2)) == 6.5
    assert suggested_quiet_s(MeshProfile("p", "/", time_to_queryable_s=1.0)) == 2.0
    assert suggested_quiet_s(MeshProfile("p", "/")) is None


def test_profile_round_trips_through_its_file(tmp_path: Path) -> None:
    p = MeshProfile(
        "r-probe", "/headers", requests=24, answered=24, echo=True, shape=FOUR, traces_sampled=18,
        traces_found=18, request_id=RequestIdHandling.KEPT_RESET, b3=True, w3c=False,
        force_trace=Forcing(5, 0, 0), client_trace_id=Forcing(8, 8, 8), run_id_tag="loadgen.run_id",
        reader="zipkin", not_found_form=True, time_to_queryable_s=1.3, notes=("n",),
    )  # fmt: skip
    path = tmp_path / "mesh-profile.json"
    path.write_text(json.dumps(p.to_dict()))
    back = load_profile(path)
    assert back.source == "file"
    assert back.shape == FOUR and back.request_id is RequestIdHandling.KEPT_RESET
    assert back.force_trace == Forcing(5, 0, 0) and back.time_to_queryable_s == 1.3
    assert expectation_context(back, 1.0) == expectation_context(p, 1.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"shape": [["gw", "SERVER", -1]]}', r"is not \[service, kind, count\]"),
        (b'{"echo": "maybe"}', "expected true, false or null"),
        (b'{"time_to_queryable_s": "soon"}', "time_to_queryable_s"),
        (b'{"request_id": "sometimes"}', "not a loadgen mesh profile"),
    ],
)
def test_bad_profile_files_get_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


def test_missing_profile_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "absent.json")


def test_advice_names_the_setting_to_change() -> None:
    p = MeshProfile(
        "p", "/", answered=24, echo=True, shape=FOUR, traces_found=5,
        request_id=RequestIdHandling.KEPT_HONOURED, force_trace=Forcing(5, 2, 2),
    )  # fmt: skip
    advice = " | ".join(profile_advice(p))
    assert "customTags" in advice  # no run-id tag was found
    assert "xrid_crafted" in advice  # the gateway keeps client ids
    assert "overall_sampling" in advice
    # x-client-trace-id: a veto leaves Envoy's `b` mark, so marked-but-untraced means
    # overall_sampling; marked on only some requests (all traced) means client_sampling.
    vetoed = MeshProfile("p", "/", echo=True, shape=FOUR, run_id_tag="t", client_trace_id=Forcing(8, 4, 8))
    assert "overall_sampling" in " ".join(profile_advice(vetoed))
    coin = MeshProfile("p", "/", echo=True, shape=FOUR, run_id_tag="t", client_trace_id=Forcing(8, 4, 4))
    coin_advice = " ".join(profile_advice(coin))
    assert "client_sampling" in coin_advice and "4 of 8" in coin_advice and "overall" not in coin_advice
    assert profile_advice(MeshProfile("p", "/", answered=3, echo=True, shape=FOUR, run_id_tag="t")) == []

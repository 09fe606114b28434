"""What the watch says of the mesh profile (loadgen.watch.engine): loadgen_watch_mesh_profile_info's
labels (profile_labels) say what the profile learned of the mesh, and "unknown" for what it could
not learn: never the default mesh's shape, and never "no run-id tag" for a probe that read no
trace back; the notes (limit_notes) say what a figure means when the profile lacks a fact."""

from __future__ import annotations

from dataclasses import replace

from loadgen.analysis.reconcile import Expectation
from loadgen.mesh.profile import MeshProfile, RequestIdHandling, SpanShape, expectation_gaps, flags_profile
from loadgen.mesh.tracer import TracerFamily
from loadgen.watch.engine import limit_notes, profile_labels

#: A probe of a mesh unlike the default one: the gateway alone (1 span), not an edge (client
#: x-request-ids kept and honoured), the OpenTelemetry tracer, no span carrying the run id.
UNLIKE = MeshProfile(
    probe_run_id="p",
    path="/headers",
    shape=SpanShape((("istio-ingressgateway", "SERVER", 1),)),
    traces_sampled=12,
    traces_found=12,
    request_id=RequestIdHandling.KEPT_HONOURED,
    tracer=TracerFamily.OPENTELEMETRY,
)


def test_a_probed_mesh_unlike_the_default_is_labelled_as_probed() -> None:
    assert profile_labels(UNLIKE, "") == {
        "tracer": "opentelemetry",
        "spans_per_trace": "1",
        "edge": "kept_honoured",
        "run_id_tag": "none",
        "source": "probe",
    }


def test_a_probed_run_id_tag_is_named() -> None:
    assert profile_labels(UNLIKE, "loadgen.run_id")["run_id_tag"] == "loadgen.run_id"


def test_a_probe_that_read_no_trace_back_learned_nothing_of_the_spans() -> None:
    blind = MeshProfile(probe_run_id="p", path="/headers", traces_sampled=12, traces_found=0)
    labels = profile_labels(blind, "")
    assert labels["run_id_tag"] == "unknown"  # not "none": no span was seen to lack the tag
    assert labels["spans_per_trace"] == labels["edge"] == labels["tracer"] == "unknown"


def test_a_profile_file_of_such_a_probe_is_unknown_too() -> None:
    blind = MeshProfile(probe_run_id="p", path="/headers", traces_found=0, source="file")
    assert profile_labels(blind, "")["run_id_tag"] == "unknown"


def test_no_probe_takes_the_declared_tag_or_none() -> None:
    flags = flags_profile("/headers", expected_spans=2)
    assert profile_labels(flags, "")["run_id_tag"] == "none"  # --no-run-id-tag declared
    assert profile_labels(flags, "my.tag")["run_id_tag"] == "my.tag"
    assert profile_labels(flags, "")["spans_per_trace"] == "2"
    assert profile_labels(flags, "")["source"] == "flags"


def _expect(profile: MeshProfile) -> Expectation:
    shape = profile.shape
    return Expectation(shape.total if shape else 0, (), 30.0, shape=shape)


def test_a_profile_with_an_echo_and_a_shape_has_no_limits() -> None:
    unlike = replace(UNLIKE, echo=True)
    assert limit_notes(unlike, _expect(unlike), expectation_gaps(unlike)) == []


def test_no_shape_says_found_means_any_span_and_why_there_is_none() -> None:
    blind = MeshProfile(probe_run_id="p", path="/headers", answered=24, echo=True, traces_sampled=12)
    [note] = limit_notes(blind, _expect(blind), expectation_gaps(blind))
    assert note.startswith("the trace shape is unknown: none of 12 sampled probe traces came back")
    assert "found once any span of it is read" in note and "--expected-spans" in note


def test_a_declared_span_count_is_a_shape() -> None:
    flags = flags_profile("/headers", expected_spans=2)
    assert not any("any span" in n for n in limit_notes(flags, _expect(flags), expectation_gaps(flags)))


def test_no_echo_says_every_decision_is_unknown() -> None:
    mute = replace(UNLIKE, echo=False)
    [note] = limit_notes(mute, _expect(mute), expectation_gaps(mute))
    assert "does not echo request headers" in note and "concluded unknown" in note

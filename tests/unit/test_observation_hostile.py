"""A backend answer whose spans are not in Zipkin v2 form (an endpoint or tags that is not an
object, ids of any JSON type) never raises out of the read-back: the trace is ERROR (unknown),
never found or missing. Before, `from_fetched` raised AttributeError from the fetch thread."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import Expectation, Outcome, classify
from loadgen.backends.base import Fetched, FetchStatus

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ("traceId", "id", "parentId", "kind", "name", "localEndpoint", "remoteEndpoint", "tags",
          "timestamp", "duration", "shared", "annotations")  # fmt: skip
spans = st.lists(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)), min_size=1, max_size=4
)


@settings(max_examples=200, deadline=None)
@given(spans, st.sampled_from(["", "loadgen.run_id"]))
def test_any_span_dicts_give_an_observation(trace: list[dict[str, Any]], tag: str) -> None:
    obs = TraceObservation.from_fetched(
        Fetched(FetchStatus.FOUND, spans=tuple(trace)), tag, "run" if tag else ""
    )
    assert obs.status in (FetchStatus.FOUND, FetchStatus.ERROR)
    if obs.status is FetchStatus.ERROR:
        assert obs.error and "not in Zipkin v2 form" in obs.error
    else:
        assert obs.span_count == len(trace)


def test_an_endpoint_that_is_not_an_object_is_unknown_not_missing() -> None:
    trace = [{"traceId": "a" * 32, "id": "b" * 16, "localEndpoint": "gateway", "kind": "SERVER"}]
    obs = TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, spans=tuple(trace)), "loadgen.run_id", "r")
    assert obs.status is FetchStatus.ERROR and obs.span_count == 0
    expect = Expectation(1, ("gateway",), None)
    assert classify(True, obs, expect) is Outcome.UNKNOWN
    # and a well-formed span of the same trace is found
    good = [{"traceId": "a" * 32, "id": "b" * 16, "localEndpoint": {"serviceName": "gateway"}}]
    ok = TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, spans=tuple(good)), "loadgen.run_id", "r")
    assert classify(True, ok, expect) is Outcome.FOUND

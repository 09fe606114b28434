"""TempoBackend against a loopback Tempo-shaped query API (tests/unit/tempo_fake.py): the shared
reader contract, then what only Tempo does (v2 with PARTIAL, v1 with `batches` and base64 ids,
bodiless 404s, trimmed search ids, TraceQL and `tags=` searches paged by time window under
`limit`, the X-Scope-OrgID tenant). Expected values are written from shared/specs/tempo/."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer

from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import Expectation, Outcome, classify
from loadgen.backends import (
    BackendError,
    FetchStatus,
    TempoBackend,
    TraceBackend,
    ZipkinBackend,
    parse_backend_spec,
)
from loadgen.backends.tempo import SearchStyle, decode_trace, logfmt_tags, traceql, untrimmed_id
from loadgen.cli.run import TargetFlags
from loadgen.mesh.profile import MeshProfile
from loadgen.run import RunError, RunOptions
from loadgen.run.target import learn_profile
from tests.unit.backend_contract import (
    SPECS,
    TraceBackendContract,
    clean_backend_env,
    comparable,
    envoy_spans,
    load,
    multi_hop_trace,
    tid,
    zspan,
)
from tests.unit.tempo_fake import FakeTempo

__all__ = ["clean_backend_env", "envoy_spans"]  # fixtures, imported to be active here

TS = 1_700_000_000_000_000
V1_EXAMPLE = SPECS / "tempo" / "trace-by-id-v1-example.json"
# The example's ids, base64 in the file, as hex (MUkZX/sL7AU0e0jv6OzBsA== is these 16 bytes).
EXAMPLE_TRACE = "3149195ffb0bec05347b48efe8ecc1b0"


@pytest.fixture
def fake() -> Iterator[FakeTempo]:
    server = FakeTempo()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_backend(fake: FakeTempo) -> Iterator[Callable[..., TempoBackend]]:
    made: list[TraceBackend] = []

    def make(**options: Any) -> TempoBackend:
        options.setdefault("backoff_s", 0.01)
        backend = TempoBackend(options.pop("url", fake.url), **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


class TestTempoContract(TraceBackendContract):
    @staticmethod
    def requests_for(n_ids: int, batch_size: int = 100) -> int:
        return n_ids  # no batch route: one GET per id

    # Two checks name the other readers' routes; here they are Tempo's (same checks otherwise).

    def test_check_trace_route_passes_on_the_own_not_found(self, fake: Any, make_backend: Any) -> None:
        backend = make_backend()
        backend.check_trace_route()
        backend.check_trace_route()
        paths = [p for p, _, _ in fake.requests]
        ids = [re.fullmatch(r"/v2/traces/([0-9a-f]{32})", p) for p in paths]
        assert len(paths) == 2 and all(ids), paths
        first, second = (m.group(1) for m in ids if m)
        assert first != second and not first.startswith("0" * 16)

    def test_proxy_routing_only_the_listing_path(
        self, fake: Any, make_backend: Any, envoy_spans: list[dict[str, Any]]
    ) -> None:
        fake.add_trace(envoy_spans)
        fake.routed = {"/search"}  # what check() asks
        backend = make_backend()
        backend.check()
        out = backend.fetch_many(["978883983d506fa5", "1" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}, out
        with pytest.raises(BackendError, match='404 text/plain "404 page not found"'):
            backend.check_trace_route()


class TestTraceById:
    def test_spec_example_from_v1_batches_with_base64_ids(self, fake: FakeTempo, make_backend: Any) -> None:
        # An older Tempo: no v2 route; v1 answers the spec's fixture with `resourceSpans`
        # renamed `batches`, as MarshalToJSONV1 prints it.
        fake.v2_absent = True
        fake.v1_bodies[EXAMPLE_TRACE] = {"batches": load(V1_EXAMPLE)["resourceSpans"]}
        (fetched,) = make_backend().fetch_many([EXAMPLE_TRACE]).values()
        assert fetched.status is FetchStatus.FOUND and not fetched.partial
        got = [
            (s["traceId"], s["id"], s.get("parentId"), s["name"], s["timestamp"], s["duration"])
            for s in fetched.spans
        ]
        start = 1_636_729_665_000_000  # startTimeUnixNano 1636729665000000000 in µs
        assert got == [
            (EXAMPLE_TRACE, "4b23de25d1fb6641", None, "vulture-68", start, 92),
            (EXAMPLE_TRACE, "3ef58fd67f3c3c44", "4b23de25d1fb6641", "vulture-45", start, 54),
            (EXAMPLE_TRACE, "23483ddcaf958888", "3ef58fd67f3c3c44", "vulture-96", start, 89),
            (EXAMPLE_TRACE, "04b1672edf34433d", "23483ddcaf958888", "vulture-48", start, 84),
            (EXAMPLE_TRACE, "083a27a20c7b6de3", None, "vulture-36", start, 5),
            (EXAMPLE_TRACE, "5ef2b292ae1ab9e8", "083a27a20c7b6de3", "vulture-38", start, 56),
        ]
        first = fetched.spans[0]
        assert first["localEndpoint"] == {"serviceName": "tempo-vulture"}
        assert first["tags"]["http.status_code"] == "110"  # an intValue attribute
        assert "kind" not in first  # the fixture's spans have no kind (UNSPECIFIED)
        assert len(first["annotations"]) == 4  # its four events

    def test_v2_absent_then_v1_only(self, fake: FakeTempo, make_backend: Any) -> None:
        fake.v2_absent = True
        fake.add_trace(multi_hop_trace(tid(1)))
        backend = make_backend(concurrency=1)
        out = backend.fetch_many([tid(1), tid(2), tid(3)])
        assert [out[t].status for t in (tid(1), tid(2), tid(3))] == [
            FetchStatus.FOUND,
            FetchStatus.MISSING,
            FetchStatus.MISSING,
        ]
        paths = [p.split("/")[1] for p, _, _ in fake.requests]
        assert paths == ["v2", "traces", "traces", "traces"]  # v2 once, then v1 alone

    def test_v2_answered_once_then_a_bodied_404_is_unknown(self, fake: FakeTempo, make_backend: Any) -> None:
        fake.add_trace(multi_hop_trace(tid(1)))
        backend = make_backend()
        assert backend.fetch_many([tid(1)])[tid(1)].status is FetchStatus.FOUND
        fake.fetch_answer = (404, "trace not found", "text/plain")  # something in between
        fetched = backend.fetch_many([tid(2)])[tid(2)]
        assert fetched.status is FetchStatus.ERROR
        assert '404 text/plain "trace not found" is not Tempo\'s not-found answer' in (fetched.error or "")
        assert [p for p, _, _ in fake.requests][-1].startswith("/v2/")  # v1 not asked

    def test_bodiless_404_is_missing_bodied_404_is_error(self, fake: FakeTempo, make_backend: Any) -> None:
        backend = make_backend(retries=0)
        assert backend.fetch_many(["1" * 32])["1" * 32].status is FetchStatus.MISSING
        fake.fetch_answer = (404, "404 page not found\n", "text/plain")
        assert backend.fetch_many(["1" * 32])["1" * 32].status is FetchStatus.ERROR

    def test_partial_status_is_partial_never_complete(self, fake: FakeTempo, make_backend: Any) -> None:
        fake.max_trace_spans = 2
        fake.add_trace(multi_hop_trace(tid(1)))  # 3 spans: cut to 2, PARTIAL
        fake.add_trace(multi_hop_trace(tid(2))[:2])  # 2 spans: complete
        out = make_backend().fetch_many([tid(1), tid(2)])
        assert out[tid(1)].status is FetchStatus.FOUND and out[tid(1)].partial
        assert len(out[tid(1)].spans) == 2
        assert out[tid(2)].status is FetchStatus.FOUND and not out[tid(2)].partial
        # A partial trace is partial even when it holds every span the expectation asks for.
        expect = Expectation(2, ("istio-ingressgateway",), 100.0)
        cut = TraceObservation.from_fetched(out[tid(1)])
        assert cut.partial and TraceObservation.from_dict(cut.to_dict()) == cut
        assert classify(True, cut, expect) is Outcome.PARTIAL
        assert classify(True, TraceObservation.from_fetched(out[tid(2)]), expect) is Outcome.FOUND

    def test_decode_trace_forms(self) -> None:
        assert decode_trace({"trace": {}, "status": "PARTIAL", "message": "cut"}) == ([], True)
        assert decode_trace({"trace": {"resourceSpans": []}}) == ([], False)
        assert decode_trace({"batches": []}) == ([], False)
        assert decode_trace({"data": []}) is None
        assert decode_trace({"trace": []}) is None
        assert decode_trace([]) is None


class TestTenant:
    @pytest.mark.parametrize("status", [401, 403])
    def test_check_names_the_tenant_header(self, fake: FakeTempo, make_backend: Any, status: int) -> None:
        fake.fail_next(1, status)
        backend = make_backend(headers={"X-Scope-OrgID": "team-a"})
        with pytest.raises(BackendError) as info:
            backend.check()
        message = str(info.value)
        assert f"answered HTTP {status}" in message and "X-Scope-OrgID 'team-a' was refused" in message
        assert "--tempo-tenant" in message and "\n" not in message
        assert fake.requests[0][2]["x-scope-orgid"] == "team-a"

    def test_fetch_and_search_say_the_same(self, fake: FakeTempo, make_backend: Any) -> None:
        fake.fetch_status = 401
        fetched = make_backend().fetch_many(["1" * 16])["1" * 16]
        assert fetched.status is FetchStatus.ERROR and "no X-Scope-OrgID was sent" in (fetched.error or "")
        fake.fail_next(1, 401)
        with pytest.raises(BackendError, match="X-Scope-OrgID"):
            make_backend().search(tags={"k": "v"}, service=None, start_us=TS, end_us=TS + 1, limit=5)

    def test_cli_flag_becomes_the_header(self) -> None:
        assert TargetFlags(tempo_tenant="team-a").backend_flags()["headers"] == {"X-Scope-OrgID": "team-a"}
        with pytest.raises(typer.Exit):
            TargetFlags(tempo_tenant="a", backend_header=["x-scope-orgid: b"]).backend_flags()


class TestSearch:
    def test_trimmed_search_ids_are_normalized_and_fetched(self, fake: FakeTempo, make_backend: Any) -> None:
        trace_id = "00000000000000ab" + "1" * 16  # searched as "ab111…": 18 hex characters
        wanted = multi_hop_trace(trace_id, ts_us=TS)
        fake.add_trace(wanted)
        traces = make_backend().search(
            tags={"loadgen.run_id": "run-1"}, service="app", start_us=TS - 10, end_us=TS + 100, limit=10
        )
        assert [[comparable(s) for s in t] for t in traces] == [[comparable(s) for s in wanted]]
        (params,) = fake.search_params()
        assert params["q"] == ['{ span.loadgen.run_id = "run-1" && resource.service.name = "app" }']
        # Whole seconds covering [TS - 10 µs, TS + 100 µs]: floor of the start, past the end.
        assert params["start"] == ["1699999999"] and params["end"] == ["1700000001"]

    def test_untrimmed_id(self) -> None:
        assert untrimmed_id("ab" + "1" * 16) == "00000000000000ab" + "1" * 16
        assert untrimmed_id("1" * 16) == "1" * 16
        assert untrimmed_id("abc") == "0000000000000abc"  # a 64-bit id, zeros trimmed
        assert untrimmed_id("f" * 33) is None and untrimmed_id("xyz") is None and untrimmed_id(7) is None

    def test_query_forms(self) -> None:
        assert traceql({}, None) == "{}"
        assert traceql({"a b": 'say "hi"'}, None) == '{ span."a b" = "say \\"hi\\"" }'
        assert logfmt_tags({"loadgen.run_id": "R 1"}, "app") == 'loadgen.run_id="R 1" service.name=app'

    def test_pages_by_window_under_limit(self, fake: FakeTempo, make_backend: Any) -> None:
        # 6 matching traces, one per second, and search pages of 2: windows halve (they share
        # their boundary second, both ends being inclusive) down to one second, where the page
        # grows; every trace is found once.
        for n in range(6):
            fake.add_trace([zspan(tid(n), ts_us=TS + n * 1_000_000, tags={"loadgen.run_id": "run-1"})])
        backend = make_backend(search_page=2)
        traces = backend.search(
            tags={"loadgen.run_id": "run-1"}, service=None, start_us=TS, end_us=TS + 5_000_000, limit=100
        )
        assert sorted(t[0]["traceId"] for t in traces) == sorted(tid(n) for n in range(6))
        params = fake.search_params()
        assert params[0]["limit"] == ["2"] and len(params) > 1
        assert {p["limit"][0] for p in params} <= {"2", "8"}  # 8: a one-second window that was full
        assert len(traces) == 6  # no duplicates

    def test_one_full_second_grows_the_page(self, fake: FakeTempo, make_backend: Any) -> None:
        for n in range(5):  # five traces within one second
            fake.add_trace([zspan(tid(n), ts_us=TS + n, tags={"loadgen.run_id": "run-1"})])
        backend = make_backend(search_page=2)
        traces = backend.search(
            tags={"loadgen.run_id": "run-1"}, service=None, start_us=TS, end_us=TS + 10, limit=100
        )
        assert len(traces) == 5
        assert [p["limit"][0] for p in fake.search_params()] == ["2", "8"]

    def test_limit_caps_the_answer(self, fake: FakeTempo, make_backend: Any) -> None:
        for n in range(5):
            fake.add_trace([zspan(tid(n), ts_us=TS + n, tags={"k": "v"})])
        traces = make_backend().search(tags={"k": "v"}, service=None, start_us=TS, end_us=TS + 10, limit=3)
        assert len(traces) == 3
        assert [p["limit"][0] for p in fake.search_params()] == ["3"]

    def test_tempo_1_uses_tags(self, fake: FakeTempo, make_backend: Any) -> None:
        fake.version = "1.5.0"
        fake.add_trace([zspan(tid(1), ts_us=TS, tags={"loadgen.run_id": "run-1"})])
        backend = make_backend()
        found = backend.search(
            tags={"loadgen.run_id": "run-1"}, service="istio-ingressgateway", start_us=TS, end_us=TS, limit=5
        )
        assert len(found) == 1
        (params,) = fake.search_params()
        assert "q" not in params
        assert params["tags"] == ["loadgen.run_id=run-1 service.name=istio-ingressgateway"]

    def test_traceql_refused_falls_back_to_tags_for_the_session(
        self, fake: FakeTempo, make_backend: Any
    ) -> None:
        fake.traceql = False
        fake.add_trace([zspan(tid(1), ts_us=TS, tags={"k": "v"})])
        backend = make_backend()
        for _ in range(2):
            assert len(backend.search(tags={"k": "v"}, service=None, start_us=TS, end_us=TS, limit=5)) == 1
        assert [sorted(p) for p in fake.search_params()] == [
            ["end", "limit", "q", "spss", "start"],
            ["end", "limit", "spss", "start", "tags"],
            ["end", "limit", "spss", "start", "tags"],
        ]

    def test_explicit_style(self, fake: FakeTempo, make_backend: Any) -> None:
        make_backend(search_style=SearchStyle.TAGS).search(
            tags={"k": "v"}, service=None, start_us=TS, end_us=TS, limit=1
        )
        assert "tags" in fake.search_params()[0] and fake.count("/status/buildinfo") == 0
        with pytest.raises(ValueError, match="search_style"):
            make_backend(search_style="sql")


class TestFactory:
    def test_tempo_spec(self, fake: FakeTempo) -> None:
        backend = parse_backend_spec(f"tempo:{fake.url.replace('//', '//u:s3cret@')}")
        assert isinstance(backend, TempoBackend) and backend.url == fake.url
        backend.close()

    def test_auto_finds_tempo_by_echo(self, fake: FakeTempo) -> None:
        backend = parse_backend_spec(f"auto:{fake.url}")
        assert isinstance(backend, TempoBackend)
        backend.close()
        assert [p for p, _, _ in fake.requests][-1] == "/echo"

    def test_auto_finds_tempo_by_buildinfo(self, fake: FakeTempo) -> None:
        fake.routed = {"/status/buildinfo"}
        backend = parse_backend_spec(f"auto:{fake.url}")
        assert isinstance(backend, TempoBackend)
        backend.close()


class TestProbeFindsNothing:
    """A wrong tenant looks like an empty Tempo: the run stops at the probe with the tenant named,
    instead of measuring 100 % loss (issue 12, "Bad input")."""

    def profile(self, found: int) -> MeshProfile:
        return MeshProfile(probe_run_id="r-probe", path="/headers", traces_sampled=3, traces_found=found)

    def learn(
        self, backend: TraceBackend, profile: MeshProfile, monkeypatch: pytest.MonkeyPatch
    ) -> MeshProfile:
        monkeypatch.setattr("loadgen.run.target.probe_mesh", lambda *args, **kwargs: profile)
        return learn_profile(RunOptions(run_id="r"), "http://gw", "host", backend, "r", lambda _: None)

    def test_tempo_names_the_tenant(self, make_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        backend = make_backend(headers={"X-Scope-OrgID": "team-b"})
        with pytest.raises(RunError) as info:
            self.learn(backend, self.profile(0), monkeypatch)
        message = str(info.value)
        assert "none of the 3 sampled probe traces" in message and "X-Scope-OrgID 'team-b'" in message
        assert "--tempo-tenant" in message and "--no-probe" in message
        assert self.learn(backend, self.profile(1), monkeypatch).traces_found == 1

    def test_other_readers_measure_the_loss(self, monkeypatch: pytest.MonkeyPatch) -> None:
        zipkin = ZipkinBackend("http://127.0.0.1:9")  # never asked
        assert self.learn(zipkin, self.profile(0), monkeypatch).traces_found == 0
        zipkin.close()

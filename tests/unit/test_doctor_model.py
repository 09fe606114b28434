"""The doctor's report model: exit code, JSON shape and the exact plain-text rendering."""

from __future__ import annotations

import json

from loadgen.doctor import Check, CheckStatus, DoctorReport


def _report() -> DoctorReport:
    return DoctorReport(
        [
            Check("gateway.reachable", CheckStatus.PASS, "answered HTTP 200 in 3 ms"),
            Check(
                "collector.endpoint",
                CheckStatus.FAIL,
                "POST /zipkin/api/v1/spans answered HTTP 404",
                "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON",
                ("POST /api/v2/spans (Zipkin v2 JSON): HTTP 202, read back intact",),
                {"working_endpoint": "/api/v2/spans"},
            ),
            Check("bootstrap.trace_id_128bit", CheckStatus.WARN, "traceId128bit is the string 'true'"),
            Check("istio.sampling", CheckStatus.SKIP, "no --istio-config given"),
        ]
    )


def test_render_text_exact() -> None:
    assert _report().render_text() == [
        "loadgen doctor",
        "  PASS  gateway.reachable          answered HTTP 200 in 3 ms",
        "  FAIL  collector.endpoint         POST /zipkin/api/v1/spans answered HTTP 404",
        "                                   POST /api/v2/spans (Zipkin v2 JSON): HTTP 202, read back intact",
        "                                   fix: use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON",
        "  WARN  bootstrap.trace_id_128bit  traceId128bit is the string 'true'",
        "  SKIP  istio.sampling             no --istio-config given",
        "1 passed, 1 warnings, 1 failed, 1 skipped (exit 1)",
    ]


def test_exit_code_is_one_only_with_a_failure() -> None:
    assert _report().exit_code == 1
    only_warnings = DoctorReport([Check("a", CheckStatus.WARN, "w"), Check("b", CheckStatus.SKIP, "s")])
    assert only_warnings.exit_code == 0


def test_a_doctor_that_examined_nothing_is_inconclusive_not_a_pass() -> None:
    all_skipped = DoctorReport(
        [Check("a", CheckStatus.SKIP, "no gateway"), Check("b", CheckStatus.SKIP, "s")]
    )
    assert all_skipped.exit_code == 3
    assert DoctorReport([]).exit_code == 3
    assert all_skipped.render_text()[-1].startswith("inconclusive: no check examined anything")
    # One examined check is enough to judge.
    assert (
        DoctorReport([Check("a", CheckStatus.PASS, "ok"), Check("b", CheckStatus.SKIP, "s")]).exit_code == 0
    )


def test_to_dict_is_json_ready_and_complete() -> None:
    data = json.loads(json.dumps(_report().to_dict()))
    assert data["exit_code"] == 1
    assert data["counts"] == {"pass": 1, "warn": 1, "fail": 1, "skip": 1}
    assert [c["name"] for c in data["checks"]] == [
        "gateway.reachable",
        "collector.endpoint",
        "bootstrap.trace_id_128bit",
        "istio.sampling",
    ]
    endpoint = data["checks"][1]
    assert endpoint["status"] == "fail"
    assert endpoint["fix_hint"].startswith("use collectorEndpoint /api/v2/spans")
    assert endpoint["data"] == {"working_endpoint": "/api/v2/spans"}


def test_get_finds_by_name() -> None:
    report = _report()
    found = report.get("collector.endpoint")
    assert found is not None and found.status is CheckStatus.FAIL
    assert report.get("nope") is None

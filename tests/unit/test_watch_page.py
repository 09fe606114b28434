"""loadgen.watch.page: the status page of hand-built snapshots, parsed as XML: the figures per
window, "no data" (never 0 %) where nothing was measured, every value escaped, the self-reload."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from loadgen.watch.model import CollectionWindow, Interval, WatchSnapshot
from loadgen.watch.page import duration_text, render_page

from .watch_fixtures import MESH, REF, fresh_snapshot, outcomes, sample_snapshot

NS = "{http://www.w3.org/1999/xhtml}"


def parse(html: str) -> ET.Element:
    return ET.fromstring(html.removeprefix("<!DOCTYPE html>\n"))


def by_id(root: ET.Element, element_id: str) -> ET.Element:
    for el in root.iter():
        if el.get("id") == element_id:
            return el
    raise AssertionError(f"no element with id {element_id!r}")


def text(el: ET.Element) -> str:
    return re.sub(r"\s+", " ", " ".join(el.itertext())).strip()


def test_window_cards_show_figures_with_intervals() -> None:
    root = parse(render_page(sample_snapshot()))
    decision = text(by_id(root, "card-decision-300s"))
    assert "10.00 %" in decision and "95 % CI 5.35 – 17.97 %" in decision
    assert "9 of 90 decided requests sampled" in decision
    assert "configured 10.00 %: inside the interval" in decision and "covers" in decision
    mesh = text(by_id(root, "card-collection-mesh-3600s"))
    assert "95.24 %" in mesh and "95 % CI 89.34 – 97.97 %" in mesh and "100 of 105 found complete" in mesh
    assert "partial 2 · missing 3 · leaked 0 · not sampled 890" in mesh
    assert "Last 5 min" in text(by_id(root, "window-300s")) and "Last 1 h" in text(
        by_id(root, "window-3600s")
    )


def test_configured_outside_the_interval_is_flagged() -> None:
    root = parse(render_page(replace(sample_snapshot(), configured_ratio=0.5)))
    decision = by_id(root, "card-decision-3600s")
    assert "fail" in (decision.get("class") or "").split()
    assert "configured 50.00 %: outside the interval" in text(decision)
    assert "misses" in text(decision)
    unknown = parse(render_page(replace(sample_snapshot(), configured_ratio=None)))
    assert "configured unknown" in text(by_id(unknown, "card-decision-300s"))
    assert "info" in (by_id(unknown, "card-decision-300s").get("class") or "").split()


def test_no_data_reads_no_data_never_zero_percent() -> None:
    html = render_page(fresh_snapshot())
    root = parse(html)
    assert "%" not in text(by_id(root, "window-300s"))
    for card in ("card-decision-300s", "card-collection-mesh-300s", "card-collection-reference-3600s"):
        assert "no data" in text(by_id(root, card))
    assert text(by_id(root, "card-readback")).startswith("Last successful read-back no data")
    assert "no data" in text(by_id(root, "card-ttq"))
    assert text(by_id(root, "overall")).startswith("NO DATA YET")
    # Only the reference source lacks data in the sample's short window; unknown still counted.
    ref = text(by_id(parse(render_page(sample_snapshot())), "card-collection-reference-300s"))
    assert "no data" in ref and "unknown 3" in ref and "%" not in ref


def test_before_the_first_snapshot() -> None:
    root = parse(render_page(None))
    assert text(by_id(root, "overall")).startswith("NO DATA YET")
    assert "nothing is known yet" in text(by_id(root, "overall"))
    body = root.find(f"{NS}body")
    assert body is not None and "%" not in text(body)


def test_now_cards() -> None:
    root = parse(render_page(sample_snapshot()))
    # 20 traces: 4 in (0.25, 0.5], 12 in (0.5, 1], 3 in (1, 2], 1 above 600 s.
    # p50 = rank 10 -> 0.5 + 0.5 * (10 - 4) / 12 = 0.75; p99 = rank 19.8 > 19 -> beyond 600 s.
    ttq = text(by_id(root, "card-ttq"))
    assert "0.75 s" in ttq and "p99 > 600 s" in ttq and "20 traces" in ttq and "reference: no data" in ttq
    assert "4 s ago" in text(by_id(root, "card-readback"))
    assert "mesh 7 · reference 3" in text(by_id(root, "card-pending"))
    errors = by_id(root, "card-errors")
    assert "backend 2" in text(errors) and "fail" in (errors.get("class") or "").split()
    assert "exported 505" in text(by_id(root, "reference"))
    assert "tracer zipkin" in text(by_id(root, "profile"))
    assert "none concluded in the last 300s" in text(by_id(root, "notes"))


def test_totals_tables() -> None:
    root = parse(render_page(sample_snapshot()))
    rows = [[text(c) for c in row] for row in by_id(root, "traces").iter(f"{NS}tr")]
    assert rows[0] == ["source · mode", "found", "partial", "missing", "leaked", "not sampled", "unknown"]
    assert rows[1] == ["mesh no-headers", "80", "0", "2", "0", "800", "0"]
    assert rows[2] == ["reference reference", "500", "0", "0", "0", "0", "4"]
    requests = [[text(c) for c in row] for row in by_id(root, "requests").iter(f"{NS}tr")]
    assert requests == [
        ["mode", "no response", "status 200"],
        ["no-headers", "3", "900"],
        ["sampled", "0", "300"],
    ]


HOSTILE = '<script>alert("x")</script>&\u202e'


def _hostile() -> WatchSnapshot:
    s = sample_snapshot()
    window = replace(
        s.windows[0],
        label=HOSTILE,
        collection={
            MESH: CollectionWindow(
                outcomes={**outcomes(found=1), HOSTILE: 2}, collection=Interval(1, 1, 1.0, 0.2, 1.0)
            ),
            REF: s.windows[0].collection[REF],
        },
    )
    return replace(
        s,
        run_id=HOSTILE,
        version=HOSTILE,
        windows=(window,),
        requests={(HOSTILE, HOSTILE): 1},
        traces={(MESH, HOSTILE, "found"): 1},
        reference={HOSTILE: 1},
        profile={HOSTILE: HOSTILE},
        errors={HOSTILE: 1},
        notes=(HOSTILE,),
    )


def test_every_value_is_escaped() -> None:
    html = render_page(_hostile())
    root = parse(html)  # well-formed XML despite the markup in every value
    assert not [el for el in root.iter() if el.tag in (f"{NS}script", "script")]
    assert "<script>" not in html and "\u202e" not in html
    assert "&lt;script&gt;" in html
    assert root.find(f".//{NS}title") is not None


@pytest.mark.parametrize("refresh", [2, 5, 30])
def test_page_reloads_itself_without_a_script(refresh: int) -> None:
    html = render_page(sample_snapshot(), refresh_s=refresh)
    root = parse(html)
    metas = [m for m in root.iter(f"{NS}meta") if m.get("http-equiv") == "refresh"]
    assert [m.get("content") for m in metas] == [str(refresh)]
    assert f"reloads every {refresh} s" in text(root)
    assert "default-src 'none'" in html and "<script" not in html


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.2, "0 s"),
        (4, "4 s"),
        (59.6, "1 min"),
        (185, "3 min 5 s"),
        (3600, "1 h"),
        (7440, "2 h 4 min"),
        (86400 * 3 + 7200, "3 d 2 h"),
        (None, "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_duration_text(seconds: float | None, expected: str) -> None:
    assert duration_text(seconds) == expected

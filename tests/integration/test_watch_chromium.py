"""`loadgen watch`'s status page, served by loadgen.watch.server on a loopback port and opened in
headless Chromium over the DevTools protocol (the driver of test_html_chromium.py).

Checks: no console errors, nothing loaded but the page itself, the figures rendered in their
cards, nothing wider than the viewport at a phone's width (360 px) and no card's content wider
than its card, and the meta refresh: a page opened before the first snapshot says "NO DATA YET"
and shows the figures by itself once the runner publishes one.

Chromium comes from Debian (`apt-get install -y chromium chromium-driver`). Without it the test
skips and says so; with LOADGEN_REQUIRE_BROWSER=1 (CI) a missing browser fails instead.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from loadgen.watch.model import WatchSnapshot
from loadgen.watch.server import WatchServer
from tests.integration.test_html_chromium import (
    INSTALL_HINT,
    Browser,
    Cdp,
    _unavailable,
    console_errors,
    evaluate,
    find_chromium,
    open_page,
    png_size,
)
from tests.unit.watch_fixtures import NOW, sample_snapshot

from .conftest import leftover_processes

pytestmark = pytest.mark.integration

# Elements (outside a horizontally scrolling table box) whose right edge passes the viewport,
# and elements inside a card that pass the card's right edge.
OVERFLOW = """
JSON.stringify((() => {
  const vw = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 0.5) out.push(`${el.tagName}#${el.id}.${el.className} ${r.right} > ${vw}`);
  }
  for (const card of document.querySelectorAll('article.card')) {
    const edge = card.getBoundingClientRect().right;
    for (const el of card.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > edge + 0.5) out.push(`${card.id}: ${el.tagName}.${el.className} ${r.right} > ${edge}`);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, viewport: vw, overflowing: out};
})())
"""

FIGURES = """
JSON.stringify(Array.from(document.querySelectorAll('article.card')).map(card => {
  const big = card.querySelector('.big');
  const box = card.getBoundingClientRect();
  return {id: card.id, big: big ? big.innerText.replace(/\\s+/g, ' ').trim() : null,
          width: box.width, height: box.height};
}))
"""


class Published:
    """The runner's side: the snapshot it published last (None before the first)."""

    def __init__(self, snapshot: WatchSnapshot | None) -> None:
        self.snapshot = snapshot

    def latest(self) -> WatchSnapshot | None:
        return self.snapshot


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        _unavailable(f"headless Chromium is not installed; {INSTALL_HINT}")
    try:
        import websocket  # noqa: F401
    except ImportError:
        _unavailable("websocket-client is not installed (pip install websocket-client) to speak DevTools")
    assert binary is not None
    return binary


def _set_width(cdp: Cdp, session: str, width: int, mobile: bool) -> None:
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile},
        session=session,
    )


def _check_figures(cdp: Cdp, session: str) -> None:
    cards = {c["id"]: c for c in json.loads(evaluate(cdp, session, FIGURES))}
    expected = {
        "card-decision-300s": "10.00 %",
        "card-decision-3600s": "11.00 %",
        "card-collection-mesh-300s": "88.89 %",
        "card-collection-mesh-3600s": "95.24 %",
        "card-collection-reference-300s": "no data",
        "card-collection-reference-3600s": "99.97 %",
        "card-pending": "10",
        "card-ttq": "0.75 s",
        "card-readback": "4 s ago",
        "card-errors": "2",
    }
    assert {k: cards[k]["big"] for k in expected} == expected
    for card in cards.values():
        assert card["width"] > 150 and card["height"] > 60, card


def _check_layout(cdp: Cdp, session: str, width: int, mobile: bool) -> None:
    _set_width(cdp, session, width, mobile)
    layout = json.loads(evaluate(cdp, session, OVERFLOW))
    assert layout["viewport"] == width, layout
    assert layout["scrollWidth"] <= width, layout
    assert layout["overflowing"] == [], layout["overflowing"][:10]


def test_status_page_renders_and_fits_a_narrow_screen(chromium: str, tmp_path: Path) -> None:
    published = Published(sample_snapshot())
    server = WatchServer(published.latest, port=0, refresh_s=600, clock=lambda: NOW)
    server.start()
    browser = Browser(chromium, tmp_path / "browser")
    cdp: Cdp | None = None
    try:
        cdp = Cdp(browser.devtools_url())
        session = open_page(cdp, server.url)
        assert evaluate(cdp, session, "document.title") == "loadgen watch watch-20251009-a1b2"
        requests = [
            ev["params"]["request"]["url"]
            for ev in cdp.events
            if ev.get("method") == "Network.requestWillBeSent" and ev.get("sessionId") == session
        ]
        assert requests == [server.url], f"the page loaded something besides itself: {requests}"
        assert evaluate(cdp, session, "document.scripts.length") == 0
        _check_figures(cdp, session)
        _check_layout(cdp, session, 1280, mobile=False)
        _check_layout(cdp, session, 360, mobile=True)
        _check_figures(cdp, session)  # still all there, stacked
        shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
        png = base64.b64decode(shot["data"])
        (tmp_path / "watch-narrow.png").write_bytes(png)
        assert png_size(png)[0] == 360
        assert console_errors(cdp.events, session) == []
    finally:
        if cdp is not None:
            cdp.close()
        browser.stop()
        server.stop()
    assert leftover_processes(str(browser.profile)) == []


def test_page_reloads_itself_from_no_data_to_figures(chromium: str, tmp_path: Path) -> None:
    published = Published(None)
    server = WatchServer(published.latest, port=0, refresh_s=1, clock=lambda: NOW)
    server.start()
    browser = Browser(chromium, tmp_path / "browser")
    cdp: Cdp | None = None
    try:
        cdp = Cdp(browser.devtools_url())
        session = open_page(cdp, server.url)
        overall = evaluate(cdp, session, "document.getElementById('overall').innerText")
        assert overall.split("\n")[0].strip() == "NO DATA YET", overall
        assert "%" not in evaluate(cdp, session, "document.body.innerText")
        published.snapshot = sample_snapshot()
        # The meta refresh (1 s) reloads the page; wait for a load that shows the figures.
        deadline = time.monotonic() + 30
        while True:
            cdp.wait_for("Page.loadEventFired", session, timeout=30)
            overall = evaluate(cdp, session, "document.getElementById('overall').innerText")
            if overall.startswith("WATCHING") or time.monotonic() > deadline:
                break
        assert overall.startswith("WATCHING"), overall
        _check_figures(cdp, session)
        assert console_errors(cdp.events, session) == []
    finally:
        if cdp is not None:
            cdp.close()
        browser.stop()
        server.stop()
    assert leftover_processes(str(browser.profile)) == []

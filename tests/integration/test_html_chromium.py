"""The HTML report of a real run, opened in headless Chromium.

A real `execute_run` on the embedded mesh (real Envoy, Locust, OTel SDK), `render_run_folder`,
then Chromium loads report.html from disk and is driven over the Chrome DevTools protocol
(`--remote-debugging-port`, websocket-client): no console errors or exceptions, no request
other than the file itself (the page is self-contained), every SVG chart laid out with a
non-zero box and non-empty marks, and a full-page screenshot saved as screenshot.png in the run
folder for a person to look at.

Chromium comes from Debian (`apt-get install -y chromium chromium-driver`). Without it the test
skips and says so; with LOADGEN_REQUIRE_BROWSER=1 (CI, where the package is installed) a missing
browser fails instead. Chromium is started in its own session and ended by its PID.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.report.html import render_run_folder
from loadgen.run import RunOptions, RunResult, execute_run
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.procs import die_with_parent

from .conftest import leftover_processes

pytestmark = pytest.mark.integration

INSTALL_HINT = "install it with: apt-get update && apt-get install -y chromium chromium-driver"
CHARTS = (
    "chart-throughput",
    "chart-latency",
    "chart-decision",
    "chart-collection",
    "chart-modes-latency",
    "chart-queryable",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("LOADGEN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LOADGEN_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """The browser binary itself (Debian's /usr/bin/chromium is a shell wrapper that adds flags
    and extensions; it execs the binary, so either keeps the PID)."""
    for candidate in ("/usr/lib/chromium/chromium",):
        if os.access(candidate, os.X_OK):
            return candidate
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


class Cdp:
    """A minimal Chrome DevTools protocol client over the browser's websocket (flat sessions)."""

    def __init__(self, url: str) -> None:
        import websocket  # websocket-client

        # Chromium rejects websocket upgrades that carry an Origin it was not told to allow.
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            data = json.loads(self.ws.recv())
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise CdpError(f"{method}: {data['error']}")
                return data.get("result", {})
            if "method" in data:
                self.events.append(data)
        raise CdpError(f"{method}: no answer within 60 s")

    def wait_for(self, method: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method and ev.get("sessionId") == session and not ev.get("_seen"):
                    ev["_seen"] = True
                    return ev
            if time.monotonic() > deadline:
                raise CdpError(f"no {method} within {timeout} s")
            data = json.loads(self.ws.recv())
            if "method" in data:
                self.events.append(data)

    def close(self) -> None:
        self.ws.close()


class Browser:
    """Headless Chromium in its own session with a throwaway profile; `stop()` ends it by PID."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir(parents=True)
        self.log = open(workdir / "chromium.log", "wb")  # noqa: SIM115
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--disable-crash-reporter",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # the browser picks a free port and writes it down
            "--window-size=1280,900",
            "about:blank",
        ]
        env = {
            **os.environ,
            "HOME": str(workdir),
            "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
            "XDG_CACHE_HOME": str(workdir / "xdg-cache"),
        }
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def devtools_url(self, timeout: float = 30.0) -> str:
        """ws://127.0.0.1:PORT/devtools/browser/ID from the DevToolsActivePort file."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}; see {self.log.name}")
            try:
                port, path = marker.read_text().split("\n")[:2]
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            if port.strip() and path.strip():
                return f"ws://127.0.0.1:{port.strip()}{path.strip()}"
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout} s")

    def stop(self) -> None:
        """SIGTERM to the browser's PID, then SIGKILL to its process group (its session, which
        only it and its helpers belong to) for anything left."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def console_errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """SEVERE entries, as WebDriver would call them: console.error/assert, uncaught exceptions,
    and browser log entries at level error (CSP violations, failed loads)."""
    out = []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        params = ev.get("params", {})
        method = ev.get("method")
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append("log: " + str(params["entry"].get("text")))
    return out


def open_page(cdp: Cdp, url: str) -> str:
    """A fresh tab with Runtime, Log, Page and Network events on, navigated to url and loaded."""
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        cdp.call(f"{domain}.enable", session=session)
    cdp.call("Page.navigate", {"url": url}, session=session)
    cdp.wait_for("Page.loadEventFired", session)
    return session


def evaluate(cdp: Cdp, session: str, expression: str) -> Any:
    result = cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
    if "exceptionDetails" in result:
        raise CdpError(f"evaluation failed: {result['exceptionDetails']}")
    return result["result"].get("value")


CHART_BOXES = """
JSON.stringify(Array.from(document.querySelectorAll('svg.plot')).map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('[data-role=series],[data-role=bar],[data-role=band]'));
  const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
  return {id: svg.id, width: box.width, height: box.height, marks: marks.length, drawn: drawn.length};
}))
"""


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


@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunResult, list[Path]]]:
    out = tmp_path_factory.mktemp("html-run")
    result = execute_run(
        RunOptions(
            run_id="html-report",
            output_dir=out,
            duration_s=3,
            users=3,
            reference_rate=10,
            # 50 % so the decision-rate chart shows a rate with an interval, not a flat 100 %
            tracing=TracingConfig(sampling_percent=50.0),
            seed=3,
        ),
        lambda m: None,
    )
    yield result, render_run_folder(result.run_dir)


def test_report_html_renders_in_headless_chromium(
    chromium: str, rendered_run: tuple[RunResult, list[Path]], tmp_path: Path
) -> None:
    result, written = rendered_run
    run_dir = result.run_dir
    assert [p.name for p in written] == ["report.html", "modes.csv", "timeseries.csv"]
    assert result.summary["requests"]["total"] > 100
    report_url = (run_dir / "report.html").resolve().as_uri()
    canary = tmp_path / "canary.html"
    canary.write_text(
        "<!DOCTYPE html><html><body><script>console.error('loadgen-canary');"
        "throw new Error('loadgen-canary-exception');</script></body></html>"
    )
    browser = Browser(chromium, tmp_path / "browser")
    cdp: Cdp | None = None
    try:
        cdp = Cdp(browser.devtools_url())
        # The error check itself works: a page that logs an error and throws is caught.
        canary_session = open_page(cdp, canary.resolve().as_uri())
        evaluate(cdp, canary_session, "1")  # drain the events the load produced
        found = console_errors(cdp.events, canary_session)
        assert any("loadgen-canary" in e for e in found) and any("exception" in e for e in found), found

        session = open_page(cdp, report_url)
        evaluate(cdp, session, "document.readyState")
        assert console_errors(cdp.events, session) == []
        requests = [
            ev["params"]["request"]["url"]
            for ev in cdp.events
            if ev.get("method") == "Network.requestWillBeSent" and ev.get("sessionId") == session
        ]
        assert requests == [report_url], f"the report loaded something besides itself: {requests}"
        assert evaluate(cdp, session, "document.title") == "loadgen run html-report"
        assert evaluate(cdp, session, "document.scripts.length") == 0
        overall = evaluate(cdp, session, "document.getElementById('overall').innerText")
        assert overall.split()[0] in ("PASS", "FAIL", "INCONCLUSIVE")
        boxes = {b["id"]: b for b in json.loads(evaluate(cdp, session, CHART_BOXES))}
        assert set(CHARTS) <= set(boxes), boxes.keys()
        for chart in CHARTS:
            box = boxes[chart]
            assert box["width"] > 300 and box["height"] > 150, box
            assert box["marks"] > 0 and box["drawn"] == box["marks"], box
        cards = evaluate(cdp, session, "document.querySelectorAll('article.card').length")
        assert cards >= 8

        # A full-page screenshot at 1280 px wide, for people (and for the record).
        metrics = cdp.call("Page.getLayoutMetrics", session=session)
        height = int(metrics["cssContentSize"]["height"]) + 1
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session=session)
        png = base64.b64decode(shot["data"])
        (run_dir / "screenshot.png").write_bytes(png)
        width, shot_height = png_size(png)
        assert width == 1280 and shot_height == min(height, 16000) and shot_height > 1500
        assert console_errors(cdp.events, session) == []
    finally:
        if cdp is not None:
            cdp.close()
        browser.stop()
    assert leftover_processes(str(browser.profile)) == []
    print(f"screenshot: {run_dir / 'screenshot.png'}")

"""No credential ever reaches a file, a log or the terminal (issue 10, finding 1).

Distinct secrets are planted in every URL option of every command that takes one: the user-info
password of --gateway, --collector and --backend, a `?token=` of --path, and, on the error paths
(a closed port, a URL that does not parse), a `?token=` of each URL too. The collector and the
backend sit behind a loopback proxy that answers 401 unless the planted basic-auth credentials
arrive, so the real URLs are proven to be *used*. Then every file loadgen wrote (the run folders,
binary included, the crash-report cache, the temp folder) and every command's stdout and stderr
are searched for each secret, raw and as the base64 of its basic-auth header.

Cheap by design: one 2 s run feeds verify, report and gate; the other commands run at the same
time against the one embedded mesh.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from loadgen.stack.mesh import EmbeddedMesh

from .backend_proxy import BackendProxy

pytestmark = pytest.mark.integration

LOADGEN = [sys.executable, "-m", "loadgen.cli"]


def _secret(label: str) -> str:
    return f"{label}{secrets.token_hex(6)}"


GW_PW, COL_PW, BE_PW = _secret("gwpw"), _secret("colpw"), _secret("bepw")
PATH_TOK = _secret("pathtok")
BAD_PW, BAD_TOK = _secret("badpw"), _secret("badtok")  # the error paths
SECRETS = {"gateway password": GW_PW, "collector password": COL_PW, "backend password": BE_PW,
           "--path token": PATH_TOK, "error-path password": BAD_PW, "error-path token": BAD_TOK}  # fmt: skip


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# The Authorization header a request would carry: it must not be stored either.
NEEDLES = {
    **SECRETS,
    "gateway basic auth": _basic("gw", GW_PW),
    "collector basic auth": _basic("col", COL_PW),
    "backend basic auth": _basic("be", BE_PW),
    "error-path basic auth": _basic("bad", BAD_PW),
}


def _with_userinfo(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


class AuthProxy(BackendProxy):
    """`BackendProxy` in pass mode that answers 401 unless the expected basic auth arrives."""

    def __init__(self, upstream: str, user: str, password: str) -> None:
        super().__init__(upstream)
        self.expected = f"Basic {_basic(user, password)}"
        self.allowed = 0
        self.denied = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.expected:
            self.denied += 1
            return web.Response(status=401, text="basic auth required\n")
        self.allowed += 1
        return await super()._handle(request)


@dataclass
class Done:
    args: list[str]
    returncode: int
    output: str  # stdout + stderr

    def __str__(self) -> str:
        return f"loadgen {' '.join(self.args)} -> {self.returncode}\n{self.output[-3000:]}"


@pytest.fixture(scope="module")
def proxies(mesh100: EmbeddedMesh) -> Iterator[tuple[AuthProxy, AuthProxy, AuthProxy]]:
    with (
        AuthProxy(mesh100.collector_url, "col", COL_PW) as collector,
        AuthProxy(mesh100.collector_url, "be", BE_PW) as backend,
        AuthProxy(mesh100.gateway_url, "gw", GW_PW) as gateway,
    ):
        gateway.forward_host = True
        yield collector, backend, gateway


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loadgen(args: Sequence[str], env: dict[str, str], timeout: float = 90.0) -> Done:
    proc = subprocess.run(
        [*LOADGEN, *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )
    return Done(list(args), proc.returncode, proc.stdout + proc.stderr)


def _leaks(texts: dict[str, str], roots: Sequence[Path]) -> list[str]:
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{label} in {path}" for label, s in NEEDLES.items() if s.encode() in data]
    for where, text in texts.items():
        found += [f"{label} in the output of: {where}" for label, s in NEEDLES.items() if s in text]
    return found


def test_no_planted_secret_reaches_a_file_or_the_terminal(
    proxies: tuple[AuthProxy, AuthProxy, AuthProxy], tmp_path: Path
) -> None:
    collector_proxy, backend_proxy, gateway_proxy = proxies
    out = tmp_path / "out"
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TMPDIR": str(tmp), "COLUMNS": "200"}
    env = {k: v for k, v in env.items() if not k.startswith("LOADGEN_BACKEND_")}
    gateway = _with_userinfo(gateway_proxy.url, "gw", GW_PW)
    collector = _with_userinfo(collector_proxy.url, "col", COL_PW)
    backend = "zipkin:" + _with_userinfo(backend_proxy.url, "be", BE_PW)
    port = _closed_port()
    bad = f"http://bad:{BAD_PW}@127.0.0.1:{port}/?token={BAD_TOK}"
    external = ["--gateway", gateway, "--collector", collector, "--backend", backend]
    quick = ["--duration", "2", "--users", "2", "--quiet", "1", "--max-wait", "3"]

    # Phase 1, all at once: the one run the folder commands reuse, every other command that
    # takes URLs, and every "unreachable" or "cannot parse" error path.
    run_args = ["run", *quick, "--run-id", "leak", "-o", str(out), *external,
                "--reference-rate", "20", "--path", f"/headers?token={PATH_TOK}"]  # fmt: skip
    others = [
        ["calibrate", "--expect", "100", "--max-requests", "20", "--looks", "1", "--no-probe",
         "--calibration-id", "cal", "-o", str(out), "--gateway", gateway, "--backend", backend],
        ["capacity", "--steps", "users:2", "--step-duration", "2", "--ramp", "0", "--no-probe",
         "--reference-rate", "10", "--run-id", "cap", "-o", str(out), *external],
        ["probe", "--run-id", "probe", "-o", str(out), "--gateway", gateway, "--backend", backend],
        ["doctor", *external, "--json"],
        # the error paths
        ["run", *quick, "--run-id", "e1", "-o", str(out), "--gateway", bad, "--backend", backend],
        ["run", *quick, "--run-id", "e2", "-o", str(out), "--gateway", gateway, "--collector", bad,
         "--backend", backend],
        ["run", *quick, "--run-id", "e3", "-o", str(out), "--gateway", gateway, "--backend", f"zipkin:{bad}"],
        ["run", *quick, "--run-id", "e4", "-o", str(out), "--gateway", gateway, "--backend", f"auto:{bad}"],
        ["run", *quick, "--run-id", "e5", "-o", str(out), "--gateway", gateway, "--backend", f"jaeger:{bad}"],
        ["run", *quick, "--run-id", "e6", "-o", str(out), "--gateway", gateway, "--backend", f"jaeger-v3:{bad}"],
        ["run", *quick, "--run-id", "e7", "-o", str(out), "--gateway", f"http://bad:{BAD_PW}@[::1?token={BAD_TOK}",
         "--backend", f"gopher://bad:{BAD_PW}@h/?token={BAD_TOK}"],
        ["calibrate", "--expect", "100", "--calibration-id", "e8", "-o", str(out), "--gateway", bad,
         "--backend", backend],
        ["capacity", "--steps", "users:2", "--run-id", "e9", "-o", str(out), "--gateway", gateway,
         "--collector", bad, "--backend", backend],
        ["probe", "--run-id", "e10", "-o", str(out), "--gateway", gateway, "--backend", f"jaeger:{bad}"],
        ["doctor", "--gateway", bad, "--collector", bad, "--backend", f"zipkin:{bad}"],
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=6) as pool:
        run_future = pool.submit(_loadgen, run_args, env)
        done = list(pool.map(lambda a: _loadgen(a, env), others))
        ran = run_future.result()
    assert (out / "leak" / "summary.json").exists(), ran
    run_dir = out / "leak"

    # Phase 2: the commands that read the run folder (verify twice: its backend, then another one).
    bad_verify = ["verify", str(run_dir), "--backend", f"zipkin:{bad}"]
    done.append(_loadgen(bad_verify, env))
    done.append(_loadgen(["verify", str(run_dir), "--backend", backend, "--max-wait", "2"], env))
    with ThreadPoolExecutor(max_workers=2) as pool:
        done += pool.map(
            lambda a: _loadgen(a, env),
            [["report", str(run_dir), "--baseline", str(out / "cap")],
             ["gate", str(run_dir), "--junit", str(run_dir / "junit.xml")]],
        )  # fmt: skip
    done.append(ran)

    # The planted credentials were used, not just hidden: the proxies saw them (and only them).
    # The gateway's reached Locust apart from the host its web UI shows (LOADGEN_GATEWAY_USERINFO).
    assert collector_proxy.allowed > 0 and backend_proxy.allowed > 0 and gateway_proxy.allowed > 0
    assert (collector_proxy.denied, backend_proxy.denied, gateway_proxy.denied) == (0, 0, 0)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["total"] > 0 and summary["requests"]["errors"] == 0, summary["requests"]
    for result in done:  # every command ran to a real answer, not a crash (exit 5) or a usage slip
        assert result.returncode in (0, 1, 2, 3), result

    leaks = _leaks({" ".join(r.args): r.output for r in done}, [out, cache, tmp])
    assert leaks == [], "\n".join(leaks)
    # ... and what is shown still says a credential was there.
    assert "//***@" in (run_dir / "run.json").read_text()


def test_a_saved_crash_report_holds_no_credential_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 5 saves the traceback with the command line: both redacted (no crash is needed to
    check the writer, and none can be planted on purpose)."""
    from loadgen.cli import crash

    url = f"http://u:{BAD_PW}@127.0.0.1:1/?token={BAD_TOK}"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(crash, "_crash_dir", None)
    monkeypatch.setattr(sys, "argv", ["loadgen", "run", "--gateway", url])
    try:
        raise RuntimeError(f"boom at {url}")
    except RuntimeError as exc:
        saved = crash.save_traceback(exc)
    assert saved.is_relative_to(tmp_path)
    leaks = _leaks({}, [tmp_path])
    assert leaks == [], "\n".join(leaks)

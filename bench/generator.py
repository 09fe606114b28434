"""Generator throughput: loadgen's traced Locust user vs a bare Locust user vs wrk, same gateway.

    python bench/generator.py [--quick] [--users U] [--duration S] [--rounds R] [--sampling 100,0]

For each sampling percentage, one embedded mesh (real gateway Envoy -> sidecar Envoy -> echo, spans
to the collector) is started on 127.0.0.1 and, against it, in alternation (a, b, a, b, ...):

  (a) loadgen  `locust -f scenarios/mesh.py` (header-mode mix, ids, echo parsing, ledger)
  (b) bare     `locust -f bench/bare_locustfile.py` (FastHttpUser, same Host and path, nothing else)
  (e) loadgen + the side-emitter at `loadgen run`'s default 20 reference traces/s (first sampling only)

then wrk once (`wrk -t1 -c U -d Ns -H 'Host: ...' GW/headers`), which shows what the mesh itself
can serve. Requests/s are read from Locust's --json-file (num_requests / (last request - start))
and from wrk's "Requests/sec". The median of the per-round a/b ratios is the headline (alternation
cancels drift). Client CPU per request (exact, from the child's rusage) is printed too because on a
2-core machine the mesh, not the generator, may bound the throughput.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO,
    CpuSampler,
    banner,
    footer,
    median,
    print_table,
    ratio_line,
    run_child,
    self_cpu_s,
)

from loadgen.emitter import ReferenceEmitter  # noqa: E402
from loadgen.stack.envoy import TracingConfig  # noqa: E402
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig  # noqa: E402

BARE_LOCUSTFILE = Path(__file__).resolve().parent / "bare_locustfile.py"
LOADGEN_LOCUSTFILE = REPO / "scenarios" / "mesh.py"
EMITTER_RATE_PER_S = 20.0  # loadgen run's default --reference-rate


def locust_run(
    locustfile: Path,
    mesh: EmbeddedMesh,
    users: int,
    duration_s: int,
    workdir: Path,
    tag: str,
    pids: dict[str, int],
    emitter_rate: float = 0.0,
) -> dict[str, float | str]:
    json_base = workdir / tag
    argv = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--host", mesh.gateway_url,
        "--only-summary", "--json-file", str(json_base), "--stop-timeout", "2",
        "--exit-code-on-error", "0", "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {
        "LOADGEN_HOST_HEADER": mesh.host_header,
        "LOADGEN_LEDGER": str(workdir / f"{tag}.ledger.jsonl"),
        "LOADGEN_RUN_ID": f"bench-{tag}",
    }
    emitter = None
    if emitter_rate > 0:
        emitter = ReferenceEmitter(
            mesh.collector_url,
            f"bench-{tag}",
            workdir / f"{tag}.reference.jsonl",
            rate_per_s=emitter_rate,
            children=2,
        )
    cpu0, t0 = self_cpu_s(), time.perf_counter()
    with CpuSampler(pids) as sampler:
        if emitter is not None:
            emitter.start()
        child = run_child(argv, env=env, timeout_s=duration_s + 60, cwd=REPO)
        emitted = emitter.stop().spans_started if emitter is not None else 0
    emitter_cpu, emitter_wall = self_cpu_s() - cpu0, time.perf_counter() - t0
    if child.returncode != 0:
        raise RuntimeError(f"locust ({tag}) exited with {child.returncode}")
    entries = json.loads(Path(f"{json_base}.json").read_text())
    requests = sum(int(e["num_requests"]) for e in entries)
    failures = sum(int(e["num_failures"]) for e in entries)
    first = min(float(e["start_time"]) for e in entries)
    last = max(float(e["last_request_timestamp"]) for e in entries)
    span_s = last - first
    # Client CPU while the load ran (Locust's start-up and shutdown excluded), from /proc samples.
    load_cpu_s = child.cpu_between(first, last)
    return {
        "requests": requests,
        "failures": failures,
        "rps": requests / span_s if span_s > 0 else 0.0,
        "client_cpu_pct": 100.0 * load_cpu_s / span_s if span_s > 0 else 0.0,
        "client_us_per_req": 1e6 * load_cpu_s / requests if requests else 0.0,
        "emitter_spans": emitted,
        "emitter_cpu_pct": 100.0 * emitter_cpu / emitter_wall if emitter is not None else 0.0,
        **{f"{k}_pct": sampler.percent(k, first, last) for k in [*pids, "machine"]},
    }


_WRK_RPS = re.compile(r"Requests/sec:\s*([0-9.]+)")
_WRK_TOTAL = re.compile(r"(\d+) requests in")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk_run(
    mesh: EmbeddedMesh, users: int, duration_s: int, pids: dict[str, int]
) -> dict[str, float | str] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    argv = [
        wrk,
        "-t1",
        "-c",
        str(users),
        "-d",
        f"{duration_s}s",
        "-H",
        f"Host: {mesh.host_header}",
        f"{mesh.gateway_url}/headers",
    ]
    with tempfile.TemporaryFile() as out:
        with CpuSampler(pids) as sampler:
            t0 = time.time()
            child = run_child(argv, stdout=out, timeout_s=duration_s + 30)
            t1 = time.time()
        out.seek(0)
        text = out.read().decode(errors="replace")
    m = _WRK_RPS.search(text)
    if child.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({child.returncode}): {text[-500:]}")
    total = int(_WRK_TOTAL.search(text).group(1)) if _WRK_TOTAL.search(text) else 0
    non2xx = _WRK_NON2XX.search(text)
    socket_errors = _WRK_SOCKET.search(text)
    failures = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    )
    return {
        "requests": total,
        "failures": failures,
        "rps": float(m.group(1)),
        "client_cpu_pct": 100.0 * child.cpu_s / child.wall_s,
        "client_us_per_req": 1e6 * child.cpu_s / total if total else 0.0,
        "emitter_spans": 0,
        "emitter_cpu_pct": 0.0,
        **{f"{k}_pct": sampler.percent(k, t0, t1) for k in [*pids, "machine"]},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--users", type=int, default=16, help="Locust users = wrk connections (default 16)")
    p.add_argument("--duration", type=int, default=15, help="seconds per run (default 15)")
    p.add_argument("--rounds", type=int, default=3, help="a/b pairs per sampling (default 3)")
    p.add_argument("--sampling", default="100,0", help="sampling percentages, one mesh each (default 100,0)")
    args = p.parse_args()
    if args.quick:
        args.users, args.duration, args.rounds, args.sampling = 4, 1, 1, "100"
    samplings = [float(s) for s in args.sampling.split(",") if s.strip()]

    banner(
        f"generator throughput: loadgen vs bare Locust vs wrk (users={args.users}, {args.duration}s runs, "
        f"{args.rounds} a/b rounds)",
        args.quick,
    )
    rows = []
    summary: dict[float, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        for si, sampling in enumerate(samplings):
            workdir = Path(tmp) / f"s{sampling:g}"
            mesh = EmbeddedMesh(workdir, MeshConfig(tracing=TracingConfig(sampling_percent=sampling))).start()
            try:
                assert mesh.gateway is not None and mesh.sidecar is not None
                pids = {
                    "gateway": mesh.gateway.process.pid, "sidecar": mesh.sidecar.process.pid,
                    "echo": mesh.echo.pid, "collector": mesh.collector.pid,
                }  # fmt: skip
                pairs: list[float] = []
                a_rps: list[float] = []
                b_rps: list[float] = []
                e_rps: list[float] = []
                a_us: list[float] = []
                b_us: list[float] = []
                with_emitter = si == 0 and not args.quick
                for r in range(args.rounds):
                    a = locust_run(
                        LOADGEN_LOCUSTFILE, mesh, args.users, args.duration, workdir, f"a{r}", pids
                    )
                    b = locust_run(BARE_LOCUSTFILE, mesh, args.users, args.duration, workdir, f"b{r}", pids)
                    rows.append([f"{sampling:g}%", "a loadgen", r + 1, *_cols(a)])
                    rows.append([f"{sampling:g}%", "b bare Locust", r + 1, *_cols(b)])
                    a_rps.append(float(a["rps"]))
                    b_rps.append(float(b["rps"]))
                    a_us.append(float(a["client_us_per_req"]))
                    b_us.append(float(b["client_us_per_req"]))
                    pairs.append(float(a["rps"]) / float(b["rps"]))
                    if with_emitter:
                        e = locust_run(
                            LOADGEN_LOCUSTFILE,
                            mesh,
                            args.users,
                            args.duration,
                            workdir,
                            f"e{r}",
                            pids,
                            emitter_rate=EMITTER_RATE_PER_S,
                        )
                        rows.append([f"{sampling:g}%", "e loadgen+emitter", r + 1, *_cols(e)])
                        e_rps.append(float(e["rps"]))
                w = wrk_run(mesh, args.users, args.duration, pids)
                if w is None:
                    rows.append(
                        [
                            f"{sampling:g}%",
                            "c wrk",
                            "-",
                            "skipped: wrk not found on PATH (apt-get install -y wrk)",
                        ]
                        + [None] * 10
                    )
                else:
                    rows.append([f"{sampling:g}%", "c wrk", 1, *_cols(w)])
                summary[sampling] = {
                    "pairs": pairs, "a": median(a_rps), "b": median(b_rps),
                    "e": median(e_rps) if e_rps else None, "wrk": float(w["rps"]) if w else None,
                    "a_us": median(a_us), "b_us": median(b_us),
                }  # fmt: skip
            finally:
                mesh.stop()

    print_table(
        [
            "sampling",
            "generator",
            "round",
            "requests",
            "failures",
            "req/s",
            "client CPU %",
            "client CPU µs/req",
            "emitter spans",
            "gateway CPU %",
            "sidecar CPU %",
            "echo CPU %",
            "collector CPU %",
            "machine busy % (of 200)",
        ],
        rows,
    )
    print()
    print("   medians per sampling:")
    print_table(
        [
            "sampling",
            "loadgen req/s",
            "bare req/s",
            "loadgen+emitter req/s",
            "wrk req/s",
            "a/b per round",
            "loadgen µs/req",
            "bare µs/req",
        ],
        [
            [
                f"{s:g}%",
                v["a"],
                v["b"],
                v["e"],
                v["wrk"],
                " ".join(f"{x:.3f}" for x in v["pairs"]),
                v["a_us"],
                v["b_us"],
            ]
            for s, v in summary.items()
        ],
    )
    print()
    for s, v in summary.items():
        ratio_line(
            f"loadgen/bare req/s @ sampling {s:g}% (median of {len(v['pairs'])} alternating pairs)",
            median(v["pairs"]),
            ">=",
            0.90,
        )
        ratio_line(
            f"bare/loadgen client CPU per request @ sampling {s:g}% (generator efficiency)",
            float(v["b_us"]) / float(v["a_us"]),
        )
        if v["wrk"]:
            ratio_line(f"bare Locust/wrk req/s @ sampling {s:g}%", float(v["b"]) / float(v["wrk"]))
        if v["e"]:
            ratio_line(f"(loadgen+emitter)/loadgen req/s @ sampling {s:g}%", float(v["e"]) / float(v["a"]))
    if 100.0 in summary and 0.0 in summary:
        hi, lo = summary[100.0], summary[0.0]
        for key, label in (("wrk", "wrk"), ("b", "bare Locust"), ("a", "loadgen")):
            if hi[key] and lo[key]:
                ratio_line(
                    f"tracing cost: {label} req/s at sampling 100% / 0%", float(hi[key]) / float(lo[key])
                )
    footer()
    return 0


def _cols(r: dict[str, float | str]) -> list[object]:
    return [
        r["requests"],
        r["failures"],
        r["rps"],
        r["client_cpu_pct"],
        r["client_us_per_req"],
        r["emitter_spans"] or None,
        r["gateway_pct"],
        r["sidecar_pct"],
        r["echo_pct"],
        r["collector_pct"],
        r["machine_pct"],
    ]


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)

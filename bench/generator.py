"""Generator throughput: loadgen's traced Locust user vs a bare Locust user vs wrk, same gateway.

    python bench/generator.py [--quick] [--users U] [--duration S] [--rounds R] [--sampling 0,20,100]

For each sampling percentage, one embedded mesh (real gateway Envoy -> sidecar Envoy -> echo, spans
to the collector) is started on 127.0.0.1 and, against it, in alternation (a, b, a, b, ...):

  (a)  loadgen  `locust -f scenarios/mesh.py` (default header-mode mix, ids, echo parsing, ledger)
  (a') loadgen  the same with the mix's client-forced decisions (B3 sampled=1/0) replaced by their
                no-flag twins: the mesh then traces the same share of requests as for (b), so
                only the generator differs (the default mix forces 20 % of requests sampled, which
                costs the mesh span work even at sampling 0 %)
  (b)  bare     `locust -f bench/bare_locustfile.py` (FastHttpUser, same Host and path, nothing else)
  (h)  bare + loadgen's headers: the same bare user sending the header set of a traced request
                (x-loadgen-run-id, x-loadgen-request-id and a b3 header: 3 headers more, the
                default mix's mean is 3.3), so the cost of the headers alone in Locust's HTTP
                client shows apart from loadgen's own work
  (e)  loadgen + the side-emitter at `loadgen run`'s default 20 reference traces/s (first sampling only)
  (s)  loadgen and bare side by side: both at the same time, half the users each, so both see the
       same machine and the same mesh (on a shared machine, the steadiest CPU-per-request ratio)

then wrk once (`wrk -t1 -c U -d Ns -H 'Host: ...' GW/headers`), which shows what the mesh itself
can serve. Requests/s are read from Locust's --json-file (num_requests / (last request - start))
and from wrk's "Requests/sec". The median of the per-round a/b ratios is the headline (alternation
cancels drift). Client CPU per request (from the child's /proc samples while the load ran) is the
primary figure: on a 2-core machine the mesh, not the generator, bounds the throughput, so req/s
ratios mostly measure the mesh. Each run's row shows the 1-minute load average at its end (the
machine is shared: a high one means a noisy figure).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    CpuSampler,
    banner,
    footer,
    loadavg,
    median,
    print_table,
    ratio_line,
    run_child,
    self_cpu_s,
)

from loadgen.emitter import ReferenceEmitter
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig

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
    extra_env: dict[str, str] | None = None,
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
        **(extra_env or {}),
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
    with CpuSampler({**pids, "bench": os.getpid()}) as sampler:
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
        "loadavg": loadavg().split()[0],
        **{f"{k}_pct": sampler.percent(k, first, last) for k in [*pids, "machine", "bench"]},
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
        with CpuSampler({**pids, "bench": os.getpid()}) as sampler:
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
        "loadavg": loadavg().split()[0],
        **{f"{k}_pct": sampler.percent(k, t0, t1) for k in [*pids, "machine", "bench"]},
    }


# The default mix with every client-forced decision replaced by its "no flag" twin: the same
# header shapes, but the proxy decides for every request - so the mesh traces exactly the share
# it traces for the bare user, and only the generator differs.
PROXY_DECIDED_MIX = "none=4,b3_multi_no_flag=4,b3_single_no_flag=2"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    locustfile: Path
    env: dict[str, str] = field(default_factory=dict)
    emitter_rate: float = 0.0


# A traced request's headers beyond the bare user's Host, with values of their real lengths.
TRACED_HEADERS = {
    "x-loadgen-run-id": "bench-h0",
    "x-loadgen-request-id": "5f0c3e1e2a7b4c7d9e8f00112233aabb",
    "b3": "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312",
}

VARIANTS = [
    Variant("a", "a loadgen", LOADGEN_LOCUSTFILE),
    Variant("p", "a' loadgen, proxy-decided mix", LOADGEN_LOCUSTFILE, {"LOADGEN_MIX": PROXY_DECIDED_MIX}),
    Variant("b", "b bare Locust", BARE_LOCUSTFILE),
    Variant(
        "h", "h bare + loadgen's headers", BARE_LOCUSTFILE, {"BARE_EXTRA_HEADERS": json.dumps(TRACED_HEADERS)}
    ),
    Variant("e", "e loadgen+emitter", LOADGEN_LOCUSTFILE, emitter_rate=EMITTER_RATE_PER_S),
]


Results = dict[float, dict[str, list[dict[str, float | str]]]]  # sampling -> variant key -> per-round results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--users", type=int, default=16, help="Locust users = wrk connections (default 16)")
    p.add_argument("--duration", type=int, default=15, help="seconds per run (default 15)")
    p.add_argument("--rounds", type=int, default=3, help="alternation rounds per sampling (default 3)")
    p.add_argument(
        "--sampling", default="0,20,100", help="sampling percentages, one mesh each (default 0,20,100)"
    )
    args = p.parse_args()
    if args.quick:
        args.users, args.duration, args.rounds, args.sampling = 4, 1, 1, "100"
    samplings = [float(s) for s in args.sampling.split(",") if s.strip()]

    banner(
        f"generator throughput: loadgen vs bare Locust vs wrk (users={args.users}, {args.duration}s runs, "
        f"{args.rounds} alternation rounds)",
        args.quick,
    )
    rows: list[list[object]] = []
    results: Results = {}
    wrk_rps: dict[float, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        for si, sampling in enumerate(samplings):
            measure_sampling(args, Path(tmp) / f"s{sampling:g}", sampling, si == 0, rows, results, wrk_rps)

    print_table(
        [
            "sampling", "generator", "round", "requests", "failures", "req/s", "client CPU %",
            "client CPU µs/req", "emitter spans", "gateway CPU %", "sidecar CPU %", "echo CPU %",
            "collector CPU %", "machine busy % (of 200)", "others CPU %", "loadavg 1 min",
        ],
        rows,
    )  # fmt: skip
    print()
    print_medians(results, wrk_rps)
    print()
    print_ratios(results, wrk_rps)
    footer()
    return 0


def measure_sampling(
    args: argparse.Namespace,
    workdir: Path,
    sampling: float,
    first: bool,
    rows: list[list[object]],
    results: Results,
    wrk_rps: dict[float, float | None],
) -> None:
    """One mesh at `sampling`: every variant for each round, then wrk once."""
    mesh = EmbeddedMesh(workdir, MeshConfig(tracing=TracingConfig(sampling_percent=sampling))).start()
    try:
        assert mesh.gateway is not None and mesh.sidecar is not None
        pids = {
            "gateway": mesh.gateway.process.pid, "sidecar": mesh.sidecar.process.pid,
            "echo": mesh.echo.pid, "collector": mesh.collector.pid,
        }  # fmt: skip
        variants = [v for v in VARIANTS if v.key in ("a", "b")]
        if not args.quick:
            variants = [v for v in VARIANTS if v.key in ("a", "p", "b", "h") or (first and v.key == "e")]
        per = results.setdefault(sampling, {v.key: [] for v in variants})
        for r in range(args.rounds):
            for v in variants:
                res = locust_run(
                    v.locustfile, mesh, args.users, args.duration, workdir, f"{v.key}{r}", pids,
                    extra_env=v.env, emitter_rate=v.emitter_rate,
                )  # fmt: skip
                per[v.key].append(res)
                rows.append([f"{sampling:g}%", v.label, r + 1, *_cols(res)])
            if not args.quick:
                side_by_side(args, mesh, workdir, r, pids, sampling, rows, per)
        w = wrk_run(mesh, args.users, args.duration, pids)
        if w is None:
            rows.append(
                [
                    f"{sampling:g}%",
                    "c wrk",
                    "-",
                    "skipped: wrk not found on PATH (apt-get install -y wrk)",
                ]
                + [None] * 12
            )
        else:
            rows.append([f"{sampling:g}%", "c wrk", 1, *_cols(w)])
        wrk_rps[sampling] = float(w["rps"]) if w else None
    finally:
        mesh.stop()


def side_by_side(
    args: argparse.Namespace,
    mesh: EmbeddedMesh,
    workdir: Path,
    r: int,
    pids: dict[str, int],
    sampling: float,
    rows: list[list[object]],
    per: dict[str, list[dict[str, float | str]]],
) -> None:
    """(s) loadgen and bare Locust at the same time, half the users each: both see the same
    machine and the same mesh, which alternation only approximates on a shared machine."""
    out: dict[str, dict[str, float | str]] = {}

    def one(key: str, locustfile: Path) -> None:
        out[key] = locust_run(
            locustfile, mesh, max(1, args.users // 2), args.duration, workdir, f"{key}{r}", pids
        )

    threads = [
        threading.Thread(target=one, args=("sa", LOADGEN_LOCUSTFILE)),
        threading.Thread(target=one, args=("sb", BARE_LOCUSTFILE)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if set(out) != {"sa", "sb"}:
        raise RuntimeError("a side-by-side run failed (see above)")
    for key, label in (("sa", "s loadgen, side by side"), ("sb", "s bare, side by side")):
        per.setdefault(key, []).append(out[key])
        rows.append([f"{sampling:g}%", label, r + 1, *_cols(out[key])])


def _med(results: Results, s: float, key: str, field_name: str = "rps") -> float | None:
    runs = results[s].get(key)
    return median([float(x[field_name]) for x in runs]) if runs else None


def _pair_ratios(results: Results, s: float, key: str) -> list[float]:
    return [float(x["rps"]) / float(y["rps"]) for x, y in zip(results[s][key], results[s]["b"], strict=True)]


def print_medians(results: Results, wrk_rps: dict[float, float | None]) -> None:
    def med(s: float, key: str, field_name: str = "rps") -> float | None:
        return _med(results, s, key, field_name)

    def pair_ratios(s: float, key: str) -> list[float]:
        return _pair_ratios(results, s, key)

    print("   medians per sampling (req/s; client CPU µs per request):")
    print_table(
        [
            "sampling", "loadgen", "loadgen proxy-decided mix", "bare", "loadgen+emitter", "wrk",
            "a/b per round", "a'/b per round", "loadgen µs/req", "proxy-decided µs/req", "bare µs/req",
            "bare+headers µs/req", "side by side loadgen/bare µs/req", "loadavg 1 min (runs)",
        ],
        [
            [
                f"{s:g}%", med(s, "a"), med(s, "p"), med(s, "b"), med(s, "e"), wrk_rps[s],
                " ".join(f"{x:.3f}" for x in pair_ratios(s, "a")),
                " ".join(f"{x:.3f}" for x in pair_ratios(s, "p")) if "p" in results[s] else None,
                med(s, "a", "client_us_per_req"), med(s, "p", "client_us_per_req"), med(s, "b", "client_us_per_req"),
                med(s, "h", "client_us_per_req"),
                f"{med(s, 'sa', 'client_us_per_req') or 0:.1f}/{med(s, 'sb', 'client_us_per_req') or 0:.1f}"
                if "sa" in results[s] else None,
                " ".join(str(x["loadavg"]) for runs in results[s].values() for x in runs),
            ]
            for s in results
        ],
    )  # fmt: skip


def print_ratios(results: Results, wrk_rps: dict[float, float | None]) -> None:
    """The closing ratio lines: per sampling, then the tracing cost between 100 % and 0 %."""
    for s in results:
        ab = _pair_ratios(results, s, "a")
        ratio_line(
            f"loadgen/bare req/s @ sampling {s:g}% (median of {len(ab)} alternating pairs)",
            median(ab),
            ">=",
            0.90,
        )
        if "p" in results[s]:
            pb = _pair_ratios(results, s, "p")
            ratio_line(
                f"loadgen(proxy-decided mix)/bare req/s @ sampling {s:g}% (same tracing share as bare; "
                f"median of {len(pb)} pairs)",
                median(pb), ">=", 0.90,
            )  # fmt: skip
        a_us, b_us = _med(results, s, "a", "client_us_per_req"), _med(results, s, "b", "client_us_per_req")
        if a_us and b_us:
            ratio_line(
                f"bare/loadgen client CPU per request @ sampling {s:g}% (generator efficiency)",
                b_us / a_us,
                ">=",
                0.90,
                note=f"({a_us:.1f} vs {b_us:.1f} µs/req)",
            )
        p_us, h_us = _med(results, s, "p", "client_us_per_req"), _med(results, s, "h", "client_us_per_req")
        if p_us and b_us:
            ratio_line(
                f"bare/loadgen(proxy-decided mix) client CPU per request @ sampling {s:g}% "
                "(generator efficiency, same tracing share as bare)",
                b_us / p_us,
                ">=",
                0.90,
                note=f"({p_us:.1f} vs {b_us:.1f} µs/req)",
            )
        sa_us, sb_us = (
            _med(results, s, "sa", "client_us_per_req"),
            _med(results, s, "sb", "client_us_per_req"),
        )
        if sa_us and sb_us:
            ratio_line(
                f"bare/loadgen client CPU per request, run side by side @ sampling {s:g}% "
                "(generator efficiency, same machine and mesh at once)",
                sb_us / sa_us,
                ">=",
                0.90,
                note=f"({sa_us:.1f} vs {sb_us:.1f} µs/req)",
            )
        if h_us and b_us:
            ratio_line(
                f"bare/(bare + loadgen's headers) client CPU per request @ sampling {s:g}% "
                "(what the headers alone cost in Locust's client)",
                b_us / h_us,
                note=f"({h_us:.1f} vs {b_us:.1f} µs/req)",
            )
        b_rps, w_rps, e_rps, a_rps = (
            _med(results, s, "b"),
            wrk_rps[s],
            _med(results, s, "e"),
            _med(results, s, "a"),
        )
        if w_rps and b_rps:
            ratio_line(f"bare Locust/wrk req/s @ sampling {s:g}%", b_rps / w_rps)
        if e_rps and a_rps:
            ratio_line(f"(loadgen+emitter)/loadgen req/s @ sampling {s:g}%", e_rps / a_rps)
    if 100.0 in results and 0.0 in results:
        for key, label in (("wrk", "wrk"), ("b", "bare Locust"), ("a", "loadgen")):
            hi = wrk_rps[100.0] if key == "wrk" else _med(results, 100.0, key)
            lo = wrk_rps[0.0] if key == "wrk" else _med(results, 0.0, key)
            if hi and lo:
                ratio_line(f"tracing cost: {label} req/s at sampling 100% / 0%", hi / lo)


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
        # Whatever else ran on the machine meanwhile (other users' jobs): large values = noisy run.
        max(
            0.0,
            float(r["machine_pct"])
            - float(r["client_cpu_pct"])
            - float(r["bench_pct"])
            - sum(float(r[f"{k}_pct"]) for k in ("gateway", "sidecar", "echo", "collector")),
        ),
        r["loadavg"],
    ]


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)

"""Generator memory over a long run: the ledger is streamed, so the Locust process's RSS must
stay flat however many requests it has sent.

    python bench/generator_rss.py            # 600 s at 200 req/s (the goal: a 10-minute run)
    python bench/generator_rss.py --quick    # 20 s, for the smoke test

Starts the embedded mesh, runs loadgen's traced user under Locust at a steady rate, samples the
Locust process's RSS (/proc/PID/status VmRSS) every few seconds, and prints the samples and the
ratio of the final RSS to the RSS after warm-up (goal: <= 1.10, i.e. flat within 10 %).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.ledger import count_lines
from loadgen.run import default_scenario_path
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 s instead of 600 s")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s over all users")
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    duration = 20.0 if args.quick else args.duration
    interval = 2.0 if args.quick else 15.0
    warmup = 6.0 if args.quick else 60.0
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="loadgen-rss-") as tmp:
        work = Path(tmp)
        ledger = work / "ledger.jsonl"
        mesh = EmbeddedMesh(work, MeshConfig(tracing=TracingConfig(sampling_percent=1.0))).start()
        proc: subprocess.Popen[bytes] | None = None
        try:
            env = {
                **os.environ,
                "LOADGEN_RUN_ID": "rss",
                "LOADGEN_LEDGER": str(ledger),
                "LOADGEN_HOST_HEADER": mesh.host_header,
                "LOADGEN_RATE": str(args.rate),
            }
            argv = [
                sys.executable, "-m", "locust", "-f", default_scenario_path(), "--headless",
                "-u", str(args.users), "-r", str(args.users), "-t", f"{int(duration)}s",
                "--host", mesh.gateway_url, "--only-summary", "--loglevel", "WARNING",
            ]  # fmt: skip
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = time.monotonic()
            samples: list[tuple[float, int, int]] = []
            while proc.poll() is None:
                time.sleep(interval)
                if proc.poll() is not None:
                    break
                samples.append((time.monotonic() - start, rss_kib(proc.pid), count_lines(ledger)))
            proc.wait()
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            mesh.stop()
    print(f"{'t s':>7} {'RSS MiB':>9} {'requests':>10}")
    for t, rss, n in samples:
        print(f"{t:7.1f} {rss / 1024:9.1f} {n:10d}")
    after_warmup = [s for s in samples if s[0] >= warmup] or samples
    base, final = after_warmup[0][1], samples[-1][1]
    peak = max(s[1] for s in after_warmup)
    ratio = final / base if base else float("nan")
    print(
        f"ratio generator RSS final / after warm-up = {ratio:.3f}  (goal <= 1.10: {'met' if ratio <= 1.10 else 'missed'})"
        f"  ({base / 1024:.1f} -> {final / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, {samples[-1][2]} requests)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run every figure of BENCHMARKS.md, one after another (``make bench``).

    .venv/bin/python -m bench.run_all [--quick] [--profile] [--only fanout,memory]

Each figure runs in its own process (one's sockets, threads and memory cannot skew the next),
after a bounded wait for an idle machine, prints its result line and writes
``bench/results/<name>.json``; the result lines are printed again as a summary at the end. The
Cassandra, Redis and ZooKeeper figures need the services: they are started with ``scripts/services.sh up``
when ``scripts/services.sh status`` says they are not answering (running ones are left alone).
``--quick`` passes ``--quick`` to every figure (a smoke run of seconds, not figures to quote);
``--profile`` adds py-spy profiles of the node where a figure supports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from bench.harness.measure import ROOT, machine_info, wait_quiet

# (figure, needs Cassandra + Redis, takes --profile)
FIGURES = [
    ("ids", False, False),
    ("send_latency", False, True),
    ("fanout", False, True),
    ("memory", False, False),
    ("cluster_latency", True, True),
    ("cross_node", True, True),
    ("history_read", True, True),
    ("store_throughput", True, True),
    ("handshakes", False, True),
    ("hot_detector", False, False),
    ("assign_sim", False, False),
    ("connect_latency", True, True),
    ("presence_bench", True, False),
    ("presence_fanout", True, True),
    ("hot_room", True, True),
]
# Figures that have no smoke mode: short enough to run as they are under --quick.
NO_QUICK = {"assign_sim", "presence_bench"}
SERVICES = "redis cassandra zookeeper"


def ensure_services() -> str | None:
    """Start the services the cluster figures need, unless they answer already; None when up."""
    env = {**os.environ, "SERVICES": SERVICES, "PYTHON": sys.executable}
    script = str(ROOT / "scripts" / "services.sh")
    if subprocess.run([script, "status"], env=env, capture_output=True, timeout=60, check=False).returncode == 0:
        return None
    print(f"=== starting services ({SERVICES}) with scripts/services.sh up", flush=True)
    done = subprocess.run([script, "up"], env=env, timeout=900, check=False)
    return None if done.returncode == 0 else f"scripts/services.sh up failed (exit {done.returncode})"


def run_figure(name: str, argv: list[str], timeout_s: float, quiet_timeout_s: float) -> tuple[int, str]:
    """Run ``python -m bench.<name> argv`` with its output shown; returns (exit code, result line)."""
    busy = wait_quiet(timeout_s=quiet_timeout_s)
    print(f"\n=== {name}: bench.{name} {' '.join(argv)}  (machine busy {busy:.2f} cores before start)", flush=True)
    t0 = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        watchdog = threading.Timer(timeout_s, proc.kill)  # a figure that hangs is killed, and its output ends
        watchdog.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        code = proc.wait()
        watchdog.cancel()
    result = next((ln for ln in reversed(lines) if ln.startswith(f"{name}:")), lines[-1] if lines else "(no output)")
    print(f"=== {name}: exit {code} after {time.monotonic() - t0:.0f}s", flush=True)
    return code, result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: every figure with --quick")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the node (pip install py-spy)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(f for f, _, _ in FIGURES)}")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {f for f, _, _ in FIGURES}
    unknown = wanted - {f for f, _, _ in FIGURES}
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(sorted(unknown))}")

    m = machine_info()
    print(
        f"machine: {m['nproc']} x {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, {m['os']}, {m['date']}, "
        f"commit {m['commit']}, load {m['loadavg_1m']:.2f}"
    )
    services_error: str | None = None
    services_checked = False
    results: list[tuple[str, int, str]] = []
    for name, cluster, profiles in FIGURES:
        if name not in wanted:
            continue
        if cluster and not services_checked:
            services_checked, services_error = True, ensure_services()
        if cluster and services_error:
            results.append((name, 1, services_error))
            continue
        quick = args.quick and name not in NO_QUICK
        figure_argv = [*(["--quick"] if quick else []), *(["--profile"] if args.profile and profiles else [])]
        code, line = run_figure(name, figure_argv, timeout_s=240 if args.quick else 900, quiet_timeout_s=10 if args.quick else 90)
        results.append((name, code, line))
    print("\n=== summary")
    for name, code, line in results:
        print(f"{name:>16}: {line if code == 0 else f'FAILED (exit {code}): {line}'}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

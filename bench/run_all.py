"""Run every benchmark, one after another (``make bench``).

    .venv/bin/python -m bench.run_all [--quick] [--profile] [--only ids,memory]

Each benchmark runs in its own process (so one's sockets, threads and memory cannot skew the
next), prints its result line and writes ``bench/results/<name>.json``; this script then prints
the result lines again as a summary. ``--quick`` shortens the runs (a smoke test, not figures
to quote). ``--profile`` adds py-spy profiles of the server (latency and fan-out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT, loadavg, machine_info, wait_quiet

RESULT_PREFIXES = ("ids", "send_latency", "fanout", "memory")


def _run(name: str, args: list[str], timeout: float) -> tuple[str, int, str]:
    busy = wait_quiet()
    print(f"\n=== {name}: {' '.join(args)}  (machine busy {busy:.2f} cores before start)", flush=True)
    t0 = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -9
    summary = next((ln for ln in reversed(lines) if ln.split(":", 1)[0] in RESULT_PREFIXES), lines[-1] if lines else "(no output)")
    print(f"=== {name}: exit {code} after {time.monotonic() - t0:.0f}s", flush=True)
    return name, code, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server in send_latency and fanout")
    parser.add_argument("--only", help="comma-separated subset: ids,send_latency,fanout,memory")
    args = parser.parse_args(argv)

    m = machine_info()
    print(f"machine: {m['nproc']} x {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, {m['os']}, {m['date']}, load {loadavg():.2f}")
    if loadavg() > 0.5:
        print("warning: the machine is already busy (1-minute load > 0.5): latency and fan-out figures will be pessimistic")
    prof = ["--profile"] if args.profile else []
    quick = ["--quick"] if args.quick else []
    plan: list[tuple[str, list[str], float]] = [
        ("ids", ["bench.ids", *quick], 120),
        ("send_latency", ["bench.send_latency", *quick, *prof], 180),
        ("fanout", ["bench.fanout", *quick, *prof], 300),
        ("memory", ["bench.memory", *quick], 300),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        plan = [p for p in plan if p[0] in wanted or p[0].split("_")[0] in wanted]

    results = [_run(*p) for p in plan]
    print("\n=== summary")
    for name, code, line in results:
        print(f"{name:>22}: {line if code == 0 else f'FAILED (exit {code}): {line}'}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

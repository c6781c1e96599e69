"""Run every benchmark, one after another (``make bench``).

    .venv/bin/python -m bench.run_all [--quick] [--profile] [--experiments] [--only ids,memory]

Each benchmark runs in its own process (so one's sockets, threads and memory cannot skew the
next), prints its result line and writes ``bench/results/<name>.json``; this script then prints
the result lines again as a summary. ``--quick`` shortens the runs (a smoke test, not figures
to quote). ``--profile`` adds py-spy profiles of the server (latency and fan-out).
``--experiments`` also runs the fan-out benchmark against prototypes of the proposed server
changes (``bench.experiments``); the uvloop ones need ``uvloop`` importable from
``$BENCH_UVLOOP_PATH`` (``.venv/bin/pip install --target /tmp/bench-uvloop uvloop``), and are
skipped otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

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
    parser.add_argument("--experiments", action="store_true", help="also fan-out against prototypes of proposed changes")
    parser.add_argument("--only", help="comma-separated subset: ids,send_latency,fanout,memory")
    args = parser.parse_args(argv)

    m = machine_info()
    print(f"machine: {m['nproc']} x {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, {m['os']}, {m['date']}, load {loadavg():.2f}")
    if loadavg() > 0.5:
        print("warning: the machine is already busy (1-minute load > 0.5): latency and fan-out figures will be pessimistic")
    prof = ["--profile"] if args.profile else []
    plan: list[tuple[str, list[str], float]] = [
        ("ids", ["bench.ids", *(["--rounds", "3", "--per-round", "500000"] if args.quick else [])], 120),
        ("send_latency", ["bench.send_latency", *(["--duration", "5", "--warmup", "1"] if args.quick else []), *prof], 180),
        ("fanout", ["bench.fanout", *(["--rates", "10,50", "--step", "4", "--no-bisect"] if args.quick else []), *prof], 300),
        ("memory", ["bench.memory", *(["--connections", "1000", "--no-deflate-compare"] if args.quick else [])], 300),
    ]
    if args.experiments:
        uv = os.environ.get("BENCH_UVLOOP_PATH", "/tmp/bench-uvloop")
        has_uvloop = (Path(uv) / "uvloop").is_dir()
        variants = [("rawsend", "--patch rawsend", None), ("fastpath", "--patch fastpath", None)]
        if has_uvloop:
            variants += [("uvloop", "--loop uvloop", uv), ("fastpath_uvloop", "--patch fastpath --loop uvloop", uv)]
        else:
            print(f"note: no uvloop under {uv}: the uvloop variants are skipped")
        for name, variant, pp in variants:
            cmd = ["bench.fanout", "--name", f"fanout_{name}", "--variant", variant, *prof]
            if pp:
                cmd += ["--server-pythonpath", pp]
            plan.append((f"fanout_{name}", cmd, 300))
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

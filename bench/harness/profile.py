"""``--profile``: sample the node with py-spy during a measured window and rank its functions.

py-spy is not a project dependency (``.venv/bin/pip install py-spy``). The raw stacks stay in
``bench/results/<name>.pyspy.txt`` for any flame-graph tool (speedscope, inferno).
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness.measure import RESULTS

# Leaf frames that mean "waiting", not working (py-spy's --nonblocking mode cannot always tell).
IDLE_LEAVES = (
    "EpollSelector.select ",
    "select (selectors",
    "Condition.wait ",
    "Queue.get ",
    "Event.wait (threading",
    "_worker (concurrent",
    "wait (threading",
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class PySpy:
    """``py-spy record`` of one process for ``seconds``, started at once."""

    def __init__(self, pid: int, seconds: float, name: str, *, rate: int = 250) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.raw = RESULTS / f"{name}.pyspy.txt"
        cmd = [
            exe,
            "record",
            "-p",
            str(pid),
            "-d",
            str(math.ceil(seconds)),
            "-r",
            str(rate),
            "--threads",
            "--nonblocking",
            "-f",
            "raw",
            "-o",
            str(self.raw),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.seconds = seconds

    def summary(self, top: int = 25) -> dict[str, Any]:
        """Wait for the recording to end (bounded) and rank its working samples."""
        try:
            self.proc.wait(self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(10)
        return summarize(self.raw, top=top)


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            return f"{m.group('func')} ({path.split(marker, 1)[1]})"
    return f"{m.group('func')} ({'/'.join(Path(path).parts[-2:])})"


def summarize(path: Path, *, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares per function of the *working* samples (idle waits left out),
    and the share of each thread, from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = 0
    for line in path.read_text().splitlines() if path.exists() else ():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        thread, *frames = stack.split(";")
        frames = [_short(f) for f in frames]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            idle += int(n)
            continue
        threads[re.sub(r" ?\(?0x[0-9a-f]+\)?|\(\d+\): ", "", thread).strip().strip('"') or thread] += int(n)
        if frames:
            own[frames[-1]] += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
    total = sum(threads.values())

    def ranked(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100 * v / total, 1)) for name, v in c.most_common(k)] if total else []

    return {
        "samples_working": total,
        "samples_idle": idle,
        "threads_pct": dict(ranked(threads, 20)),
        "self_pct": ranked(own, top),
        "inclusive_pct": ranked(inclusive, top),
    }


def print_profile(summary: dict[str, Any], top: int = 15) -> None:
    print(
        f"  py-spy: {summary['samples_working']} working samples ({summary['samples_idle']} idle left out); "
        f"by thread: {summary['threads_pct']}"
    )
    for title, key in (("top self time", "self_pct"), ("top inclusive time", "inclusive_pct")):
        print(f"  {title}:")
        for name, pct in summary[key][:top]:
            print(f"    {pct:5.1f}%  {name}")

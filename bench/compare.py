"""The same figures against two commits in one run, interleaved, side by side.

    .venv/bin/python -m bench.compare --base main~5 --head main fanout send_latency
    .venv/bin/python -m bench.compare --base 35ba22f --head HEAD --rounds 3 "fanout --senders 1 --heartbeat-s 2.5"

Each commit is checked out into a temporary detached worktree (``git worktree add --detach``,
removed at the end). The figure scripts and the load generator are this tree's; only the node
comes from the commit under test: it is started as ``python -m chat serve`` with its working
directory in that commit's worktree (and the same virtualenv), so it imports that commit's
``chat``. The figures rely on nothing but ``chat serve``, ``chat migrate``, the ``CHAT_*``
variables, the HTTP API and the WebSocket protocol, so any commit that speaks docs/protocol.md
can be measured. Parts of a figure that run the store inside the benchmark process (the
store-alone windows of ``history_read`` and ``store_throughput``) are skipped.

Runs alternate — base, head, base, head … (``--rounds`` pairs per figure) — each after a bounded
wait for an idle machine, so slow drift of a shared machine hits both sides alike. A figure may
carry its own options in one quoted word. The table shows each side's median over its rounds
(every run in brackets) and head/base; run-to-run spread is the noise to read it against.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.harness.measure import RESULTS, ROOT, wait_quiet, write_result
from bench.run_all import FIGURES

SIDES = ("base", "head")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120).stdout.strip()


@contextlib.contextmanager
def worktrees(revs: dict[str, str]) -> Iterator[dict[str, Path]]:
    """A temporary detached worktree per side; removed afterwards, whatever happens."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    trees: dict[str, Path] = {}
    try:
        for side, rev in revs.items():
            trees[side] = tmp / side
            git("worktree", "add", "--detach", str(trees[side]), rev)
            found = subprocess.run(
                [sys.executable, "-c", "import chat; print(chat.__file__)"],
                cwd=trees[side],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            if not Path(found.stdout.strip()).is_relative_to(trees[side]):
                raise RuntimeError(f"a node started in {trees[side]} would import {found.stdout.strip()}, not that commit's chat")
        yield trees
    finally:
        for tree in trees.values():
            with contextlib.suppress(subprocess.CalledProcessError):
                git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


def run_once(figure: list[str], tree: Path, name: str, quick: bool, timeout_s: float) -> dict[str, Any] | None:
    """One figure against one tree; its headline, or None when it failed."""
    argv = [
        sys.executable,
        "-m",
        f"bench.{figure[0]}",
        *figure[1:],
        "--checkout",
        str(tree),
        "--name",
        name,
        *(["--quick"] if quick else []),
    ]
    print(f"\n=== {name}: {shlex.join(argv[2:])}", flush=True)
    try:
        done = subprocess.run(argv, cwd=ROOT, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"=== {name}: timed out after {timeout_s:.0f}s")
        return None
    if done.returncode:
        print(f"=== {name}: exit {done.returncode}")
        return None
    return dict(json.loads((RESULTS / f"{name}.json").read_text())["headline"])


def table(figure: str, runs: dict[str, list[dict[str, Any] | None]]) -> list[str]:
    """One row per headline metric: median and runs per side, head/base."""
    metrics = next((h for side in SIDES for h in runs[side] if h), {})
    rows = [f"{figure}", f"  {'metric':<34} {'base':>28} {'head':>28} {'head/base':>16}"]
    for metric, spec in metrics.items():
        cells, medians = [], []
        for side in SIDES:
            values = [h[metric]["value"] for h in runs[side] if h and h[metric]["value"] is not None]
            median = statistics.median(values) if values else None
            medians.append(median)
            cells.append(f"{median:,.4g} [{', '.join(f'{v:,.4g}' for v in values)}]" if median is not None else "-")
        ratio = ""
        if medians[0] and medians[1] is not None:
            r = medians[1] / medians[0]
            better = r > 1 if spec["better"] == "higher" else r < 1
            ratio = f"{r:.3f}" + ("" if r == 1 else " (better)" if better else " (worse)")
        rows.append(f"  {metric:<34} {cells[0]:>28} {cells[1]:>28} {ratio:>16}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    parser.add_argument("--head", required=True, help="the commit under test (any git revision)")
    parser.add_argument("--rounds", type=int, default=2, help="base/head pairs per figure (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every figure (a smoke run)")
    parser.add_argument(
        "figures", nargs="+", metavar="FIGURE", help='a figure name, with its own options in one quoted word: "fanout --senders 1"'
    )
    args = parser.parse_args(argv)
    figures = [shlex.split(f) for f in args.figures]
    # ids times this tree's chat.ids inside the benchmark process: there is no node to start from a commit.
    known = {f for f, _, _ in FIGURES} - {"ids"}
    if bad := [f[0] for f in figures if f[0] not in known]:
        parser.error(f"cannot compare {bad}; choose from {sorted(known)}")
    revs = {
        "base": git("rev-parse", "--verify", f"{args.base}^{{commit}}"),
        "head": git("rev-parse", "--verify", f"{args.head}^{{commit}}"),
    }
    print(
        f"compare: base {args.base} = {revs['base'][:10]}, head {args.head} = {revs['head'][:10]}; "
        f"{args.rounds} round(s) of {[shlex.join(f) for f in figures]}"
    )

    runs: dict[str, dict[str, list[dict[str, Any] | None]]] = {shlex.join(f): {s: [] for s in SIDES} for f in figures}
    with worktrees(revs) as trees:
        for k in range(args.rounds):
            for i, figure in enumerate(figures):
                for side in SIDES:
                    wait_quiet(timeout_s=10 if args.quick else 90)
                    headline = run_once(figure, trees[side], f"compare_{i}_{figure[0]}_{side}{k}", args.quick, 300 if args.quick else 900)
                    runs[shlex.join(figure)][side].append(headline)
    lines = [f"base {args.base} ({revs['base'][:10]}) vs head {args.head} ({revs['head'][:10]}), {args.rounds} round(s), medians [runs]:"]
    for title, by_side in runs.items():
        lines += table(title, by_side)
    print("\n" + "\n".join(lines))
    write_result(
        "compare",
        {
            "base": {"rev": args.base, "commit": revs["base"]},
            "head": {"rev": args.head, "commit": revs["head"]},
            "runs": runs,
            "table": lines,
        },
    )
    failed = sum(h is None for by_side in runs.values() for side in SIDES for h in by_side[side])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run a cluster benchmark against a private Cassandra started with a modified cassandra.yaml.

    .venv/bin/python -m bench.cassandra_yaml --set paxos_variant=v2 -- bench.store_throughput --mode store
    .venv/bin/python -m bench.cassandra_yaml --set memtable_allocation_type=offheap_objects -- bench.cluster_latency --rate 500

The shared services are left alone: ``scripts/`` is copied to a temporary directory, the copy's
``cassandra/cassandra.yaml`` gets the ``--set key=value`` lines (replacing an existing
top-level key or appended), and the copy of ``scripts/services.sh`` starts Cassandra alone
(``SERVICES=cassandra``) on ``--port`` (default 19042; storage and JMX ports follow it) with
its own state dir. After ``--warmup`` seconds of LWT + insert load (a fresh JVM is slower until
the JIT has compiled the hot paths), the benchmark runs with ``--cassandra-hosts
127.0.0.1:PORT``; the private instance is stopped and its state dir deleted at the end
(``--keep`` keeps it running for more runs: then stop it with
``CHAT_SERVICES_DIR=DIR CASSANDRA_PORT=PORT SERVICES=cassandra DIR/scripts/services.sh down``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT


def patch_yaml(text: str, settings: list[tuple[str, str]]) -> str:
    for key, value in settings:
        line = f"{key}: {value}"
        pattern = re.compile(rf"^{re.escape(key)}:.*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(line, text)
        else:
            text += f"\n# bench.cassandra_yaml\n{line}\n"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: python -m bench.cassandra_yaml [--set key=value …] [--port N] -- bench.MODULE [args …]")
    split = argv.index("--")
    own, bench_argv = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="top-level cassandra.yaml setting (repeatable)")
    parser.add_argument("--port", type=int, default=19042, help="CQL port of the private instance")
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds of store load before the benchmark (JIT)")
    parser.add_argument("--heap", help="CASSANDRA_HEAP of the private instance (services.sh default: 1g)")
    parser.add_argument("--max-gc-pause-ms", type=int, help="-XX:MaxGCPauseMillis in the *copy* of services.sh (the project's is 300)")
    parser.add_argument("--dir", help="state + scripts dir (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="leave the private instance running")
    args = parser.parse_args(own)
    settings = [tuple(s.split("=", 1)) for s in args.set]

    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-cassandra-"))
    scripts = base / "scripts"
    if not scripts.exists():
        shutil.copytree(ROOT / "scripts", scripts)
    yaml = scripts / "cassandra" / "cassandra.yaml"
    yaml.write_text(patch_yaml((ROOT / "scripts" / "cassandra" / "cassandra.yaml").read_text(), settings))  # type: ignore[arg-type]
    if args.max_gc_pause_ms:
        sh = scripts / "services.sh"
        sh.write_text(re.sub(r"-XX:MaxGCPauseMillis=\d+", f"-XX:MaxGCPauseMillis={args.max_gc_pause_ms}", sh.read_text()))
    env = {**os.environ, "CHAT_SERVICES_DIR": str(base / "state"), "CASSANDRA_PORT": str(args.port), "SERVICES": "cassandra", "PYTHON": sys.executable}
    if args.heap:
        env["CASSANDRA_HEAP"] = args.heap
    hosts = f"127.0.0.1:{args.port}"
    print(f"cassandra_yaml: private Cassandra on {hosts} with {settings or 'the unmodified yaml'}, heap {args.heap or '1g'}, "
          f"MaxGCPauseMillis {args.max_gc_pause_ms or 300} (dir {base})", flush=True)
    subprocess.run([str(scripts / "services.sh"), "up"], env=env, check=True)
    code = 1
    try:
        if args.warmup > 0:
            subprocess.run(
                [sys.executable, "-m", "bench.store_throughput", "--mode", "store", "--cassandra-hosts", hosts, "--levels", "64",
                 "--store-warmup", str(args.warmup), "--store-duration", "1", "--parts", "claim_lwt", "--part-duration", "1",
                 "--serial-duration", "0.2", "--publish-levels", "1", "--name", "cassandra_yaml_warmup"],
                cwd=ROOT, env=os.environ, check=False, stdout=subprocess.DEVNULL,
            )
        tagged = [*bench_argv]
        if "--cassandra-hosts" not in tagged:
            tagged += ["--cassandra-hosts", hosts]
        code = subprocess.run([sys.executable, "-m", *tagged], cwd=ROOT, check=False).returncode
    finally:
        if not args.keep:
            subprocess.run([str(scripts / "services.sh"), "down"], env=env, check=False)
            shutil.rmtree(base, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

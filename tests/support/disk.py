"""A small filesystem of the test's own that it can fill up or make read-only: a real tmpfs.

Mounting needs root (or CAP_SYS_ADMIN); where that is refused the tests that need it are
skipped with the reason, since nothing else reproduces a full disk faithfully (SQLite fails
differently when its WAL index cannot grow than when a page write hits ENOSPC).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class SmallDisk:
    """A mounted tmpfs at ``root``; :meth:`fill` takes every free byte, :meth:`free` gives them back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._filler = root / "filler"

    def fill(self) -> None:
        """Write a file until the filesystem refuses (ENOSPC): no block is left free."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 1):
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self._filler.unlink()

    def read_only(self) -> None:
        _mount("-o", "remount,ro", "tmpfs", str(self.root))

    def writable(self) -> None:
        _mount("-o", "remount,rw", "tmpfs", str(self.root))


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


@contextmanager
def small_disk(root: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """Mount a ``size`` tmpfs at ``root`` for the block; skips the test where mounting is refused."""
    root.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root)]
    result = subprocess.run(mount, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        # Lazy: a process the test started may still hold a file there for a moment.
        subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=30, check=False)

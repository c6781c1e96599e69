from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One embedded node for the module (tests use fresh channels, so they do not interfere)."""
    proc = ServerProcess(tmp_path_factory.mktemp("node")).start()
    yield proc
    proc.kill()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A node of the test's own, for tests that stop or restart it."""
    proc = ServerProcess(tmp_path / "node")
    yield proc
    proc.kill()

"""Shared fixtures. Service-backed fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    from tests.support import services

    services.drop_test_keyspace()

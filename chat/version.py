"""This node's software version, as installed (shown to operators: ``/v1/ops/nodes``, ``/metrics``)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def node_version() -> str:
    """The installed ``chat-server`` distribution's version ("0+unknown" when run from a bare tree)."""
    try:
        return version("chat-server")
    except PackageNotFoundError:
        return "0+unknown"

"""Typed errors of the discovery package, each with a one-line message.

The chat side maps every :class:`DiscoveryError` to its own ``unavailable`` (503) or
``bad_request`` (400) refusal in one place; nothing here knows about HTTP::

    DiscoveryError                    base; ``retry_after_ms`` when waiting may help
    ├── ZooKeeperUnavailable          no session at start, or a call timed out / lost its connection
    ├── DataDirInUse                  embedded mode: another process holds <data_dir>/node.lock
    ├── NoFreeWorkerId                every worker ID 0..1023 is leased by a live node
    ├── LeaseNotHeld                  the worker-ID lease is not (certainly) held right now
    ├── AssignmentUnavailable         no node can take a user now (none live, all full, view too old)
    ├── ConfigRejected                unknown key or bad value; ``problems`` names each; nothing applied
    └── ConfigConflict                a compare-and-set write kept losing to concurrent writers
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Only set where trying again later can succeed; mapped to 503 + Retry-After.
        self.retry_after_ms = retry_after_ms


class ZooKeeperUnavailable(DiscoveryError):
    """ZooKeeper cannot be reached (at start) or did not answer in time."""


class DataDirInUse(DiscoveryError):
    """A second process was started on a data dir that a live node holds."""

    def __init__(self, data_dir: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"data dir {data_dir} is in use by another chat node ({who})")
        self.data_dir = data_dir
        self.pid = pid


class NoFreeWorkerId(DiscoveryError):
    """All worker IDs are leased by live nodes (or none could be claimed in time)."""


class LeaseNotHeld(DiscoveryError):
    """Minting must not go on: the worker-ID lease is not certainly held."""


class AssignmentUnavailable(DiscoveryError):
    """No node can be handed out for a user right now."""


class ConfigRejected(DiscoveryError):
    """A configuration change was refused; ``problems`` has one line per key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ConfigConflict(DiscoveryError):
    """Concurrent writers kept changing the configuration under a compare-and-set."""

"""In-process configuration store (embedded mode), optionally persisted to a JSON file.

The file (e.g. ``<data_dir>/config.json``) is read at start and, on every change, read,
merged and replaced atomically under a lock file (``config.json.lock``), so settings
survive a restart and a tool writing the file meanwhile loses nothing. A running store
does not watch the file: change a running embedded node through its own API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from discovery.config.schema import ConfigSnapshot, Schema, Value, merge
from discovery.config.state import ConfigState, StateBackedStore
from discovery.datadir import file_lock, write_atomic
from discovery.errors import DiscoveryError

IO_TIMEOUT_S = 5.0


class InProcessConfigStore(StateBackedStore):
    def __init__(self, schema: Schema, path: Path | None = None) -> None:
        self.schema = schema
        self.path = path
        self._state = ConfigState(schema)
        self._stored: dict[str, Any] = {}  # the document as written (may hold keys of other versions)
        self._lock = asyncio.Lock()  # one set at a time: read-merge-write must not interleave

    async def start(self) -> None:
        if self.path is not None:
            self._stored = await asyncio.wait_for(asyncio.to_thread(self._read), IO_TIMEOUT_S)
        self._state.apply(self._stored, 0)

    async def close(self) -> None:
        return None

    async def set(self, changes: Mapping[str, object]) -> ConfigSnapshot:
        checked = self.schema.validate(changes)
        async with self._lock:
            if self.path is None:
                stored = merge(self._stored, checked)
                self.schema.check_document(stored)
            else:
                try:
                    stored = await asyncio.wait_for(asyncio.to_thread(self._merge_into_file, checked), IO_TIMEOUT_S)
                except (OSError, TimeoutError) as exc:
                    raise DiscoveryError(f"cannot write {self.path}: {exc}") from None
            self._stored = stored
            return self._state.apply(stored, self._state.current.version + 1)

    def _merge_into_file(self, checked: Mapping[str, Value | None]) -> dict[str, Any]:
        assert self.path is not None
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            stored = merge(self._read(), checked)
            self.schema.check_document(stored)  # refused: nothing written
            write_atomic(self.path, json.dumps(stored, sort_keys=True).encode())
        return stored

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise DiscoveryError(f"{self.path} is not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(raw, dict):
            raise DiscoveryError(f"{self.path} must hold a JSON object")
        return raw

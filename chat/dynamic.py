"""The node's dynamic settings: changed at run time on every node, never with a restart.

Declared here, in one place, with their types, bounds and defaults; stored by the discovery
package's ConfigStore (a watched znode with ZooKeeper, a file in the data dir otherwise);
read with ``chat config get``, changed with ``chat config set KEY VALUE``.
"""

from __future__ import annotations

from discovery.config.schema import Schema

SCHEMA = Schema([])

"""The Cassandra schema: versioned CQL migrations and ``chat migrate``.

Migrations are the packaged files ``chat/store/migrations/NNNN_name.cql``, applied in version
order and recorded in ``schema_migrations`` (version, name, checksum). A lease row
(``schema_lock``, an LWT with a TTL) keeps two nodes from running DDL at once; whoever waited
re-reads the applied versions afterwards. A file changed after it was applied is reported
(checksum), never re-run.

Production runs ``chat migrate`` (:func:`migrate`) before rolling nodes out; a node started with
``CHAT_CASSANDRA_MIGRATE=1`` (development, tests) applies them in its store's ``open()``
through :func:`apply_migrations`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from chat.config import KEYSPACE_NAME
from chat.errors import Unavailable
from chat.store.cassandra_client import CassandraClient

if TYPE_CHECKING:
    from cassandra.cluster import Cluster, Session

    from chat.config import Settings

log = logging.getLogger(__name__)

# Timeouts
MIGRATION_TIMEOUT_S = 180.0  # the whole of one run (DDL waits for schema agreement)
DDL_TIMEOUT_S = 30.0  # one schema statement
LOCK_TTL_S = 120  # the migration lock lease (a crashed migrator releases it by expiry)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.cql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str  # of the file's text: tells a file edited after it was applied


def load_migrations() -> list[Migration]:
    """The packaged ``migrations/NNNN_name.cql`` files, in version order."""
    out = []
    for entry in resources.files("chat.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if not match:
            continue
        text = entry.read_text(encoding="utf-8")
        out.append(Migration(int(match.group(1)), entry.name, tuple(split_cql(text)), hashlib.sha256(text.encode()).hexdigest()[:16]))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {[m.name for m in out]}")
    return out


def split_cql(text: str) -> list[str]:
    """Statements of a CQL file: ``--`` comments dropped, split on ``;`` at line ends."""
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    statements: list[str] = []
    current: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        current.append(line)
        if line.endswith(";"):
            statements.append("\n".join(current).rstrip(";").strip())
            current = []
    if current:
        statements.append("\n".join(current).strip())
    return statements


async def apply_migrations(client: CassandraClient, keyspace: str, replication: str) -> list[str]:
    """Create ``keyspace`` (with ``replication``, a CQL map literal) if needed and apply the
    pending migrations on a connected ``client``; returns the names applied, in order.

    Bounded by :data:`MIGRATION_TIMEOUT_S`; any failure raises :class:`Unavailable`."""
    if not KEYSPACE_NAME.fullmatch(keyspace):
        raise ValueError(f"invalid keyspace name {keyspace!r}")
    timeout_s = client.timeout_s

    def run(cluster: Cluster, session: Session) -> list[str]:
        return _migrate_sync(cluster, session, keyspace, replication, timeout_s)

    return await client.in_thread(run, MIGRATION_TIMEOUT_S, "migrate")


async def migrate(settings: Settings) -> int:
    """``chat migrate``: create the keyspace and apply pending migrations; prints what it did.

    Returns the process exit status (1 when Cassandra could not be reached or refused)."""
    client = CassandraClient(settings.cassandra_hosts, consistency=settings.cassandra_consistency, timeout_s=settings.cassandra_timeout_s)
    try:
        await client.connect()
        names = await apply_migrations(client, settings.cassandra_keyspace, settings.cassandra_replication)
    except Unavailable as exc:
        print(f"chat migrate: {exc.message} (see the log for details)")
        return 1
    finally:
        await client.close()
    for name in names:
        print(f"applied {name}")
    if not names:
        print(f"keyspace {settings.cassandra_keyspace}: schema is up to date")
    return 0


# Blocking: these run in an executor thread.


def _migrate_sync(cluster: Cluster, session: Session, keyspace: str, replication: str, timeout_s: float) -> list[str]:
    """Migration files name tables without a keyspace: they run on a session of their own that
    is bound to it (the request session stays unbound, see ``cassandra_cql``)."""
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication} AND durable_writes = true",
        timeout=DDL_TIMEOUT_S,
    )
    bound = cluster.connect(keyspace)
    try:
        return _apply_sync(bound, timeout_s)
    finally:
        bound.shutdown()


def _apply_sync(session: Session, timeout_s: float) -> list[str]:
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, checksum text, applied_at timestamp)",
        timeout=DDL_TIMEOUT_S,
    )
    session.execute("CREATE TABLE IF NOT EXISTS schema_lock (id int PRIMARY KEY, owner text)", timeout=DDL_TIMEOUT_S)
    migrations = load_migrations()

    def applied() -> dict[int, dict[str, Any]]:
        return {r["version"]: r for r in session.execute("SELECT version, name, checksum FROM schema_migrations", timeout=timeout_s * 5)}

    done = applied()
    for m in migrations:
        if m.version in done and done[m.version]["checksum"] != m.checksum:
            log.warning("migration %s changed after it was applied (checksum %s, now %s)", m.name, done[m.version]["checksum"], m.checksum)
    if all(m.version in done for m in migrations):
        return []
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + MIGRATION_TIMEOUT_S
    while True:
        row = session.execute(
            f"INSERT INTO schema_lock (id, owner) VALUES (0, %s) IF NOT EXISTS USING TTL {LOCK_TTL_S}", (owner,), timeout=timeout_s * 5
        ).one()
        if row["[applied]"] or row["owner"] == owner:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("another node holds the schema migration lock")
        time.sleep(1.0)  # on the executor thread, polling the lease: there is no event to wait for
    names = []
    try:
        done = applied()
        for m in migrations:
            if m.version in done:
                continue
            log.info("applying migration %s (%d statements)", m.name, len(m.statements))
            for statement in m.statements:
                session.execute(statement, timeout=DDL_TIMEOUT_S)
            session.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, toTimestamp(now()))",
                (m.version, m.name, m.checksum),
                timeout=timeout_s * 5,
            )
            names.append(m.name)
    finally:
        session.execute("DELETE FROM schema_lock WHERE id = 0 IF owner = %s", (owner,), timeout=timeout_s * 5)
    return names

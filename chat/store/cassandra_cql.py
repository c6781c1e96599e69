"""The CQL of the Cassandra store's requests, prepared once per open.

``{ks}`` is replaced by the store's keyspace (a validated name) before preparing: the request
session is not bound to a keyspace, so one cluster connection could serve several.
"""

from __future__ import annotations

# A channel's non-empty buckets, and a message partition, between two bounds (both inclusive).
_BUCKET_RANGE = "SELECT bucket FROM {ks}.channel_buckets WHERE channel_id = ? AND bucket >= ? AND bucket <= ?"
_MESSAGE_RANGE = (
    "SELECT message_id, sender, body, client_msg_id FROM {ks}.messages WHERE channel_id = ? AND bucket = ? AND message_id >= ? AND message_id <= ?"
)

# name: (statement, is_idempotent). Reads, plain upserts and deletes, and the message insert
# keyed by its Snowflake ID are idempotent; LWTs never are (the store retries those itself).
STATEMENTS: dict[str, tuple[str, bool]] = {
    "ping": ("SELECT release_version FROM system.local", True),
    "get_channel": ("SELECT channel_id, kind, name, created_by, created_ts, dm_key FROM {ks}.channels WHERE channel_id = ?", True),
    "put_channel": ("INSERT INTO {ks}.channels (channel_id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?)", True),
    "put_member": ("INSERT INTO {ks}.members_by_channel (channel_id, user_id, joined_ts) VALUES (?, ?, ?)", True),
    "put_user_channel": (
        "INSERT INTO {ks}.channels_by_user (user_id, channel_id, kind, name, created_by, created_ts, dm_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
        True,
    ),
    "del_member": ("DELETE FROM {ks}.members_by_channel WHERE channel_id = ? AND user_id = ?", True),
    "del_user_channel": ("DELETE FROM {ks}.channels_by_user WHERE user_id = ? AND channel_id = ?", True),
    "is_member": ("SELECT user_id FROM {ks}.members_by_channel WHERE channel_id = ? AND user_id = ?", True),
    "list_members": ("SELECT user_id FROM {ks}.members_by_channel WHERE channel_id = ? LIMIT ?", True),
    "count_members": ("SELECT COUNT(*) AS n FROM {ks}.members_by_channel WHERE channel_id = ?", True),
    "user_channels": (
        "SELECT channel_id, kind, name, created_by, created_ts, dm_key FROM {ks}.channels_by_user WHERE user_id = ? AND channel_id <= ? LIMIT ?",
        True,
    ),
    "get_dm": ("SELECT dm_key, channel_id, name, created_by, created_ts, members FROM {ks}.dm_pairs WHERE dm_key = ?", True),
    "claim_dm": (
        "INSERT INTO {ks}.dm_pairs (dm_key, channel_id, name, created_by, created_ts, members) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
        False,
    ),
    "claim_key": (
        "INSERT INTO {ks}.message_keys (channel_id, sender, client_msg_id, message_id, body) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
        False,
    ),
    "put_bucket": ("INSERT INTO {ks}.channel_buckets (channel_id, bucket) VALUES (?, ?)", True),
    "put_message": (
        "INSERT INTO {ks}.messages (channel_id, bucket, message_id, sender, body, client_msg_id) VALUES (?, ?, ?, ?, ?, ?)",
        True,
    ),
    # Clustering order is DESC: the descending reads need no ORDER BY.
    "buckets_desc": (_BUCKET_RANGE, True),
    "buckets_asc": (_BUCKET_RANGE + " ORDER BY bucket ASC", True),
    "messages_desc": (_MESSAGE_RANGE + " LIMIT ?", True),
    "messages_asc": (_MESSAGE_RANGE + " ORDER BY message_id ASC LIMIT ?", True),
    "set_read": ("UPDATE {ks}.read_positions USING TIMESTAMP ? SET message_id = ? WHERE user_id = ? AND channel_id = ?", True),
    "get_read": ("SELECT message_id FROM {ks}.read_positions WHERE user_id = ? AND channel_id = ?", True),
}


def for_keyspace(keyspace: str) -> dict[str, tuple[str, bool]]:
    """:data:`STATEMENTS` with their tables qualified by ``keyspace``."""
    return {name: (cql.format(ks=keyspace), idempotent) for name, (cql, idempotent) in STATEMENTS.items()}

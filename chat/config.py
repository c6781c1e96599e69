"""Settings: parsed once from ``CHAT_*`` environment variables, validated, frozen.

Every field documents its unit and default. Secrets are ``repr=False`` so they never
reach a log line. The presence of a backend's variable selects its real adapter
(``CHAT_CASSANDRA_HOSTS`` → Cassandra, ``CHAT_REDIS_URL`` → Redis,
``CHAT_ZOOKEEPER_HOSTS`` → ZooKeeper); nothing set gives a working single node.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ALLOWED_JWT_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "PS256"})
_SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
_CONSISTENCY_LEVELS = frozenset({"ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"})
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Numbers in the environment: ASCII digits of bounded length only. ``int()`` alone would take
# '٥' (Arabic-Indic 5) or '1_000', and ``float()`` 'nan' or 'inf' (which no range check refuses).
_INT_TEXT = re.compile(r"[0-9]{1,12}")
_DECIMAL_TEXT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
# CHAT_* variables of the project's scripts and tests (scripts/services.sh, tests/): not settings.
_NOT_SETTINGS = ("CHAT_TEST_", "CHAT_SERVICES_DIR", "CHAT_SCREENSHOT")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
# A Cassandra keyspace name: it is written into CQL text, so only names that match this in
# full (fullmatch: ``$`` would let a trailing newline through) are ever used.
KEYSPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


class ConfigError(Exception):
    """Invalid settings; ``problems`` has one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    # Network
    host: str = "127.0.0.1"  # CHAT_HOST
    port: int = 8000  # CHAT_PORT
    public_url: str = ""  # CHAT_PUBLIC_URL: ws(s)://host:port as clients reach this node; default from host/port
    node_id: str = ""  # CHAT_NODE_ID: default hostname-port
    worker_id: int = 0  # CHAT_WORKER_ID: Snowflake worker (0..1023) of an embedded node; ZooKeeper leases one
    capacity: int = 10_000  # CHAT_NODE_CAPACITY: connections this node is sized for (never assigned more)
    data_dir: Path = Path(".chat-data")  # CHAT_DATA_DIR: SQLite file and the dev JWT secret
    environment: str = "development"  # CHAT_ENV: "production" refuses dev conveniences
    allowed_origins: tuple[str, ...] = ()  # CHAT_ALLOWED_ORIGINS: browser origins besides this node's own (chat/browser.py)

    # Operators
    log_format: str = "text"  # CHAT_LOG_FORMAT: "json" (one object per line) or "text"; default json when CHAT_ENV=production
    access_log: bool = False  # CHAT_ACCESS_LOG=1: one line per HTTP request (tokens redacted)
    metrics_token: str = field(default="", repr=False)  # CHAT_METRICS_TOKEN: the scraper's bearer token for /metrics (≥ 32 characters)

    # Authentication
    jwt_secret: str = field(default="", repr=False)  # CHAT_JWT_SECRET (HS*)
    jwt_public_key: str = field(default="", repr=False)  # CHAT_JWT_PUBLIC_KEY: PEM text or @path (RS*/ES*/EdDSA)
    jwt_algorithms: tuple[str, ...] = ("HS256",)  # CHAT_JWT_ALGORITHMS: comma-separated allow-list
    jwt_audience: str = "chat"  # CHAT_JWT_AUDIENCE
    jwt_leeway_s: int = 30  # CHAT_JWT_LEEWAY_S: clock skew tolerated on exp/nbf (≤ 60)
    dev_secret_generated: bool = False  # True when the secret came from the data dir (dev login allowed)
    warnings: tuple[str, ...] = field(default=(), compare=False)  # one line per CHAT_* variable that is no setting

    # Backends (empty = embedded adapter)
    cassandra_hosts: tuple[str, ...] = ()  # CHAT_CASSANDRA_HOSTS: host[:port],…
    cassandra_keyspace: str = "chat"  # CHAT_CASSANDRA_KEYSPACE
    cassandra_consistency: str = "LOCAL_QUORUM"  # CHAT_CASSANDRA_CONSISTENCY
    cassandra_replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"  # CHAT_CASSANDRA_REPLICATION
    cassandra_migrate: bool = False  # CHAT_CASSANDRA_MIGRATE=1: apply migrations at start
    cassandra_timeout_s: float = 2.0  # CHAT_CASSANDRA_TIMEOUT_S: per request
    redis_url: str = field(default="", repr=False)  # CHAT_REDIS_URL (may hold a password)
    zookeeper_hosts: str = ""  # CHAT_ZOOKEEPER_HOSTS: host:port,…[/chroot]
    zookeeper_session_timeout_s: float = 10.0  # CHAT_ZOOKEEPER_SESSION_TIMEOUT_S: how fast a dead node leaves the cluster
    assign_epsilon: float = 0.25  # CHAT_ASSIGN_EPSILON: no node is assigned over (1 + ε) × its share of the load
    assign_pending_ttl_s: float = 5.0  # CHAT_ASSIGN_PENDING_TTL_S: a handed-out assignment counts toward its node this long (or until it connects)

    # Product limits
    group_max_members: int = 100  # CHAT_GROUP_MAX_MEMBERS
    max_message_chars: int = 100_000  # CHAT_MAX_MESSAGE_CHARS (Unicode code points)
    replay_cap: int = 1000  # CHAT_REPLAY_CAP: messages replayed per channel on subscribe+since
    history_max_bytes: int = 1024 * 1024  # CHAT_HISTORY_MAX_BYTES: a history page's messages, encoded (≥ 1 message)
    add_others_per_min: float = 60.0  # CHAT_ADD_OTHERS_PER_MIN: other users one user may add to channels, sustained
    add_others_burst: int = 200  # CHAT_ADD_OTHERS_BURST: … at once (≥ CHAT_GROUP_MAX_MEMBERS - 1: a full group in one go)
    added_by_others_per_day: int = 500  # CHAT_ADDED_BY_OTHERS_PER_DAY: channels others may add one user to per day

    # Per-connection limits
    send_queue_frames: int = 1024  # CHAT_SEND_QUEUE: frames buffered per socket before `resync`
    send_queue_bytes: int = 8 * 1024 * 1024  # CHAT_SEND_QUEUE_BYTES: bytes buffered per socket before `resync`
    rate_per_s: float = 50.0  # CHAT_RATE_PER_S: sustained frames/s per socket
    rate_burst: int = 200  # CHAT_RATE_BURST: token-bucket depth
    user_send_per_s: float = 50.0  # CHAT_USER_SEND_PER_S: messages/s one user may send over all their sockets and HTTP
    user_send_burst: int = 200  # CHAT_USER_SEND_BURST
    user_max_sockets: int = 50  # CHAT_USER_MAX_SOCKETS: sockets one user may hold open on a node
    handshake_per_s: float = 20.0  # CHAT_HANDSHAKE_PER_S: WebSocket handshakes/s per client address
    handshake_burst: int = 100  # CHAT_HANDSHAKE_BURST
    flood_strikes: int = 100  # CHAT_FLOOD_STRIKES: rate-limited frames within one refill of the bucket before 1008
    oversize_strikes: int = 3  # CHAT_OVERSIZE_STRIKES: too_large frames before close 1009

    # Presence
    presence_heartbeat_s: float = 5.0  # CHAT_PRESENCE_HEARTBEAT_S: clients heartbeat this often (told in `hello`)
    presence_timeout_s: float = 30.0  # CHAT_PRESENCE_TIMEOUT_S: a device without a heartbeat this long is offline (≥ 2 heartbeats)
    presence_fanout_max: int = 100  # CHAT_PRESENCE_FANOUT_MAX: channels with more members get no presence pushes

    # Offline notifications (chat/notify): none are enqueued while the URL is unset
    push_webhook_url: str = field(default="", repr=False)  # CHAT_PUSH_WEBHOOK_URL: http(s) URL notifications are POSTed to (may hold a token)
    push_webhook_secret: str = field(default="", repr=False)  # CHAT_PUSH_WEBHOOK_SECRET: HMAC-SHA256 key (≥ 32 chars), required with the URL
    push_max_attempts: int = 15  # CHAT_PUSH_MAX_ATTEMPTS: POSTs per notification before it is given up (1–100)
    push_max_age_s: float = 3600.0  # CHAT_PUSH_MAX_AGE_S: a notification this long after its message is given up (60 s – 7 days)
    push_timeout_s: float = 5.0  # CHAT_PUSH_TIMEOUT_S: one webhook POST, connect to response (0.1–60)

    # Timeouts
    handshake_timeout_s: float = 10.0  # CHAT_HANDSHAKE_TIMEOUT_S: connect → complete request headers (HTTP or WebSocket upgrade)
    ping_interval_s: float = 20.0  # CHAT_PING_INTERVAL_S: server WebSocket pings
    ping_timeout_s: float = 20.0  # CHAT_PING_TIMEOUT_S: no pong within this → close
    drain_grace_s: float = 5.0  # CHAT_DRAIN_GRACE_S: SIGTERM → close sockets → wait this for writes
    store_timeout_s: float = 5.0  # CHAT_STORE_TIMEOUT_S: a store call slower than this is `unavailable`

    @property
    def embedded_store(self) -> bool:
        return not self.cassandra_hosts

    @property
    def push_enabled(self) -> bool:
        """Offline notifications are enqueued and delivered only with a webhook configured."""
        return bool(self.push_webhook_url)

    @property
    def max_frame_bytes(self) -> int:
        """Largest WebSocket frame read: a maximal message with every character JSON-escaped
        (``\\uXXXX`` = 6 bytes per UTF-16 unit, ≤ 12 per code point is the bound, but the
        protocol fixes the cap at 1.25 MiB for 100,000 characters; it scales with the limit)."""
        return max(64 * 1024, int(self.max_message_chars * 1.25 * 1024 * 1024 / 100_000))

    @property
    def ws_url(self) -> str:
        return self.public_url.rstrip("/") + "/v1/ws"

    @property
    def dev_login_enabled(self) -> bool:
        """The web client's "sign in by name" exists only on a development node with a generated secret."""
        return self.environment != "production" and self.dev_secret_generated


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _valid_port(host: str) -> bool:
    """``host``, ``host:port`` or ``[v6]:port`` (an unbracketed v6 address has no port): any port
    is ASCII digits from 1 to 65535 (drivers would otherwise take '٥' as 5, or fail at start)."""
    if host.startswith("["):
        _, _, rest = host.partition("]")
        if not rest:
            return True
        port = rest.removeprefix(":") if rest.startswith(":") else None
    elif host.count(":") == 1:
        port = host.partition(":")[2]
    else:
        return True
    return port is not None and _INT_TEXT.fullmatch(port) is not None and 1 <= int(port) <= 65535


def from_env(env: Mapping[str, str] | None = None, *, create_dev_secret: bool = True) -> Settings:
    """Parse and validate settings; raises :class:`ConfigError` listing every problem.

    Every ``CHAT_*`` variable is read here, unconditionally: the names read are the list of
    known settings (:func:`known_settings`), and any other ``CHAT_*`` name set is reported in
    ``Settings.warnings`` (with the closest known name). Without ``CHAT_JWT_SECRET``, the
    development secret is read from the data dir, and created there only with ``create_dev_secret``.
    """
    return _parse(_ReadsRecorded(os.environ if env is None else env), create_dev_secret=create_dev_secret)


def known_settings() -> frozenset[str]:
    """The name of every ``CHAT_*`` setting: those :func:`from_env` reads."""
    read = _ReadsRecorded({})
    _parse(read, create_dev_secret=False, data_dir_probe=False)
    return frozenset(read.names)


def _parse(read: _ReadsRecorded, *, create_dev_secret: bool, data_dir_probe: bool = True) -> Settings:
    given = read.env
    problems: list[str] = []
    d = Settings()

    def get_int(name: str, default: int, lo: int, hi: int) -> int:
        raw = read.get(name, "").strip()
        if not raw:
            return default
        if not _INT_TEXT.fullmatch(raw):
            problems.append(f"{name}={raw[:40]!r}: not an integer (ASCII digits)")
            return default
        value = int(raw)
        if not lo <= value <= hi:
            problems.append(f"{name}={value}: must be between {lo} and {hi}")
            return default
        return value

    def get_float(name: str, default: float, lo: float, hi: float) -> float:
        raw = read.get(name, "").strip()
        if not raw:
            return default
        if not _DECIMAL_TEXT.fullmatch(raw):
            problems.append(f"{name}={raw[:40]!r}: not a number (ASCII digits, optionally with a decimal point: 2.5)")
            return default
        value = float(raw)
        if not lo <= value <= hi:
            problems.append(f"{name}={value}: must be between {lo} and {hi}")
            return default
        return value

    host = read.get("CHAT_HOST", d.host).strip() or d.host
    port = get_int("CHAT_PORT", d.port, 0, 65535)
    public_url = read.get("CHAT_PUBLIC_URL", "").strip()
    if public_url and not re.match(r"^(ws|wss|http|https)://", public_url):
        problems.append(f"CHAT_PUBLIC_URL={public_url!r}: must start with ws://, wss://, http:// or https://")
    if not public_url:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        public_url = f"ws://{shown}:{port}"
    public_url = re.sub(r"^http", "ws", public_url)
    node_id = read.get("CHAT_NODE_ID", "").strip() or f"{socket.gethostname()}-{port}"
    if not _NODE_ID_RE.match(node_id):
        problems.append(f"CHAT_NODE_ID={node_id!r}: 1-64 characters of [A-Za-z0-9_.-]")
    environment = read.get("CHAT_ENV", d.environment).strip().lower() or d.environment
    if environment not in ("development", "production"):
        problems.append(f"CHAT_ENV={environment!r}: must be 'development' or 'production'")
    log_format = read.get("CHAT_LOG_FORMAT", "").strip().lower() or ("json" if environment == "production" else "text")
    if log_format not in ("json", "text"):
        problems.append(f"CHAT_LOG_FORMAT={log_format[:20]!r}: must be 'json' or 'text'")
    access_log = read.get("CHAT_ACCESS_LOG", "").strip().lower()
    if access_log not in ("", "0", "1", "true", "false", "yes", "no"):
        problems.append(f"CHAT_ACCESS_LOG={access_log[:20]!r}: must be 1 or 0")
    metrics_token = read.get("CHAT_METRICS_TOKEN", "").strip()
    if metrics_token and (len(metrics_token) < 32 or not metrics_token.isascii() or not metrics_token.isprintable()):
        problems.append("CHAT_METRICS_TOKEN: must be at least 32 printable ASCII characters (use `openssl rand -hex 32`)")

    algorithms = _split(read.get("CHAT_JWT_ALGORITHMS", "")) or d.jwt_algorithms
    for alg in algorithms:
        if alg not in ALLOWED_JWT_ALGORITHMS:
            problems.append(f"CHAT_JWT_ALGORITHMS: {alg!r} is not supported (choose from {', '.join(sorted(ALLOWED_JWT_ALGORITHMS))})")
    secret = read.get("CHAT_JWT_SECRET", "")
    public_key = read.get("CHAT_JWT_PUBLIC_KEY", "").strip()
    if public_key.startswith("@"):
        try:
            public_key = Path(public_key[1:]).read_text()
        except OSError as exc:
            problems.append(f"CHAT_JWT_PUBLIC_KEY: cannot read {public_key[1:]!r}: {exc.strerror}")
            public_key = ""
    if secret and len(secret) < 32:
        problems.append("CHAT_JWT_SECRET: must be at least 32 characters (use `openssl rand -hex 32`)")
    symmetric = [a for a in algorithms if a in _SYMMETRIC]
    asymmetric = [a for a in algorithms if a in ALLOWED_JWT_ALGORITHMS and a not in _SYMMETRIC]
    if symmetric and asymmetric:
        # One key type per deployment: mixing lets an attacker sign HS256 with the public key.
        problems.append("CHAT_JWT_ALGORITHMS: do not mix HMAC (HS*) and public-key algorithms")
    if asymmetric and not public_key:
        problems.append(f"CHAT_JWT_PUBLIC_KEY is required for {', '.join(asymmetric)}")

    data_dir = Path(read.get("CHAT_DATA_DIR", "").strip() or d.data_dir)
    dev_generated = False
    if symmetric and not secret and environment == "production":
        problems.append("CHAT_JWT_SECRET is required when CHAT_ENV=production (no generated development secret)")

    consistency = (read.get("CHAT_CASSANDRA_CONSISTENCY", "").strip() or d.cassandra_consistency).upper()
    if consistency not in _CONSISTENCY_LEVELS:
        problems.append(f"CHAT_CASSANDRA_CONSISTENCY={consistency!r}: one of {', '.join(sorted(_CONSISTENCY_LEVELS))}")
    keyspace = read.get("CHAT_CASSANDRA_KEYSPACE", "").strip() or d.cassandra_keyspace
    if not KEYSPACE_NAME.fullmatch(keyspace):
        problems.append(f"CHAT_CASSANDRA_KEYSPACE={keyspace!r}: letters, digits and _ (≤ 48, starting with a letter)")
    allowed_origins = _split(read.get("CHAT_ALLOWED_ORIGINS", ""))
    for origin in allowed_origins:
        if not _ORIGIN.fullmatch(origin):
            problems.append(f"CHAT_ALLOWED_ORIGINS: {origin[:80]!r} is not an origin like https://chat.example.com or http://127.0.0.1:8000")
    zookeeper_hosts = read.get("CHAT_ZOOKEEPER_HOSTS", "").strip()
    if zookeeper_hosts:
        from discovery.zk import parse_hosts

        try:
            parse_hosts(zookeeper_hosts)
        except ValueError as exc:
            problems.append(f"CHAT_ZOOKEEPER_HOSTS: {exc}")
    push_url = read.get("CHAT_PUSH_WEBHOOK_URL", "").strip()
    push_secret = read.get("CHAT_PUSH_WEBHOOK_SECRET", "")
    if push_url:
        try:
            parts = urlsplit(push_url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:  # a malformed host or port
            usable = False
        if not usable:
            problems.append("CHAT_PUSH_WEBHOOK_URL: must be an http:// or https:// URL with a host")
        if not push_secret:
            problems.append("CHAT_PUSH_WEBHOOK_SECRET is required when CHAT_PUSH_WEBHOOK_URL is set (every notification is signed with it)")
        elif len(push_secret) < 32:
            problems.append("CHAT_PUSH_WEBHOOK_SECRET: must be at least 32 characters (use `openssl rand -hex 32`)")
    redis_url = read.get("CHAT_REDIS_URL", "").strip()
    if redis_url and not re.match(r"^(redis|rediss|unix)://", redis_url):
        problems.append("CHAT_REDIS_URL: must start with redis://, rediss:// or unix://")
    elif redis_url and not _valid_port(urlsplit(redis_url).netloc.rpartition("@")[2]):
        problems.append("CHAT_REDIS_URL: the port must be a number from 1 to 65535")  # the URL may hold a password: not echoed
    cassandra_hosts = _split(read.get("CHAT_CASSANDRA_HOSTS", ""))
    for entry in cassandra_hosts:
        if not _valid_port(entry):
            problems.append(f"CHAT_CASSANDRA_HOSTS: {entry[:80]!r}: host[:port] with a port from 1 to 65535")

    settings_kwargs = dict(
        host=host,
        port=port,
        public_url=public_url,
        node_id=node_id,
        worker_id=get_int("CHAT_WORKER_ID", d.worker_id, 0, 1023),
        data_dir=data_dir,
        environment=environment,
        allowed_origins=allowed_origins,
        log_format=log_format,
        access_log=access_log in ("1", "true", "yes"),
        metrics_token=metrics_token,
        jwt_public_key=public_key,
        jwt_algorithms=algorithms,
        jwt_audience=read.get("CHAT_JWT_AUDIENCE", "").strip() or d.jwt_audience,
        jwt_leeway_s=get_int("CHAT_JWT_LEEWAY_S", d.jwt_leeway_s, 0, 60),
        cassandra_hosts=cassandra_hosts,
        cassandra_keyspace=keyspace,
        cassandra_consistency=consistency,
        cassandra_replication=read.get("CHAT_CASSANDRA_REPLICATION", "").strip() or d.cassandra_replication,
        cassandra_migrate=read.get("CHAT_CASSANDRA_MIGRATE", "").strip().lower() in ("1", "true", "yes"),
        cassandra_timeout_s=get_float("CHAT_CASSANDRA_TIMEOUT_S", d.cassandra_timeout_s, 0.05, 60),
        redis_url=redis_url,
        zookeeper_hosts=zookeeper_hosts,
        zookeeper_session_timeout_s=get_float("CHAT_ZOOKEEPER_SESSION_TIMEOUT_S", d.zookeeper_session_timeout_s, 2, 600),
        assign_epsilon=get_float("CHAT_ASSIGN_EPSILON", d.assign_epsilon, 0.01, 10),
        assign_pending_ttl_s=get_float("CHAT_ASSIGN_PENDING_TTL_S", d.assign_pending_ttl_s, 0.1, 3600),
        capacity=get_int("CHAT_NODE_CAPACITY", d.capacity, 1, 10_000_000),
        group_max_members=get_int("CHAT_GROUP_MAX_MEMBERS", d.group_max_members, 2, 1_000_000),
        max_message_chars=get_int("CHAT_MAX_MESSAGE_CHARS", d.max_message_chars, 1, 1_000_000),
        replay_cap=get_int("CHAT_REPLAY_CAP", d.replay_cap, 1, 100_000),
        history_max_bytes=get_int("CHAT_HISTORY_MAX_BYTES", d.history_max_bytes, 64 * 1024, 1 << 30),
        add_others_per_min=get_float("CHAT_ADD_OTHERS_PER_MIN", d.add_others_per_min, 0.1, 1_000_000),
        add_others_burst=get_int("CHAT_ADD_OTHERS_BURST", d.add_others_burst, 1, 1_000_000),
        added_by_others_per_day=get_int("CHAT_ADDED_BY_OTHERS_PER_DAY", d.added_by_others_per_day, 1, 100_000_000),
        send_queue_frames=get_int("CHAT_SEND_QUEUE", d.send_queue_frames, 8, 1_000_000),
        send_queue_bytes=get_int("CHAT_SEND_QUEUE_BYTES", d.send_queue_bytes, 64 * 1024, 1 << 31),
        rate_per_s=get_float("CHAT_RATE_PER_S", d.rate_per_s, 0.1, 1_000_000),
        rate_burst=get_int("CHAT_RATE_BURST", d.rate_burst, 1, 1_000_000),
        user_send_per_s=get_float("CHAT_USER_SEND_PER_S", d.user_send_per_s, 0.1, 1_000_000),
        user_send_burst=get_int("CHAT_USER_SEND_BURST", d.user_send_burst, 1, 1_000_000),
        user_max_sockets=get_int("CHAT_USER_MAX_SOCKETS", d.user_max_sockets, 1, 1_000_000),
        handshake_per_s=get_float("CHAT_HANDSHAKE_PER_S", d.handshake_per_s, 0.1, 1_000_000),
        handshake_burst=get_int("CHAT_HANDSHAKE_BURST", d.handshake_burst, 1, 1_000_000),
        flood_strikes=get_int("CHAT_FLOOD_STRIKES", d.flood_strikes, 1, 1_000_000),
        oversize_strikes=get_int("CHAT_OVERSIZE_STRIKES", d.oversize_strikes, 1, 1000),
        presence_heartbeat_s=get_float("CHAT_PRESENCE_HEARTBEAT_S", d.presence_heartbeat_s, 0.1, 3600),
        presence_timeout_s=get_float("CHAT_PRESENCE_TIMEOUT_S", d.presence_timeout_s, 0.2, 86_400),
        presence_fanout_max=get_int("CHAT_PRESENCE_FANOUT_MAX", d.presence_fanout_max, 0, 100_000),
        push_webhook_url=push_url,
        push_webhook_secret=push_secret,
        push_max_attempts=get_int("CHAT_PUSH_MAX_ATTEMPTS", d.push_max_attempts, 1, 100),
        push_max_age_s=get_float("CHAT_PUSH_MAX_AGE_S", d.push_max_age_s, 60, 7 * 86_400),
        push_timeout_s=get_float("CHAT_PUSH_TIMEOUT_S", d.push_timeout_s, 0.1, 60),
        handshake_timeout_s=get_float("CHAT_HANDSHAKE_TIMEOUT_S", d.handshake_timeout_s, 0.1, 600),
        ping_interval_s=get_float("CHAT_PING_INTERVAL_S", d.ping_interval_s, 0.05, 3600),
        ping_timeout_s=get_float("CHAT_PING_TIMEOUT_S", d.ping_timeout_s, 0.05, 3600),
        drain_grace_s=get_float("CHAT_DRAIN_GRACE_S", d.drain_grace_s, 0, 600),
        store_timeout_s=get_float("CHAT_STORE_TIMEOUT_S", d.store_timeout_s, 0.05, 120),
    )
    group_max, burst = settings_kwargs["group_max_members"], settings_kwargs["add_others_burst"]
    if isinstance(group_max, int) and isinstance(burst, int) and burst < group_max - 1:
        problems.append(f"CHAT_ADD_OTHERS_BURST={burst}: at least CHAT_GROUP_MAX_MEMBERS - 1 ({group_max - 1}), or no full group can be created")
    beat, timeout = settings_kwargs["presence_heartbeat_s"], settings_kwargs["presence_timeout_s"]
    if isinstance(beat, float) and isinstance(timeout, float) and timeout < 2 * beat:
        # A device heartbeating on time would go offline whenever one heartbeat came late.
        problems.append(f"CHAT_PRESENCE_TIMEOUT_S={timeout}: must be at least twice CHAT_PRESENCE_HEARTBEAT_S ({beat})")
    if problems:
        raise ConfigError(problems)
    if symmetric and not secret and data_dir_probe:
        secret = load_or_create_dev_secret(data_dir) if create_dev_secret else read_dev_secret(data_dir)
        dev_generated = bool(secret)
    warnings = tuple(unknown_setting(name, read.names) for name in sorted(given) if name.startswith("CHAT_") and name not in read.names)
    return Settings(jwt_secret=secret, dev_secret_generated=dev_generated, warnings=tuple(w for w in warnings if w), **settings_kwargs)  # type: ignore[arg-type]


class _ReadsRecorded:
    """The environment, remembering every name looked up (the known settings)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.names: set[str] = set()

    def get(self, name: str, default: str) -> str:
        self.names.add(name)
        return self.env.get(name, default)


def unknown_setting(name: str, known: Iterable[str]) -> str:
    """The warning for a ``CHAT_*`` variable no setting reads ("" for the project's own tools')."""
    if name.startswith(_NOT_SETTINGS):
        return ""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{name} is not a setting of this node and is ignored{hint}"


def dev_secret_path(data_dir: Path) -> Path:
    return data_dir / "jwt-secret"


def read_dev_secret(data_dir: Path) -> str:
    """The development secret in ``data_dir`` ("" if there is none); never creates one."""
    try:
        return dev_secret_path(data_dir).read_text().strip()
    except FileNotFoundError:
        return ""


def load_or_create_dev_secret(data_dir: Path) -> str:
    """The development HS256 secret shared by ``chat serve`` and ``chat token``.

    Created once, readable by the owner only (0600), kept in the data dir (never in git).
    """
    path = dev_secret_path(data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    # O_EXCL: if two processes race, one creates and the other reads the winner's secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value

"""Wait until a Cassandra node answers a real CQL query; used by scripts/services.sh.

usage: cql_ready.py HOST PORT TIMEOUT_SECONDS [PID]

Runs `SELECT release_version FROM system.local` until it succeeds (prints the version, exits 0),
the timeout passes (exit 1) or the process PID, when given, is gone (exit 2).

Uses the DataStax/Apache cassandra-driver when the running Python has it (the project venv does);
otherwise a minimal native-protocol v4 client from the standard library (STARTUP, then QUERY),
so the check never depends on how far the venv has been set up.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time

QUERY = "SELECT release_version FROM system.local"


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _query_with_driver(host: str, port: int, timeout: float) -> str:
    from cassandra.cluster import Cluster  # type: ignore[import-not-found]
    from cassandra.policies import RoundRobinPolicy  # type: ignore[import-not-found]

    cluster = Cluster(
        [host],
        port=port,
        connect_timeout=timeout,
        control_connection_timeout=timeout,
        load_balancing_policy=RoundRobinPolicy(),
        protocol_version=4,
    )
    try:
        session = cluster.connect()
        row = session.execute(QUERY, timeout=timeout).one()
        return str(row.release_version)
    finally:
        cluster.shutdown()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _frame(opcode: int, body: bytes, stream: int) -> bytes:
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", _recv_exact(sock, 9))
    return opcode, _recv_exact(sock, length)


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _error_text(body: bytes) -> str:
    code = struct.unpack(">i", body[:4])[0]
    (n,) = struct.unpack(">H", body[4:6])
    return f"error 0x{code:04x}: {body[6:6 + n].decode(errors='replace')}"


def _query_plain(host: str, port: int, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        startup = struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0")
        sock.sendall(_frame(0x01, startup, 1))
        opcode, body = _read_frame(sock)
        if opcode != 0x02:  # READY
            raise RuntimeError(_error_text(body) if opcode == 0x00 else f"unexpected opcode {opcode}")
        q = QUERY.encode()
        # <long string query><consistency ONE=0x0001><flags=0>
        sock.sendall(_frame(0x07, struct.pack(">i", len(q)) + q + struct.pack(">HB", 1, 0), 2))
        opcode, body = _read_frame(sock)
        if opcode != 0x08:  # RESULT
            raise RuntimeError(_error_text(body) if opcode == 0x00 else f"unexpected opcode {opcode}")
        kind, flags, cols = struct.unpack(">iii", body[:12])
        if kind != 0x0002:  # Rows
            raise RuntimeError(f"unexpected result kind {kind}")
        pos = 12
        if flags & 0x0002:  # has_more_pages: skip paging state
            (n,) = struct.unpack(">i", body[pos:pos + 4])
            pos += 4 + max(n, 0)
        if not flags & 0x0004:  # no_metadata not set: skip metadata
            if flags & 0x0001:  # global tables spec
                for _ in range(2):
                    (n,) = struct.unpack(">H", body[pos:pos + 2])
                    pos += 2 + n
            for _ in range(cols):
                if not flags & 0x0001:
                    for _ in range(2):
                        (n,) = struct.unpack(">H", body[pos:pos + 2])
                        pos += 2 + n
                (n,) = struct.unpack(">H", body[pos:pos + 2])  # column name
                pos += 2 + n
                pos += 2  # option id (varchar/text: no extra value)
        (rows,) = struct.unpack(">i", body[pos:pos + 4])
        pos += 4
        if rows < 1:
            raise RuntimeError("system.local returned no row")
        (n,) = struct.unpack(">i", body[pos:pos + 4])
        return body[pos + 4:pos + 4 + n].decode()


def main() -> int:
    host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    pid = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
    logging.basicConfig(level=logging.CRITICAL)  # the driver logs every refused connection otherwise
    try:
        import cassandra.cluster  # noqa: F401  # type: ignore[import-not-found]

        query, how = _query_with_driver, "cassandra-driver"
    except ImportError:
        query, how = _query_plain, "plain protocol v4"
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        if not _alive(pid):
            print(f"process {pid} exited; last error: {last}", file=sys.stderr)
            return 2
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"timed out; last error: {last}", file=sys.stderr)
            return 1
        try:
            version = query(host, port, min(10.0, max(left, 1.0)))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
            continue
        print(f"{version} ({how})")
        return 0


if __name__ == "__main__":
    sys.exit(main())

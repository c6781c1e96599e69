"""Issue 12, item 12 (from a newcomer's trial), with the real ``chat`` command: every way a start
fails is one clear line and an exit code of its own; ``chat token`` never makes up a secret the
server does not have; a ``CHAT_*`` typo gets a warning naming the setting meant."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chat.config import dev_secret_path
from chat.errors import ExitCode
from tests.e2e.test_lifecycle import clean_env, run_cli
from tests.support.server import TEST_SECRET, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)


def assert_one_line(stderr: str, starts: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("chat:")]
    assert len(lines) == 1 and lines[0].startswith(starts), stderr
    assert "Traceback" not in stderr and "Application startup failed" not in stderr, stderr


@pytest.mark.parametrize(
    ("backend", "code", "starts"),
    [
        ({"CHAT_REDIS_URL": "redis://:hunter2@127.0.0.1:{port}/0"}, ExitCode.REDIS, "chat: cannot reach Redis at redis://127.0.0.1:"),
        ({"CHAT_CASSANDRA_HOSTS": "127.0.0.1:{port}"}, ExitCode.CASSANDRA, "chat: cannot use Cassandra at 127.0.0.1:"),
        ({"CHAT_ZOOKEEPER_HOSTS": "127.0.0.1:{port}"}, ExitCode.ZOOKEEPER, "chat: cannot join the cluster through ZooKeeper at 127.0.0.1:"),
    ],
    ids=["redis", "cassandra", "zookeeper"],
)
def test_an_unreachable_backend_is_one_line(tmp_path: Path, backend: dict[str, str], code: ExitCode, starts: str) -> None:
    down = free_port()  # nothing listens there
    settings = {k: v.format(port=down) for k, v in backend.items()}
    env = clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(tmp_path), CHAT_PORT=str(free_port()), **settings)
    result = run_cli("serve", env=env, timeout=60)
    assert result.returncode == code, result.stderr
    assert_one_line(result.stderr, starts)
    assert "hunter2" not in result.stderr


def test_a_taken_port_and_a_data_dir_in_use_are_one_line_each(tmp_path: Path) -> None:
    node = ServerProcess(tmp_path / "first").start()
    try:
        taken = run_cli("serve", env=clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(tmp_path / "second"), CHAT_PORT=str(node.port)))
        assert taken.returncode == ExitCode.PORT_IN_USE
        assert_one_line(taken.stderr, f"chat: port {node.port} on 127.0.0.1 is in use")
        shared = run_cli("serve", env=clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(node.data_dir), CHAT_PORT=str(free_port())))
        assert shared.returncode == ExitCode.DATA_DIR
        assert_one_line(shared.stderr, "chat: the data dir ")
        assert f"is in use by another chat node (pid {node.pid})" in shared.stderr and "CHAT_DATA_DIR" in shared.stderr
    finally:
        node.kill()
    # Once the first node is gone, its data dir is free again.
    after = ServerProcess(node.data_dir).start()
    after.kill()


def test_invalid_configuration_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", env=clean_env(CHAT_DATA_DIR=str(tmp_path), CHAT_PORT="٥"))
    assert result.returncode == ExitCode.CONFIG and "CHAT_PORT" in result.stderr and "Traceback" not in result.stderr


def test_chat_token_outside_the_data_dir_creates_nothing_and_says_where_it_looked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-the-repo"
    elsewhere.mkdir()
    result = run_cli("token", "alice", env=clean_env(CHAT_DATA_DIR=str(elsewhere / ".chat-data")))
    assert result.returncode == ExitCode.CONFIG and result.stdout == ""
    assert str(dev_secret_path(elsewhere / ".chat-data")) in result.stderr and "CHAT_DATA_DIR" in result.stderr
    assert not (elsewhere / ".chat-data").exists()


def test_a_misspelt_setting_is_named_with_the_one_meant(tmp_path: Path) -> None:
    env = clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(tmp_path), CHAT_PROT="9000", CHAT_TEST_CHROMIUM="/x")
    result = run_cli("token", "alice", env=env)
    assert result.returncode == 0 and result.stdout.count(".") == 2  # the token still comes
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["chat: warning: CHAT_PROT is not a setting of this node and is ignored; did you mean CHAT_PORT?"]


def test_the_port_is_free_again_after_a_failed_start(tmp_path: Path) -> None:
    """A start refused for a backend releases the port at once (the socket is the node's own)."""
    port = free_port()
    result = run_cli("serve", env=clean_env(CHAT_JWT_SECRET=TEST_SECRET, CHAT_DATA_DIR=str(tmp_path), CHAT_PORT=str(port), CHAT_REDIS_URL=f"redis://127.0.0.1:{free_port()}"))
    assert result.returncode == ExitCode.REDIS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))

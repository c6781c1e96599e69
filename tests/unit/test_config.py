from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from chat.config import ConfigError, from_env, known_settings


def test_defaults_make_a_working_embedded_node(tmp_path: Path) -> None:
    s = from_env({"CHAT_DATA_DIR": str(tmp_path)})
    assert (s.port, s.embedded_store, s.redis_url, s.zookeeper_hosts) == (8000, True, "", "")
    assert s.dev_login_enabled and len(s.jwt_secret) == 64
    assert s.max_frame_bytes == int(1.25 * 1024 * 1024)
    secret = tmp_path / "jwt-secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    # A second process (e.g. `chat token`) reads the same secret.
    assert from_env({"CHAT_DATA_DIR": str(tmp_path)}).jwt_secret == s.jwt_secret


def test_secret_never_in_repr(tmp_path: Path) -> None:
    s = from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_REDIS_URL": "redis://:hunter2@x:6379"})
    assert "k" * 40 not in repr(s) and "hunter2" not in repr(s)
    assert not s.dev_login_enabled


def test_every_problem_gets_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        from_env({
            "CHAT_PORT": "abc",
            "CHAT_GROUP_MAX_MEMBERS": "1",
            "CHAT_JWT_ALGORITHMS": "HS256,none",
            "CHAT_CASSANDRA_CONSISTENCY": "SOMETIMES",
            "CHAT_REDIS_URL": "http://x",
            "CHAT_DATA_DIR": str(tmp_path),
        })
    problems = error.value.problems
    assert len(problems) == 5
    assert any(p.startswith("CHAT_PORT='abc'") for p in problems)
    assert any("'none' is not supported" in p for p in problems)


def test_production_requires_explicit_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        from_env({"CHAT_ENV": "production", "CHAT_DATA_DIR": str(tmp_path)})
    assert error.value.problems == ["CHAT_JWT_SECRET is required when CHAT_ENV=production (no generated development secret)"]
    assert not (tmp_path / "jwt-secret").exists()


def test_public_key_algorithms_need_a_key() -> None:
    with pytest.raises(ConfigError) as error:
        from_env({"CHAT_JWT_ALGORITHMS": "RS256"})
    assert "CHAT_JWT_PUBLIC_KEY is required" in error.value.problems[0]


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError):
        from_env({"CHAT_JWT_SECRET": "short"})


def test_the_add_burst_fits_a_full_group() -> None:
    """A burst of adds below the group size would make full groups impossible to create."""
    with pytest.raises(ConfigError) as error:
        from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_GROUP_MAX_MEMBERS": "500"})
    assert error.value.problems == ["CHAT_ADD_OTHERS_BURST=200: at least CHAT_GROUP_MAX_MEMBERS - 1 (499), or no full group can be created"]
    assert from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_GROUP_MAX_MEMBERS": "500", "CHAT_ADD_OTHERS_BURST": "499"}).add_others_burst == 499


def test_a_misspelt_variable_is_named_with_the_setting_meant(tmp_path: Path) -> None:
    """Issue 12 item 12: unknown CHAT_* variables are no longer ignored silently."""
    s = from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_PROT": "9000", "CHAT_REDIS_UR": "x", "CHAT_NONSENSE": "1", "CHAT_TEST_REDIS_URL": "x"})
    assert s.port == 8000
    assert s.warnings == (
        "CHAT_NONSENSE is not a setting of this node and is ignored",
        "CHAT_PROT is not a setting of this node and is ignored; did you mean CHAT_PORT?",
        "CHAT_REDIS_UR is not a setting of this node and is ignored; did you mean CHAT_REDIS_URL?",
    )


def test_the_readme_lists_every_setting_and_nothing_else() -> None:
    """One list of settings: the names chat/config.py reads; the README's table must match it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = "\n".join(line for line in readme.split("## Configuration", 1)[1].split("\n## ", 1)[0].splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`(CHAT_[A-Z0-9_]+)`", table))
    assert documented == known_settings()


def test_chat_token_settings_never_create_a_secret(tmp_path: Path) -> None:
    s = from_env({"CHAT_DATA_DIR": str(tmp_path / "d")}, create_dev_secret=False)
    assert s.jwt_secret == "" and not s.dev_login_enabled and not (tmp_path / "d").exists()
    made = from_env({"CHAT_DATA_DIR": str(tmp_path / "d")})  # what the server does
    assert from_env({"CHAT_DATA_DIR": str(tmp_path / "d")}, create_dev_secret=False).jwt_secret == made.jwt_secret


def test_presence_timeout_must_cover_two_heartbeats() -> None:
    import pytest

    from chat.config import ConfigError, from_env

    with pytest.raises(ConfigError) as error:
        from_env({"CHAT_JWT_SECRET": "x" * 32, "CHAT_PRESENCE_HEARTBEAT_S": "10", "CHAT_PRESENCE_TIMEOUT_S": "15"})
    assert any("CHAT_PRESENCE_TIMEOUT_S" in p for p in error.value.problems)

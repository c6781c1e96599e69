"""The push webhook settings (chat/config.py): defaults, bounds, the required secret, no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.config import ConfigError, from_env

URL = "https://push.example/hook?token=hunter2"
SECRET = "p" * 32


def settings(tmp_path: Path, **env: str) -> object:
    return from_env({"CHAT_JWT_SECRET": "k" * 40, "CHAT_DATA_DIR": str(tmp_path), **env})


def problems(tmp_path: Path, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        settings(tmp_path, **env)
    return error.value.problems


def test_defaults_enqueue_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (s.push_enabled, s.push_max_attempts, s.push_max_age_s, s.push_timeout_s) == (False, 15, 3600.0, 5.0)  # type: ignore[attr-defined]


def test_a_url_with_its_secret_enables_notifications_and_neither_reaches_repr(tmp_path: Path) -> None:
    s = settings(tmp_path, CHAT_PUSH_WEBHOOK_URL=URL, CHAT_PUSH_WEBHOOK_SECRET=SECRET, CHAT_PUSH_MAX_ATTEMPTS="3", CHAT_PUSH_TIMEOUT_S="0.5")
    assert (s.push_enabled, s.push_max_attempts, s.push_timeout_s) == (True, 3, 0.5)  # type: ignore[attr-defined]
    assert SECRET not in repr(s) and "hunter2" not in repr(s)


def test_the_secret_is_required_with_the_url_in_one_line(tmp_path: Path) -> None:
    assert problems(tmp_path, CHAT_PUSH_WEBHOOK_URL=URL) == [
        "CHAT_PUSH_WEBHOOK_SECRET is required when CHAT_PUSH_WEBHOOK_URL is set (every notification is signed with it)"
    ]
    assert problems(tmp_path, CHAT_PUSH_WEBHOOK_URL=URL, CHAT_PUSH_WEBHOOK_SECRET="short") == [
        "CHAT_PUSH_WEBHOOK_SECRET: must be at least 32 characters (use `openssl rand -hex 32`)"
    ]


@pytest.mark.parametrize("url", ["ftp://push.example/", "push.example/hook", "https://", "http://[::1/x", "https://h:99999/"])
def test_the_url_must_be_http_or_https_with_a_host(tmp_path: Path, url: str) -> None:
    lines = problems(tmp_path, CHAT_PUSH_WEBHOOK_URL=url, CHAT_PUSH_WEBHOOK_SECRET=SECRET)
    assert lines == ["CHAT_PUSH_WEBHOOK_URL: must be an http:// or https:// URL with a host"]


def test_bounds(tmp_path: Path) -> None:
    lines = problems(tmp_path, CHAT_PUSH_MAX_ATTEMPTS="0", CHAT_PUSH_MAX_AGE_S="10", CHAT_PUSH_TIMEOUT_S="61")
    assert [line.split("=")[0] for line in lines] == ["CHAT_PUSH_MAX_ATTEMPTS", "CHAT_PUSH_MAX_AGE_S", "CHAT_PUSH_TIMEOUT_S"]

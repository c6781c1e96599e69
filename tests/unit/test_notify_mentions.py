"""Mention parsing (chat/notify/mentions.py): ``@`` + a user ID, not inside a longer word."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.notify.mentions import MAX_MENTIONS, mentions

USER_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi @bob", ["bob"]),
        ("@bob hi", ["bob"]),
        ("(@bob) [@carol] {@dave}", ["bob", "carol", "dave"]),
        ('hi,@bob! "@carol"? @dave: @erin; @fay/@gus', ["bob", "carol", "dave", "erin", "fay", "gus"]),
        ("thanks @bob.", ["bob"]),
        ("@bob... really", ["bob"]),
        ("@j.r.r-t_1 and @x", ["j.r.r-t_1", "x"]),
        ("@Bob and @bob", ["Bob", "bob"]),  # IDs are case-sensitive
        ("@b @a @b @a", ["b", "a"]),  # once each, in order of first mention
        ("@bob's phone", ["bob"]),
        ("line\n@bob\ttab @carol", ["bob", "carol"]),
        # Not mentions: inside a longer word or an address.
        ("mail alice@example.com", []),
        ("@@bob", []),
        ("x@bob", []),
        ("_@bob -@bob .@bob", []),
        ("é@bob", []),  # a letter of any script joins the word
        ("@bobé", []),
        ("@bob@example.com", []),
        ("@", []),
        ("@ bob", []),
        ("@...", []),
        ("@" + "a" * 65, []),  # longer than a user ID can be
        ("", []),
        ("no at sign", []),
    ],
)
def test_mentions(text: str, expected: list[str]) -> None:
    assert mentions(text) == expected


def test_the_longest_user_id_is_a_mention() -> None:
    assert mentions("@" + "a" * 64) == ["a" * 64]


def test_mentions_per_message_are_capped() -> None:
    text = " ".join(f"@u{i}" for i in range(MAX_MENTIONS + 10))
    assert mentions(text) == [f"u{i}" for i in range(MAX_MENTIONS)]
    assert mentions(text, limit=2) == ["u0", "u1"]
    assert mentions(text, limit=0) == []


@given(st.text(max_size=300))
def test_every_mention_is_a_user_id_written_after_an_at_sign(text: str) -> None:
    for user in mentions(text):
        assert USER_ID.fullmatch(user)
        assert "@" + user in text


@given(
    st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,62}[A-Za-z0-9_\-]", fullmatch=True),
    st.text(max_size=50),
    st.text(max_size=50),
    st.sampled_from([" ", "\n", "(", ",", "!", '"']),
    st.sampled_from([" ", "\n", ")", ",", "!", '"', ". "]),
)
def test_a_user_id_set_apart_is_always_mentioned(user: str, before: str, after: str, left: str, right: str) -> None:
    assert user in mentions(f"{before}{left}@{user}{right}{after}", limit=1000)

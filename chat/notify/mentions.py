"""Mentions in message text (pure).

A mention is ``@`` followed by a user ID (PROTOCOL.md: 1–64 of ``[A-Za-z0-9_.-]``), not inside
a longer word:

* the ``@`` starts the text or follows a character that cannot be part of a word or an
  address — not a letter or digit (any script), not ``_ . - @`` — so ``alice@example.com``
  and ``@@bob`` mention nobody, while ``(@bob)``, ``"@bob"`` and ``hi,@bob`` do;
* the ID is the longest run of ID characters after the ``@``, less any trailing ``.`` (the
  full stop of a sentence: ``thanks @bob.`` mentions ``bob``);
* the run must not go on into a letter or digit outside the ID alphabet, nor into another
  ``@`` (``@bobé``, ``@bob@example.com`` mention nobody), and must be 1–64 characters.

IDs are matched exactly (user IDs are case-sensitive). Each user counts once, in order of first
mention, and at most ``limit`` users per message are returned (the rest are ignored), which
bounds the membership and presence checks one message can cause.
"""

from __future__ import annotations

import re

MAX_MENTIONS = 20  # distinct users one message can notify by mention
MAX_USER_ID = 64

_CANDIDATE = re.compile(r"@([A-Za-z0-9_.\-]+)")
_WORD_JOINERS = frozenset("_.-@")


def _joins(char: str) -> bool:
    """Whether ``char`` next to the mention would make it part of a longer word or address."""
    return char.isalnum() or char in _WORD_JOINERS


def mentions(text: str, limit: int = MAX_MENTIONS) -> list[str]:
    """The users ``text`` mentions, each once, in order of first mention, at most ``limit``."""
    found: dict[str, None] = {}
    if limit <= 0 or "@" not in text:
        return []
    for match in _CANDIDATE.finditer(text):
        start, end = match.span()
        if start > 0 and _joins(text[start - 1]):
            continue
        if end < len(text) and (text[end].isalnum() or text[end] == "@"):
            continue
        user = match.group(1).rstrip(".")
        if not user or len(user) > MAX_USER_ID:
            continue
        found.setdefault(user, None)
        if len(found) >= limit:
            break
    return list(found)

"""Judge a password a person chose: short or common ones can be guessed offline.

An observer who records one session can test guesses against its Hello without
ever talking to the server: one scrypt per guess, and because the scrypt salt is
fixed (a client needs nothing but the password), a dictionary's master keys can
be computed once and tried against every recorded session of every deployment.
Generated passwords (``flyway :8100`` without ``-p``) are 144 random bits, far
out of reach; a chosen one should be long and random. This module only warns.
"""

from __future__ import annotations

import string

__all__ = ["MIN_LENGTH", "weakness"]

MIN_LENGTH = 12

# The most common passwords of public breach lists, and the words people build them from.
_COMMON = frozenset(
    """
    123456 123456789 12345678 12345 1234567 1234567890 111111 000000 123123 654321
    password password1 password123 passw0rd p@ssw0rd qwerty qwerty123 qwertyuiop
    azerty abc123 abcdef iloveyou admin admin123 administrator root toor letmein
    welcome welcome1 monkey dragon master shadow sunshine princess football baseball
    superman batman trustno1 whatever secret secret123 changeme default guest test
    test123 testing login hello hello123 freedom starwars pokemon flower charlie
    michael jennifer jordan hunter hunter2 killer soccer ninja mustang access
    1q2w3e4r 1qaz2wsx zaq12wsx q1w2e3r4 asdfgh asdfghjkl zxcvbnm 666666 888888
    121212 112233 7777777 987654321 11111111 aaaaaa flyway goflyway proxy tunnel
    vpn socks socks5 shadowsocks
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


def weakness(password: str) -> str | None:
    """Say why ``password`` is easy to guess offline, or None when nothing obvious is wrong."""
    folded = password.strip().lower()
    if folded in _COMMON or folded.rstrip(string.digits + "!.") in _COMMON:
        return "it is one of the most common passwords"
    if len(set(folded)) <= 2:
        return "it repeats one or two characters"
    if len(password) < MIN_LENGTH:
        return f"it is short ({len(password)} characters; use {MIN_LENGTH} or more)"
    return None

"""The sealed-datagram scheme (DatagramKeys, DatagramSealer, DatagramOpener, ReplayWindow)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flyway_core.protocol.crypto import (
    DATAGRAM_OVERHEAD,
    DatagramKeys,
    ReplayWindow,
)
from flyway_core.protocol.errors import RemoteProtocolError

MASTER = bytes(range(32))
SALT = bytes(32)
SERVER_SALT = bytes(range(8))


def keys() -> DatagramKeys:
    return DatagramKeys.derive(MASTER, SALT, b"kcp")


def test_a_datagram_opens_once_at_the_other_end() -> None:
    sealer, opener = keys().client_sealer(), keys().server_opener()
    datagram = sealer.seal(b"segments")
    assert len(datagram) == len(b"segments") + DATAGRAM_OVERHEAD
    assert datagram.startswith(keys().session_id)
    assert opener.open(datagram) == b"segments"
    with pytest.raises(RemoteProtocolError, match="replayed"):
        opener.open(datagram)
    back = keys().server_sealer(SERVER_SALT).seal(b"answer")
    assert back.startswith(SERVER_SALT)
    assert keys().client_opener(SERVER_SALT).open(back) == b"answer"


def test_a_reflected_datagram_does_not_open() -> None:
    datagram = keys().client_sealer().seal(b"to the server")
    with pytest.raises(RemoteProtocolError, match="authentication"):
        keys().client_opener(datagram[:8]).open(datagram)  # the client's own, sent back to it
    answer = keys().server_sealer(SERVER_SALT).seal(b"to the client")
    with pytest.raises(RemoteProtocolError, match="authentication"):
        keys().server_opener().open(answer)  # the server's own, sent back to it


def test_a_fresh_server_salt_gives_the_server_a_fresh_key() -> None:
    """A hello replayed to a restarted server: same session salt, yet no key is reused."""
    first = keys().server_sealer(SERVER_SALT).seal(b"same plaintext")
    again = keys().server_sealer(bytes(8)).seal(b"same plaintext")
    assert first[8:] != again[8:]  # same counter 0, different key
    with pytest.raises(RemoteProtocolError):
        keys().client_opener(SERVER_SALT).open(bytes(8) + again[8:])


def test_the_keys_do_not_show_in_their_repr() -> None:
    assert repr(keys()) == f"DatagramKeys(session_id={keys().session_id!r})"


def test_other_salts_labels_and_masters_give_other_keys() -> None:
    base = keys()
    others = [
        DatagramKeys.derive(MASTER, bytes([1]) * 32, b"kcp"),
        DatagramKeys.derive(MASTER, SALT, b"other"),
        DatagramKeys.derive(bytes(32), SALT, b"kcp"),
    ]
    datagram = base.client_sealer().seal(b"x")
    for other in others:
        assert other.session_id != base.session_id
        with pytest.raises(RemoteProtocolError):
            other.server_opener().open(datagram)


def test_truncated_or_flipped_datagrams_do_not_open_and_do_not_burn_the_counter() -> None:
    sealer, opener = keys().client_sealer(), keys().server_opener()
    datagram = sealer.seal(b"payload")
    for bad in (datagram[:-1], datagram[: DATAGRAM_OVERHEAD - 1], b""):
        with pytest.raises(RemoteProtocolError):
            opener.open(bad)
    flipped = bytearray(datagram)
    flipped[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        opener.open(bytes(flipped))
    assert opener.open(datagram) == b"payload"  # the forgeries did not mark its counter seen


def test_reordered_datagrams_open_within_the_window_but_not_behind_it() -> None:
    sealer, opener = keys().client_sealer(), keys().server_opener()
    sent = [sealer.seal(os.urandom(8)) for _ in range(opener.window.size + 10)]
    assert opener.open(sent[-1])
    assert opener.open(sent[20])  # 20 is inside the window behind the newest
    with pytest.raises(RemoteProtocolError, match="too old"):
        opener.open(sent[5])  # 5 fell behind it


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=300))
def test_the_window_accepts_each_counter_at_most_once(counters: list[int]) -> None:
    window, accepted = ReplayWindow(64), set()
    for counter in counters:
        if window.fresh(counter):
            assert counter not in accepted
            window.accept(counter)
            accepted.add(counter)
    assert window._bits < (1 << 64)  # bounded by its size


def test_a_far_future_counter_resets_the_window_without_a_huge_bitmap() -> None:
    window = ReplayWindow()
    for counter in (0, 1, 2):
        window.accept(counter)
    window.accept(2**40)  # before: a shift by 2**40 bits, MemoryError
    assert window.newest == 2**40
    assert not window.fresh(2**40)
    assert window.fresh(2**40 - 1)
    assert not window.fresh(2)  # far behind now: too old to tell
    assert window._bits == 1  # the bitmap stays within the window's size
    window.accept(2**40 + window.size)  # exactly one window ahead: reset too
    assert window._bits == 1
    window.accept(2**40 + window.size - 3)
    assert window._bits.bit_length() <= window.size

"""Offsets: an Outbox keeps what is unacknowledged; a Reassembly gives back the stream once."""

from __future__ import annotations

import asyncio
import itertools

from flyway_http_post.offsets import MAX_PIECES, Outbox, Reassembly
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4000),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
    order=st.randoms(use_true_random=False),
    repeats=st.lists(st.integers(min_value=0, max_value=30), max_size=10),
)
def test_any_order_and_any_duplicates_give_the_stream_once(
    data: bytes, cuts: list[int], order: object, repeats: list[int]
) -> None:
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(edges)]
    pieces += [pieces[i % len(pieces)] for i in repeats]  # retried requests, resent envelopes
    order.shuffle(pieces)  # type: ignore[attr-defined]
    reassembly, out = Reassembly(limit=1 << 20), []
    for offset, piece in pieces:
        released = reassembly.add(offset, piece)
        assert released is not None
        out += released
    assert b"".join(out) == data
    assert reassembly.next == len(data)
    assert reassembly.waiting == 0


def test_a_piece_too_far_ahead_is_refused_not_kept() -> None:
    reassembly = Reassembly(limit=100)
    assert reassembly.add(90, b"x" * 20) is None
    assert reassembly.waiting == 0
    assert reassembly.add(50, b"y" * 10) == []
    assert reassembly.waiting == 10
    assert reassembly.add(0, b"z" * 50) == [b"z" * 50, b"y" * 10]
    assert reassembly.next == 60


def test_overlapping_and_repeated_early_pieces_are_held_once() -> None:
    """400 far-ahead pieces of 1 MiB, each starting 1000 bytes after the last: before,
    each was kept whole (397 MiB); now the bytes they cover are held once, within the cap."""
    piece = 1 << 20
    reassembly = Reassembly(limit=16 << 20, cap=8 << 20)
    refused = 0
    for i in range(400):
        if reassembly.add(1 + 1000 * i, b"x" * piece) is None:
            refused += 1
    assert reassembly.held == 1000 * 399 + piece  # what they cover, once
    assert refused == 0
    for _ in range(50):  # the same again: nothing more is held
        assert reassembly.add(1 + 1000 * 7, b"x" * piece) == []
    assert reassembly.held == 1000 * 399 + piece
    released = reassembly.add(0, b"y")
    assert released is not None
    assert b"".join(released) == b"y" + b"x" * (1000 * 399 + piece)
    assert (reassembly.held, reassembly.next) == (0, 1 + 1000 * 399 + piece)


def test_an_early_piece_past_the_cap_is_refused_and_the_rest_still_flows() -> None:
    reassembly = Reassembly(limit=1000, cap=100)
    assert reassembly.add(10, b"a" * 60) == []
    assert reassembly.add(200, b"b" * 60) is None  # 120 > 100: not kept
    assert reassembly.held == 60
    assert reassembly.add(40, b"c" * 60) == []  # overlaps: only its last 30 bytes are new
    assert reassembly.held == 90
    assert reassembly.add(0, b"d" * 10) == [b"d" * 10, b"a" * 60, b"c" * 30]
    assert (reassembly.held, reassembly.next) == (0, 100)
    assert reassembly.add(200, b"b" * 60) == []  # room again


def test_tiny_early_pieces_are_capped_by_count() -> None:
    reassembly = Reassembly(limit=1 << 30)
    for i in range(MAX_PIECES):
        assert reassembly.add(10 + 2 * i, b"z") == []
    assert reassembly.add(10 + 2 * MAX_PIECES, b"z") is None


async def test_an_outbox_keeps_bytes_until_acknowledged_and_holds_writers_past_its_limit() -> None:
    outbox = Outbox(limit=10)
    outbox.append(b"0123456789ab")
    assert (outbox.base, outbox.end, len(outbox)) == (0, 12, 12)
    assert outbox.slice(4, 8) == b"4567"
    waiter = asyncio.create_task(outbox.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()  # 12 > 10: the writer waits
    outbox.acknowledge(5)
    await asyncio.wait_for(waiter, 1)
    assert (outbox.base, len(outbox)) == (5, 7)
    assert outbox.slice(0, 8) == b"567"  # what was acknowledged is gone
    outbox.acknowledge(3)  # an old acknowledgement changes nothing
    assert outbox.base == 5
    outbox.append(b"x" * 20)
    outbox.close()
    await asyncio.wait_for(outbox.wait_room(), 1)  # closed: nobody waits any more

"""Reassembly: pieces in any order, any number of times, give back the stream exactly once."""

from __future__ import annotations

import itertools

from flyway_http_post.reassembly import Reassembly
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

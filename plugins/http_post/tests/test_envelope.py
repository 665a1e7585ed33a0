"""Envelopes: sealed, self-delimiting, and nothing an observer could pin a session on."""

from __future__ import annotations

import os

import pytest
from flyway_http_post.envelope import (
    ENVELOPE_OVERHEAD,
    MAX_PADDING,
    EnvelopeKeys,
    Kind,
    Request,
    RequestFlags,
    Response,
    Status,
)
from hypothesis import given, settings
from hypothesis import strategies as st

KEYS = EnvelopeKeys(b"k" * 32)
SESSION = bytes(range(16))


def test_a_request_opens_to_what_was_sealed() -> None:
    request = Request(Kind.SEND, SESSION, up_offset=123, down_ack=456, flags=RequestFlags.REWIND)
    body = KEYS.seal_request(request, b"payload", padding=17)
    assert KEYS.open_request(body) == (request, b"payload")


def test_another_password_opens_nothing() -> None:
    body = KEYS.seal_request(Request(Kind.POLL, SESSION))
    assert EnvelopeKeys(b"x" * 32).open_request(body) is None


def test_every_flipped_bit_anywhere_in_the_body_is_refused() -> None:
    """The whole envelope is authenticated: header, payload, padding and both seals."""
    request = Request(Kind.SEND, SESSION, up_offset=7, down_ack=9, number=3)
    body = bytearray(KEYS.seal_request(request, b"abc" * 10, padding=5))
    assert KEYS.open_request(bytes(body)) == (request, b"abc" * 10)
    for index in range(len(body)):
        for bit in (0x01, 0x80):
            body[index] ^= bit
            assert KEYS.open_request(bytes(body)) is None, index
            body[index] ^= bit


def test_a_response_with_a_flipped_payload_bit_is_refused_and_one_for_another_request_too() -> None:
    body = bytearray(KEYS.seal_response(Response(Status.OK, number=4), b"payload", padding=3))
    assert KEYS.reader(4).feed(bytes(body)) == [(Response(Status.OK, number=4), b"payload")]
    with pytest.raises(ValueError, match="request 4, not 5"):
        KEYS.reader(5).feed(bytes(body))
    body[-40] ^= 1  # in the payload or padding: only the final seal can tell
    with pytest.raises(ValueError, match="authentication"):
        KEYS.reader(4).feed(bytes(body))


def test_the_envelope_overhead_bounds_what_our_bodies_add() -> None:
    payload = b"p" * 1000
    for kind in Kind:
        body = KEYS.seal_request(Request(kind, SESSION), payload, padding=MAX_PADDING)
        assert len(body) - len(payload) <= ENVELOPE_OVERHEAD
    response = KEYS.seal_response(Response(Status.OK), payload, padding=MAX_PADDING)
    assert len(response) - len(payload) <= ENVELOPE_OVERHEAD


def test_foreign_bodies_are_not_ours() -> None:
    for body in (b"", b"a=1&b=2", os.urandom(73), os.urandom(5000), b"{" + b"x" * 100 + b"}"):
        assert KEYS.open_request(body) is None


def test_the_session_id_never_shows_in_the_clear() -> None:
    bodies = [KEYS.seal_request(Request(Kind.POLL, SESSION, down_ack=i)) for i in range(50)]
    for body in bodies:
        assert SESSION not in body
    # No byte position holds the same value across requests of one session.
    for position in range(min(map(len, bodies))):
        assert len({body[position] for body in bodies}) > 1


def test_padding_varies_the_length() -> None:
    sizes = {len(KEYS.seal_request(Request(Kind.POLL, SESSION), padding=p)) for p in (0, 9, 200)}
    assert len(sizes) == 3


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=997), max_size=20),
)
def test_a_streamed_response_parses_the_same_in_any_chunking(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(
        KEYS.seal_response(Response(Status.OK, up_ack=i, down_offset=10 * i), p, padding=i)
        for i, p in enumerate(payloads)
    )
    reader, got, position = KEYS.reader(), [], 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[position : position + cut])
        position += cut
        if position >= len(stream):
            break
    got += reader.feed(stream[position:])
    assert [payload for _, payload in got] == payloads
    assert [response.down_offset for response, _ in got] == [10 * i for i in range(len(payloads))]
    assert reader.pending == 0

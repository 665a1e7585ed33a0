"""Fuzzing envelopes: a body opens as a genuine request or as None; a response is read or refused.

``open_request`` answers None for whatever is not ours, and ``ResponseReader.feed`` raises
ValueError; nothing else may escape either. The bodies are random bytes, damaged copies of
valid envelopes (``flyway_core.testing.mutations``) and, past the AEAD, headers sealed with
the right key whose fields are garbage. Only the public API is used (``seal_request``,
``open_request``, ``seal_response``, ``reader().feed``), so the tests hold across changes to
the header's layout.
"""

from __future__ import annotations

import os

import pytest
from flyway_http_post.envelope import (
    MAX_ENVELOPE_PAYLOAD,
    EnvelopeKeys,
    Kind,
    Request,
    RequestFlags,
    Response,
    Status,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flyway_core.protocol import PacketSealer
from flyway_core.protocol.crypto import PACKET_OVERHEAD
from flyway_core.testing.mutations import cuts, mutations_of, pieces

# FLYWAY_FUZZ_EXAMPLES=20000 for a long run; the suite's default keeps this file to seconds
FUZZ = settings(
    max_examples=int(os.environ.get("FLYWAY_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MASTER = b"k" * 32
KEYS = EnvelopeKeys(MASTER)
OTHER = EnvelopeKeys(b"x" * 32)
SESSION = bytes(range(16))
LABEL = b"http envelope"  # docs/PROTOCOL.md section 11: the HTTP transport's packet label

REQUESTS = [
    (Request(Kind.OPEN, SESSION), b"a client's hello" * 5, 0),
    (Request(Kind.SEND, SESSION, up_offset=1234, down_ack=99), b"uplink records" * 20, 7),
    (
        Request(Kind.POLL, SESSION, down_ack=5, flags=RequestFlags.REWIND | RequestFlags.STREAM),
        b"",
        3,
    ),
    (Request(Kind.CLOSE, SESSION), b"", 0),
    (Request(Kind.PING, SESSION, up_offset=0), b"x" * 100, 0),
]
REQUEST_BODIES = [KEYS.seal_request(r, payload, padding=pad) for r, payload, pad in REQUESTS]
RESPONSES = [
    (Response(Status.OK, up_ack=10, down_offset=0), b"downlink records" * 30, 5),
    (Response(Status.OK, up_ack=10, down_offset=480), b"", 0),
    (Response(Status.OK, up_ack=11, down_offset=480), b"more" * 100, 200),
    (Response(Status.GONE), b"", 1),
]
RESPONSE_BODIES = [KEYS.seal_response(r, p, padding=pad) for r, p, pad in RESPONSES]
RESPONSE_STREAM = b"".join(RESPONSE_BODIES)
SEALER = PacketSealer(MASTER, LABEL)


def _split_header(body: bytes) -> tuple[bytes, bytes]:
    """Return the plaintext of the sealed header a body starts with, and the bytes after it.

    The header is the shortest prefix that opens as a packet: found by trying, so that this
    test needs to know no sizes of the layout.
    """
    for size in range(PACKET_OVERHEAD, len(body) + 1):
        header = KEYS.open_header(body[:size])
        if header is not None:
            return header, body[size:]
    raise AssertionError("an envelope no longer starts with a sealed header: update this test")


REQUEST_PARTS = [_split_header(body) for body in REQUEST_BODIES]
RESPONSE_PARTS = [_split_header(body) for body in RESPONSE_BODIES]
REQUEST_HEADER = len(REQUEST_BODIES[0]) - len(REQUEST_PARTS[0][1])  # the sealed header's size
RESPONSE_HEADER = len(RESPONSE_BODIES[0]) - len(RESPONSE_PARTS[0][1])


@st.composite
def sealed_garbage(draw: st.DrawFn, parts: list[tuple[bytes, bytes]]) -> bytes:
    """A header sealed with our key but holding damaged or random fields, and a tail.

    The tail is random, or a genuine envelope's (its payload, padding and whatever else
    follows the header), with or without a packet over everything before it appended: the
    whole-envelope seal some layouts end with. So garbage fields meet consistent sizes and
    seals often enough to reach every check after the header's.
    """
    plain, genuine_tail = draw(st.sampled_from(parts), label="seed")
    header = draw(
        mutations_of(plain, max_edits=2)
        | st.binary(min_size=len(plain), max_size=len(plain))
        | st.binary(max_size=96),
        label="header",
    )
    tail = draw(
        st.sampled_from([genuine_tail, genuine_tail[:-PACKET_OVERHEAD]]) | st.binary(max_size=300),
        label="tail",
    )
    body = SEALER.seal(header) + tail
    if draw(st.booleans(), label="sealed whole"):
        body += SEALER.seal(b"", body)
    return body


strangers = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda request, payload: OTHER.seal_request(request, payload),
        st.sampled_from([r for r, _, _ in REQUESTS]),
        st.binary(max_size=64),
    ),
)


@FUZZ
@given(strangers)
def test_random_bytes_and_other_passwords_envelopes_open_as_none(body: bytes) -> None:
    assert KEYS.open_request(body) is None


@FUZZ
@given(sealed_garbage(REQUEST_PARTS))
def test_a_header_sealed_with_our_key_but_garbage_opens_as_a_request_or_as_none(
    body: bytes,
) -> None:
    opened = KEYS.open_request(body)  # any exception fails the test
    event("opened" if opened is not None else "not ours")
    if opened is not None:
        request, payload = opened
        assert isinstance(request, Request) and isinstance(payload, bytes)
        assert request.kind in Kind and len(request.session) == 16


@FUZZ
@given(mutations_of(REQUEST_BODIES))
def test_a_damaged_envelope_opens_only_if_the_edits_cancelled_out(body: bytes) -> None:
    opened = KEYS.open_request(body)
    event("opened" if opened is not None else "not ours")
    if opened is not None:  # the whole envelope is authenticated: payload and padding too
        assert body in REQUEST_BODIES
        request, payload, _ = REQUESTS[REQUEST_BODIES.index(body)]
        assert opened == (request, payload)
    assert OTHER.open_request(body) is None


@FUZZ
@given(sealed_garbage(RESPONSE_PARTS), cuts())
def test_a_response_header_sealed_with_our_key_but_garbage_is_read_or_refused(
    data: bytes, where: list[int]
) -> None:
    reader = KEYS.reader()
    try:
        for piece in pieces(data, where):
            for response, payload in reader.feed(piece):
                assert isinstance(response, Response) and response.status in Status
                assert isinstance(payload, bytes)
    except ValueError:
        event("refused")
        return
    event("read or waiting")


@FUZZ
@given(st.binary(max_size=3 * RESPONSE_HEADER), cuts())
def test_garbage_is_refused_as_soon_as_a_header_is_in(data: bytes, where: list[int]) -> None:
    reader = OTHER.reader() if data[:1] == b"\x00" else KEYS.reader()
    fed = 0
    for piece in pieces(data, where):
        fed += len(piece)
        if fed < RESPONSE_HEADER:
            assert reader.feed(piece) == []
            assert reader.pending == fed  # it holds the bytes, no more, and decides nothing
            continue
        try:
            reader.feed(piece)
        except ValueError:
            return  # the only exception allowed, and it comes at once
        raise AssertionError("a header's worth of garbage was not refused")


@FUZZ
@given(mutations_of(RESPONSE_STREAM) | st.just(RESPONSE_STREAM), cuts())
def test_a_damaged_response_stream_yields_only_the_genuine_envelopes_in_order(
    data: bytes, where: list[int]
) -> None:
    reader = KEYS.reader()
    got: list[tuple[Response, bytes]] = []
    try:
        for piece in pieces(data, where):
            got += reader.feed(piece)
    except ValueError:
        event("refused")
    else:
        event("read or waiting")
    genuine = [(response, payload) for response, payload, _ in RESPONSES]
    assert got == genuine[: len(got)]  # payloads are authenticated as well as headers
    if data == RESPONSE_STREAM:
        assert got == genuine


def test_a_response_announcing_more_than_the_limit_is_refused_before_it_arrives() -> None:
    body = KEYS.seal_response(Response(Status.OK), bytes(MAX_ENVELOPE_PAYLOAD + 1))
    reader = KEYS.reader()
    with pytest.raises(ValueError, match="bytes"):
        reader.feed(body[:RESPONSE_HEADER])  # the header alone: nothing is waited for
    within = KEYS.seal_response(Response(Status.OK), bytes(MAX_ENVELOPE_PAYLOAD))
    assert KEYS.reader().feed(within) == [(Response(Status.OK), bytes(MAX_ENVELOPE_PAYLOAD))]

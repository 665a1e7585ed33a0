"""The handshake: who gets in, who is rejected and why, and that rejection costs bounded memory."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol.helpers import MASTER, NOW, SALT, SERVER_SALT, TunnelPair

from flyway_core.address import Address
from flyway_core.errors import HandshakeRejected, LocalProtocolError
from flyway_core.protocol import (
    CLOCK_SKEW,
    DEFAULT_WINDOW,
    INITIAL_WINDOW,
    SALT_SIZE,
    Cipher,
    ClientConnection,
    CreditAvailable,
    Data,
    Frame,
    Hello,
    Ping,
    RecordWriter,
    ReplayCache,
    Sealer,
    ServerConnection,
    SessionStarted,
    Welcome,
    encode_frame,
    session_keys,
)
from flyway_core.protocol.handshake import server_key
from flyway_core.protocol.records import MAX_RECORD, record_size


def _server(replay: ReplayCache | None = None, **kwargs: object) -> ServerConnection:
    return ServerConnection(MASTER, ReplayCache() if replay is None else replay, now=NOW, **kwargs)  # type: ignore[arg-type]


def _first_bytes(frame: Frame, *, salt: bytes = SALT, cipher: Cipher = Cipher.AES_256_GCM) -> bytes:
    to_server, _ = session_keys(MASTER, salt, cipher)
    return salt + RecordWriter(Sealer(to_server, cipher)).seal(encode_frame(frame))


def _hello(**overrides: int) -> Hello:
    fields = {"version": 1, "timestamp_ms": int(NOW * 1000), "window": DEFAULT_WINDOW}
    fields.update(overrides)
    return Hello(**fields)


def test_both_sides_start_the_session_and_learn_each_others_window() -> None:
    pair = TunnelPair(client_window=200_000, server_window=300_000)
    flushed = pair.flush()
    assert flushed.server == [SessionStarted(Cipher.AES_256_GCM, 200_000)]
    assert flushed.client == [SessionStarted(Cipher.AES_256_GCM, 300_000)]
    assert pair.server.accepted
    # each side's send credit is the peer's window, at most its own
    assert (pair.client.peer_window, pair.server.peer_window) == (200_000, 200_000)


def test_a_peer_window_beyond_ours_does_not_raise_our_credit() -> None:
    from flyway_core.protocol import MAX_WINDOW, MIN_WINDOW, Address

    pair = TunnelPair(client_window=MAX_WINDOW, server_window=MIN_WINDOW)
    stream_id = pair.client.open_stream(Address("example.com", 80))
    pair.flush()
    assert pair.server.peer_window == MIN_WINDOW  # the client announced 2**31-1
    pair.server.accept_stream(stream_id)
    assert pair.server.send_window(stream_id) == MIN_WINDOW


def test_a_chacha20_client_is_accepted_and_the_server_learns_its_cipher() -> None:
    pair = TunnelPair(cipher=Cipher.CHACHA20_POLY1305)
    flushed = pair.flush()
    assert flushed.server == [SessionStarted(Cipher.CHACHA20_POLY1305, DEFAULT_WINDOW)]
    assert pair.server.cipher is Cipher.CHACHA20_POLY1305


def test_the_hello_is_the_salt_then_one_record() -> None:
    client = ClientConnection(MASTER, now=NOW, salt=SALT, padding=b"\x00" * 7)
    hello = client.hello()
    assert hello[:SALT_SIZE] == SALT
    assert len(hello) == SALT_SIZE + record_size(5 + 17 + 7)
    assert client.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        client.hello()


def test_hello_can_only_be_taken_before_the_first_data_to_send() -> None:
    client = ClientConnection(MASTER, now=NOW)
    assert client.data_to_send()[:SALT_SIZE] != b""
    with pytest.raises(LocalProtocolError):
        client.hello()


def test_random_salt_and_padding_by_default() -> None:
    one, two = ClientConnection(MASTER, now=NOW).hello(), ClientConnection(MASTER, now=NOW).hello()
    assert one[:SALT_SIZE] != two[:SALT_SIZE]
    assert SALT_SIZE + record_size(22) <= len(one) <= SALT_SIZE + record_size(22 + 63)


def test_a_hello_fed_byte_by_byte_with_records_behind_it_is_accepted() -> None:
    pair = TunnelPair()
    stream_id = pair.client.open_stream(_target(), b"early")
    pair.client.send_data(stream_id, b" and more")
    stream = pair.client.data_to_send()
    server = _server()
    events = []
    for i in range(len(stream)):
        events += server.receive_data(stream[i : i + 1], NOW)
    assert isinstance(events[0], SessionStarted)
    assert b"".join(getattr(e, "data", b"") for e in events) == b"early and more"


def test_a_replayed_hello_is_refused_even_by_another_connection() -> None:
    replay = ReplayCache()
    hello = ClientConnection(MASTER, now=NOW).hello()
    assert _server(replay).receive_data(hello, NOW)
    with pytest.raises(HandshakeRejected, match="replayed handshake"):
        _server(replay).receive_data(hello, NOW + 5)


def test_a_salt_is_forgotten_only_once_a_replay_would_fail_the_clock_check() -> None:
    replay = ReplayCache()
    assert replay.check(SALT, NOW + CLOCK_SKEW, NOW) is None  # a hello from the future
    later = NOW + 2 * CLOCK_SKEW
    assert replay.check(SALT, NOW + CLOCK_SKEW, later) == "replayed handshake"
    assert replay.check(SALT, NOW + CLOCK_SKEW, later + 1) == "clock skew 121 s"
    assert replay.check(os.urandom(32), later + 1, later + 1) is None
    assert len(replay) == 1  # the first salt expired


def test_a_full_replay_cache_forgets_its_oldest_salt() -> None:
    replay = ReplayCache(capacity=2)
    salts = [bytes([i]) * 32 for i in range(3)]
    for salt in salts:
        assert replay.check(salt, NOW, NOW) is None
    assert len(replay) == 2
    assert replay.check(salts[0], NOW, NOW) is None
    assert replay.check(salts[2], NOW, NOW) == "replayed handshake"


@settings(max_examples=50)
@given(skew=st.floats(CLOCK_SKEW + 1, 10 * 365 * 86400), future=st.booleans())
def test_stale_or_future_timestamps_are_refused(skew: float, future: bool) -> None:
    client_now = NOW + skew if future else NOW - skew
    hello = ClientConnection(MASTER, now=client_now).hello()
    with pytest.raises(HandshakeRejected, match="clock skew"):
        _server().receive_data(hello, NOW)


@settings(max_examples=50)
@given(skew=st.floats(-CLOCK_SKEW + 0.01, CLOCK_SKEW - 0.01))
def test_timestamps_within_the_skew_are_accepted(skew: float) -> None:
    hello = ClientConnection(MASTER, now=NOW + skew).hello()
    assert _server().receive_data(hello, NOW)


def test_the_clock_skew_is_reported_in_seconds() -> None:
    hello = ClientConnection(MASTER, now=NOW - 300).hello()
    with pytest.raises(HandshakeRejected, match=r"^clock skew 300 s$"):
        _server().receive_data(hello, NOW)


def test_a_wrong_password_is_refused() -> None:
    hello = ClientConnection(bytes(32), now=NOW).hello()
    with pytest.raises(HandshakeRejected, match=r"^authentication failed$"):
        _server().receive_data(hello, NOW)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_hello(version=7), r"^unsupported version 7$"),
        (_hello(window=1000), "window 1000 is outside"),
        (_hello(window=2**31), "is outside"),
        (Welcome(1, DEFAULT_WINDOW), "expected HELLO, got WELCOME"),
        (Data(1, b"x"), "expected HELLO, got DATA"),
    ],
)
def test_an_authentic_but_unacceptable_first_record_is_refused(frame: Frame, reason: str) -> None:
    with pytest.raises(HandshakeRejected, match=reason):
        _server().receive_data(_first_bytes(frame), NOW)


def test_an_authentic_but_malformed_hello_is_refused() -> None:
    to_server, _ = session_keys(MASTER, SALT, Cipher.AES_256_GCM)
    record = RecordWriter(Sealer(to_server, Cipher.AES_256_GCM)).seal(b"\x01\x00\x00\x00\x00\x01")
    with pytest.raises(HandshakeRejected, match="malformed hello"):
        _server().receive_data(SALT + record, NOW)


def test_a_rejected_connection_stays_rejected() -> None:
    server = _server()
    with pytest.raises(HandshakeRejected):
        server.receive_data(os.urandom(100), NOW)
    with pytest.raises(HandshakeRejected):
        server.receive_data(ClientConnection(MASTER, now=NOW).hello(), NOW)
    assert server.closed and not server.accepted


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120), max_size=6))
def test_random_bytes_raise_only_protocol_errors_and_yield_no_events(chunks: list[bytes]) -> None:
    server = _server()
    try:
        for chunk in chunks:
            assert server.receive_data(chunk, NOW) == []
    except HandshakeRejected:
        pass  # the only exception allowed; anything else fails the test
    assert server.data_to_send() == b""


def test_a_huge_garbage_prefix_is_rejected_without_buffering_it() -> None:
    server = _server()
    chunk = os.urandom(1 << 16)
    tracemalloc.start()
    try:
        with pytest.raises(HandshakeRejected, match="authentication failed"):
            server.receive_data(chunk, NOW)
        for _ in range(256):  # 16 MiB more
            with pytest.raises(HandshakeRejected):
                server.receive_data(chunk, NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(chunk)


def test_a_slow_authentic_hello_is_held_within_one_record() -> None:
    to_server, _ = session_keys(MASTER, SALT, Cipher.AES_256_GCM)
    hello = _hello()
    record = RecordWriter(Sealer(to_server, Cipher.AES_256_GCM)).seal(
        encode_frame(
            Hello(hello.version, hello.timestamp_ms, hello.window, padding=bytes(65535 - 22))
        )
    )
    assert len(SALT + record) == SALT_SIZE + MAX_RECORD
    server = _server()
    data = SALT + record
    for start in range(0, len(data) - 1, 4096):
        assert server.receive_data(data[start : min(start + 4096, len(data) - 1)], NOW) == []
    assert len(server._hello._pending) == SALT_SIZE + MAX_RECORD - 1  # type: ignore[union-attr]
    assert server.receive_data(data[-1:], NOW) == [
        SessionStarted(Cipher.AES_256_GCM, DEFAULT_WINDOW)
    ]


def test_a_client_answered_by_something_else_is_rejected() -> None:
    client = ClientConnection(MASTER, now=NOW)
    with pytest.raises(HandshakeRejected, match="not a flyway server"):
        client.receive_data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" * 2, NOW)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (Ping(bytes(8)), "expected WELCOME, got PING"),
        (Welcome(2, DEFAULT_WINDOW), "unsupported version 2"),
        (Welcome(1, 10), "window 10 is outside"),
    ],
)
def test_a_client_refuses_a_server_that_does_not_start_with_welcome(
    frame: Frame, reason: str
) -> None:
    client = ClientConnection(MASTER, now=NOW, salt=SALT)
    to_client = server_key(MASTER, SALT, SERVER_SALT, Cipher.AES_256_GCM)
    record = RecordWriter(Sealer(to_client, Cipher.AES_256_GCM)).seal(encode_frame(frame))
    with pytest.raises(HandshakeRejected, match=reason):
        client.receive_data(SERVER_SALT + record, NOW)


def test_each_session_gets_a_server_to_client_key_of_its_own() -> None:
    # A Hello replayed to a server that forgot it (a restart: a new replay cache) is
    # accepted again, but the server's answer is sealed under a new key: no (key, nonce)
    # pair of the first session is used again.
    client = ClientConnection(MASTER, now=NOW, salt=SALT, padding=b"")
    hello = client.hello()
    answers = []
    for _ in range(2):
        server = ServerConnection(MASTER, ReplayCache(), now=NOW, padding=b"")
        server.receive_data(hello, NOW)
        answers.append(server.data_to_send())
    first, second = answers
    assert first[:32] != second[:32]  # two server salts
    assert first[32:50] != second[32:50]  # so the same plaintext seals differently
    assert client.receive_data(first, NOW)  # and the client takes the real one


def test_streams_opened_before_welcome_get_the_real_window_when_it_arrives() -> None:
    pair = TunnelPair(server_window=3 * INITIAL_WINDOW)
    stream_id = pair.client.open_stream(_target(), b"x" * 100)
    assert pair.client.send_window(stream_id) == INITIAL_WINDOW - 100
    flushed = pair.flush()
    assert pair.client.send_window(stream_id) == 3 * INITIAL_WINDOW - 100
    assert flushed.client[:2] == [
        SessionStarted(Cipher.AES_256_GCM, 3 * INITIAL_WINDOW),
        CreditAvailable(stream_id),
    ]


def _target() -> Address:
    return Address("example.com", 80)


@pytest.mark.parametrize(
    ("client_window", "server_window"), [(1 << 20, 8 << 20), (8 << 20, 1 << 20), (131072, 1 << 20)]
)
def test_windows_that_differ_by_more_than_four_times_keep_data_flowing(
    client_window: int, server_window: int
) -> None:
    from flyway_core.protocol import Address, DataReceived

    pair = TunnelPair(client_window=client_window, server_window=server_window)
    stream_id = pair.client.open_stream(Address("example.com", 80))
    pair.flush()
    pair.server.accept_stream(stream_id)
    pair.flush()
    for sender, receiver, deliver in (
        (pair.client, pair.server, pair.deliver_to_server),
        (pair.server, pair.client, pair.deliver_to_client),
    ):
        moved = 0
        while moved < 3 * max(client_window, server_window):  # far more than one window
            credit = sender.send_window(stream_id)
            assert credit > 0, f"stalled after {moved} bytes"
            sender.send_data(stream_id, bytes(min(credit, 1 << 16)))
            for event in deliver():
                if isinstance(event, DataReceived):
                    receiver.acknowledge(stream_id, len(event.data))
                    moved += len(event.data)
            pair.flush()

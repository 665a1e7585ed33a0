"""Streams over a joined pair: opening, data, half-close, reset, flow control, and closing."""

from __future__ import annotations

import pytest
from protocol.helpers import TunnelPair, data_of, inject

from flyway_core.address import Address
from flyway_core.errors import LocalProtocolError, RemoteProtocolError
from flyway_core.protocol import (
    MAX_DATA,
    MIN_WINDOW,
    Accept,
    CloseReason,
    CreditAvailable,
    Data,
    DataReceived,
    End,
    Hello,
    Open,
    ResetReason,
    SessionClosed,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamReset,
    Welcome,
    Window,
    max_open_data,
)

TARGET = Address("example.com", 443)


def _started(**kwargs: int) -> TunnelPair:
    pair = TunnelPair(**kwargs)  # type: ignore[arg-type]
    pair.flush()
    return pair


def test_a_stream_opens_with_data_and_is_accepted() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET, b"GET / HTTP/1.1\r\n\r\n")
    assert pair.deliver_to_server() == [StreamOpened(stream_id, TARGET, b"GET / HTTP/1.1\r\n\r\n")]
    assert pair.server.buffered(stream_id) == 18
    pair.server.accept_stream(stream_id)
    pair.server.send_data(stream_id, b"HTTP/1.1 200 OK\r\n")
    assert pair.deliver_to_client() == [
        StreamAccepted(stream_id),
        DataReceived(stream_id, b"HTTP/1.1 200 OK\r\n"),
    ]


def test_stream_ids_are_odd_and_increasing() -> None:
    pair = _started()
    ids = [pair.client.open_stream(TARGET) for _ in range(4)]
    assert ids == [1, 3, 5, 7]
    assert pair.client.stream_ids() == ids
    pair.flush()
    assert pair.server.stream_ids() == ids
    assert pair.server.open_streams == 4


def test_only_the_client_opens_and_only_the_server_accepts() -> None:
    pair = _started()
    with pytest.raises(LocalProtocolError):
        pair.server.open_stream(TARGET)
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    with pytest.raises(LocalProtocolError):
        pair.client.accept_stream(stream_id)


def test_the_server_must_accept_before_it_sends() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    with pytest.raises(LocalProtocolError, match="pending"):
        pair.server.send_data(stream_id, b"early")
    with pytest.raises(LocalProtocolError, match="pending"):
        pair.server.end_stream(stream_id)
    pair.server.accept_stream(stream_id)
    with pytest.raises(LocalProtocolError):
        pair.server.accept_stream(stream_id)


def test_the_client_may_send_before_the_accept() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET, b"one")
    pair.client.send_data(stream_id, b"two")
    assert data_of(pair.flush().server, stream_id) == b"two"


def test_initial_data_must_fit_one_open_frame() -> None:
    pair = _started()
    limit = max_open_data(TARGET)
    stream_id = pair.client.open_stream(TARGET, b"x" * limit)
    assert pair.client.send_window(stream_id) == pair.client.peer_window - limit
    with pytest.raises(LocalProtocolError):
        pair.client.open_stream(TARGET, b"x" * (limit + 1))
    assert pair.client.stream_ids() == [stream_id]  # the failed open left nothing behind


def test_each_direction_ends_on_its_own() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET, b"request")
    pair.client.end_stream(stream_id)
    assert pair.flush().server == [
        StreamOpened(stream_id, TARGET, b"request"),
        StreamEnded(stream_id),
    ]
    with pytest.raises(LocalProtocolError, match="ended"):
        pair.client.send_data(stream_id, b"more")
    assert pair.client.send_window(stream_id) == 0
    pair.server.accept_stream(stream_id)
    pair.server.send_data(stream_id, b"response")
    assert data_of(pair.flush().client, stream_id) == b"response"
    pair.server.end_stream(stream_id)
    assert pair.server.stream_ids() == []  # both directions over: forgotten
    assert pair.flush().client == [StreamEnded(stream_id)]
    assert pair.client.stream_ids() == []


def test_a_reset_ends_both_directions_and_late_frames_are_ignored() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    pair.server.accept_stream(stream_id)
    pair.server.send_data(stream_id, b"in flight")
    pair.client.reset_stream(stream_id, ResetReason.CANCELLED, "bye")
    pair.client.reset_stream(stream_id, ResetReason.CANCELLED)  # already gone: a no-op
    flushed = pair.flush()
    assert flushed.client == []  # the server's data crossed our reset
    assert flushed.server == [StreamReset(stream_id, ResetReason.CANCELLED, "bye")]
    assert pair.server.stream_ids() == pair.client.stream_ids() == []
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(stream_id, b"x")


def test_a_failed_open_comes_back_as_a_reset_with_its_reason() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(Address("nowhere.invalid", 80))
    pair.flush()
    pair.server.reset_stream(stream_id, ResetReason.NAME_NOT_FOUND, "x" * 300)
    (event,) = pair.flush().client
    assert event == StreamReset(stream_id, ResetReason.NAME_NOT_FOUND, "x" * 200)


def test_large_sends_are_split_into_data_frames() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    payload = bytes(range(256)) * 1000
    pair.client.send_data(stream_id, payload)
    events = pair.flush().server
    sizes = [len(e.data) for e in events if isinstance(e, DataReceived)]
    assert sizes == [MAX_DATA] * 3 + [len(payload) - 3 * MAX_DATA]
    assert data_of(events, stream_id) == payload


def test_sending_beyond_the_window_is_refused() -> None:
    pair = _started(server_window=MIN_WINDOW)
    stream_id = pair.client.open_stream(TARGET, b"x" * 1000)
    with pytest.raises(LocalProtocolError, match="send window"):
        pair.client.send_data(stream_id, b"x" * (MIN_WINDOW - 999))
    pair.client.send_data(stream_id, b"x" * (MIN_WINDOW - 1000))
    assert pair.client.send_window(stream_id) == 0


def test_acknowledged_bytes_come_back_once_a_quarter_window_piles_up() -> None:
    pair = _started(server_window=MIN_WINDOW)
    stream_id = pair.client.open_stream(TARGET)
    pair.client.send_data(stream_id, b"x" * MIN_WINDOW)
    pair.flush()
    assert pair.server.buffered(stream_id) == MIN_WINDOW
    pair.server.acknowledge(stream_id, MIN_WINDOW // 4 - 1)
    assert pair.flush().client == []
    pair.server.acknowledge(stream_id, 1)
    assert pair.server.buffered(stream_id) == MIN_WINDOW * 3 // 4
    assert pair.flush().client == [CreditAvailable(stream_id)]
    assert pair.client.send_window(stream_id) == MIN_WINDOW // 4
    with pytest.raises(LocalProtocolError):
        pair.server.acknowledge(stream_id, MIN_WINDOW)  # more than is buffered


def test_acknowledging_a_forgotten_stream_is_a_no_op() -> None:
    pair = _started()
    pair.server.acknowledge(99, 10)
    assert pair.server.buffered(99) == 0
    assert pair.server.send_window(99) == 0


def test_a_peer_that_overruns_its_window_is_a_flow_control_error() -> None:
    pair = _started(server_window=MIN_WINDOW)
    stream_id = pair.client.open_stream(TARGET)
    pair.client._streams[stream_id].credit += 1  # a client that miscounts
    pair.client.send_data(stream_id, b"x" * (MIN_WINDOW + 1))
    with pytest.raises(RemoteProtocolError) as caught:
        pair.deliver_to_server()
    assert caught.value.code == CloseReason.FLOW_CONTROL
    assert pair.deliver_to_client() == [SessionClosed(CloseReason.FLOW_CONTROL, str(caught.value))]


def test_a_window_update_for_bytes_never_sent_is_a_flow_control_error() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    inject(pair.server, Window(stream_id, 1))
    with pytest.raises(RemoteProtocolError) as caught:
        pair.deliver_to_client()
    assert caught.value.code == CloseReason.FLOW_CONTROL
    assert pair.deliver_to_server() == [SessionClosed(CloseReason.FLOW_CONTROL, str(caught.value))]


@pytest.mark.parametrize(
    ("sender", "frame", "message"),
    [
        ("client", Data(5, b"x"), "never opened"),
        ("client", Data(2, b"x"), "never opened"),
        ("server", End(3), "never opened"),
        ("client", Accept(1), "may not send ACCEPT"),
        ("server", Open(2, TARGET), "may not send OPEN"),
        ("client", Hello(1, 0, MIN_WINDOW), "may not send HELLO"),
        ("server", Welcome(1, MIN_WINDOW), "may not send WELCOME"),
        ("client", Open(1, TARGET), "may not use stream id 1"),
        ("server", Data(1, b"x"), "its side is pending"),
    ],
)
def test_frames_that_break_the_rules_are_remote_protocol_errors(
    sender: str, frame: object, message: str
) -> None:
    pair = _started()
    pair.client.open_stream(TARGET)
    pair.flush()
    inject(getattr(pair, sender), frame)  # type: ignore[arg-type]
    deliver = pair.deliver_to_server if sender == "client" else pair.deliver_to_client
    with pytest.raises(RemoteProtocolError, match=message):
        deliver()


def test_data_after_the_peer_ended_is_a_protocol_error() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    pair.client.end_stream(stream_id)
    inject(pair.client, Data(stream_id, b"x"))
    with pytest.raises(RemoteProtocolError, match="its side is ended"):
        pair.deliver_to_server()


def test_a_failed_connection_stays_failed_and_tells_the_peer_why() -> None:
    pair = _started()
    inject(pair.client, Data(9, b"x"))
    with pytest.raises(RemoteProtocolError):
        pair.deliver_to_server()
    assert pair.server.closed
    with pytest.raises(RemoteProtocolError, match="connection failed"):
        pair.server.receive_data(b"", pair.now)
    with pytest.raises(LocalProtocolError):
        pair.server.ping(pair.now)
    pair.server.close(CloseReason.NORMAL, "a later close adds nothing")
    assert pair.deliver_to_client() == [
        SessionClosed(CloseReason.PROTOCOL_ERROR, "DATA for stream 9, which was never opened")
    ]


def test_close_ends_every_stream() -> None:
    pair = _started()
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    pair.client.close(CloseReason.SHUTDOWN, "going away")
    pair.client.close()  # a second close is a no-op
    assert pair.client.closed and pair.client.stream_ids() == []
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.open_stream(TARGET)
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.client.send_data(stream_id, b"x")
    pair.client.reset_stream(stream_id, ResetReason.CANCELLED)  # cleanup stays quiet
    pair.client.acknowledge(stream_id, 0)
    assert pair.flush().server == [SessionClosed(CloseReason.SHUTDOWN, "going away")]
    assert pair.server.closed and pair.server.stream_ids() == []
    assert pair.server.receive_data(b"anything", pair.now) == []
    assert pair.client.next_deadline() is None


def test_wants_to_send_says_whether_bytes_are_queued() -> None:
    pair = _started()
    client = pair.client
    assert not client.wants_to_send
    stream_id = client.open_stream(TARGET, b"hi")
    assert client.wants_to_send
    client.data_to_send()
    assert not client.wants_to_send
    client.send_data(stream_id, b"more")
    assert client.wants_to_send

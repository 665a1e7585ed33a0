"""Datagram flows (feature DATAGRAM_FLOWS): opened like streams, carrying addressed datagrams."""

from __future__ import annotations

import pytest
from protocol.helpers import TunnelPair, inject

from flyway_core.protocol import (
    MAX_DATA,
    Address,
    CloseReason,
    Data,
    Datagram,
    DatagramReceived,
    Feature,
    FlowOpened,
    LocalProtocolError,
    OpenFlow,
    RemoteProtocolError,
    ResetReason,
    SessionClosed,
    StreamAccepted,
    StreamEnded,
    StreamReset,
    Window,
    decode_frame,
    encode_frame,
    max_datagram,
)

FLOWS = {"client_features": Feature.DATAGRAM_FLOWS, "server_features": Feature.DATAGRAM_FLOWS}
DNS = Address("192.0.2.53", 53)
NAMED = Address("dns.example", 53)


def _started(**features: int) -> TunnelPair:
    pair = TunnelPair(**(features or FLOWS))
    pair.flush()  # the Welcome: features are known from here on
    return pair


def _flow() -> tuple[TunnelPair, int]:
    pair = _started()
    flow = pair.client.open_flow()
    assert pair.flush().server == [FlowOpened(flow)]
    return pair, flow


@pytest.mark.parametrize(
    "frame",
    [
        OpenFlow(7),
        Datagram(7, DNS, b"\x12\x34query"),
        Datagram(7, NAMED, b""),
        Datagram(9, Address("2001:db8::1", 5353), b"x" * max_datagram(Address("2001:db8::1", 1))),
    ],
    ids=["open-flow", "ipv4", "named-empty", "ipv6-largest"],
)
def test_flow_frames_survive_encoding(frame: OpenFlow | Datagram) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def test_a_datagram_over_what_one_record_carries_is_refused() -> None:
    assert max_datagram(DNS) == MAX_DATA - 7
    with pytest.raises(LocalProtocolError, match="datagram over"):
        Datagram(1, DNS, bytes(max_datagram(DNS) + 1))


def test_datagrams_flow_both_ways_and_the_client_may_send_before_the_accept() -> None:
    pair = _started()
    flow = pair.client.open_flow()
    pair.client.send_datagram(flow, DNS, b"question")
    assert pair.flush().server == [FlowOpened(flow), DatagramReceived(flow, DNS, b"question")]
    pair.server.accept_stream(flow)
    pair.server.send_datagram(flow, DNS, b"answer")
    pair.server.send_datagram(flow, DNS, b"")
    assert pair.flush().client == [
        StreamAccepted(flow),
        DatagramReceived(flow, DNS, b"answer"),
        DatagramReceived(flow, DNS, b""),
    ]


def test_datagrams_take_no_credit_and_are_counted_until_taken() -> None:
    pair, flow = _flow()
    pair.server.accept_stream(flow)
    pair.flush()
    big = bytes(max_datagram(DNS))
    for _ in range(40):  # 2.6 MB: more than any window, yet no Window frame is ever needed
        pair.client.send_datagram(flow, DNS, big)
    assert pair.client.queued_datagrams == 40 * len(big)
    assert pair.client.queued_data == 0  # stream bytes are counted apart
    received = pair.flush().server
    assert pair.client.queued_datagrams == 0
    assert [len(e.data) for e in received if isinstance(e, DatagramReceived)] == [len(big)] * 40


def test_flows_and_streams_share_the_id_space() -> None:
    pair = _started()
    first = pair.client.open_stream(DNS)
    flow = pair.client.open_flow()
    assert (first, flow) == (1, 3)
    assert pair.client.open_stream(DNS) == 5
    assert pair.client.open_streams == 3


def test_a_flow_waits_for_the_welcome() -> None:
    pair = TunnelPair(**FLOWS)
    with pytest.raises(LocalProtocolError, match="waits for the Welcome"):
        pair.client.open_flow()


@pytest.mark.parametrize(
    "features",
    [
        {"client_features": Feature.DATAGRAM_FLOWS, "server_features": 0},
        {"client_features": 0, "server_features": Feature.DATAGRAM_FLOWS},
    ],
    ids=["server-lacks-it", "client-lacks-it"],
)
def test_without_the_feature_no_flow_opens(features: dict[str, int]) -> None:
    pair = _started(**features)
    with pytest.raises(LocalProtocolError, match="DATAGRAM_FLOWS"):
        pair.client.open_flow()
    assert pair.client.open_streams == 0  # nothing half-opened is left behind
    assert pair.client.open_stream(DNS) == 1  # and the id was not used up


def test_an_open_flow_outside_the_feature_is_a_protocol_error_and_a_close() -> None:
    pair = _started(client_features=0, server_features=Feature.DATAGRAM_FLOWS)
    inject(pair.client, OpenFlow(1))
    with pytest.raises(RemoteProtocolError, match="DATAGRAM_FLOWS feature") as caught:
        pair.deliver_to_server()
    assert pair.deliver_to_client() == [
        SessionClosed(CloseReason.PROTOCOL_ERROR, str(caught.value))
    ]


@pytest.mark.parametrize(
    ("rogue", "match"),
    [
        (lambda flow: Data(flow, b"bytes"), "DATA on flow"),
        (lambda flow: Window(flow, 100), "WINDOW on flow"),
    ],
    ids=["data", "window"],
)
def test_stream_frames_on_a_flow_are_protocol_errors(rogue: object, match: str) -> None:
    pair, flow = _flow()
    inject(pair.client, rogue(flow))  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError, match=match):
        pair.deliver_to_server()


def test_a_datagram_on_a_byte_stream_is_a_protocol_error() -> None:
    pair = _started()
    stream = pair.client.open_stream(DNS)
    pair.flush()
    inject(pair.client, Datagram(stream, DNS, b"x"))
    with pytest.raises(RemoteProtocolError, match="DATAGRAM on stream"):
        pair.deliver_to_server()


def test_the_server_sends_no_datagram_before_its_accept() -> None:
    pair, flow = _flow()
    with pytest.raises(LocalProtocolError, match="pending"):
        pair.server.send_datagram(flow, DNS, b"early")
    inject(pair.server, Datagram(flow, DNS, b"early"))
    with pytest.raises(RemoteProtocolError, match="DATAGRAM on flow"):
        pair.deliver_to_client()


def test_the_local_end_refuses_stream_calls_on_a_flow_and_flow_calls_on_a_stream() -> None:
    pair, flow = _flow()
    stream = pair.client.open_stream(DNS)
    with pytest.raises(LocalProtocolError, match="DATA on flow"):
        pair.client.send_data(flow, b"x")
    with pytest.raises(LocalProtocolError, match="DATAGRAM on stream"):
        pair.client.send_datagram(stream, DNS, b"x")


def test_the_server_opens_no_flow() -> None:
    pair = _started()
    inject(pair.server, OpenFlow(2))
    with pytest.raises(RemoteProtocolError, match="may not send OPEN_FLOW"):
        pair.deliver_to_client()


def test_a_flow_id_must_be_new_and_odd() -> None:
    pair, flow = _flow()
    inject(pair.client, OpenFlow(flow))
    with pytest.raises(RemoteProtocolError, match="OPEN_FLOW may not use stream id"):
        pair.deliver_to_server()


def test_a_reset_ends_a_flow_and_late_datagrams_are_dropped() -> None:
    pair, flow = _flow()
    pair.server.accept_stream(flow)
    pair.flush()
    pair.client.send_datagram(flow, DNS, b"late")  # in flight when the server resets
    pair.server.reset_stream(flow, ResetReason.CANCELLED, "association over")
    assert pair.flush().client == [StreamReset(flow, ResetReason.CANCELLED, "association over")]
    assert not pair.server.has_stream(flow)
    assert not pair.client.has_stream(flow)


def test_a_server_datagram_must_name_its_source_by_address() -> None:
    pair, flow = _flow()
    pair.server.accept_stream(flow)
    pair.flush()
    inject(pair.server, Datagram(flow, NAMED, b"from a name"))
    with pytest.raises(RemoteProtocolError, match="DATAGRAM from a name"):
        pair.deliver_to_client()


def test_an_end_on_a_flow_ends_the_peers_half_and_the_server_may_still_reset() -> None:
    pair, flow = _flow()
    pair.server.accept_stream(flow)
    pair.flush()
    pair.client.end_stream(flow)
    assert pair.flush().server == [StreamEnded(flow)]
    assert pair.server.has_stream(flow)  # its own half is open until it ends or resets it
    pair.server.reset_stream(flow, ResetReason.CANCELLED, "flow over")
    assert not pair.server.has_stream(flow)
    assert pair.flush().client == [StreamReset(flow, ResetReason.CANCELLED, "flow over")]


def test_a_late_datagram_for_a_reset_flow_is_dropped_by_the_server() -> None:
    pair, flow = _flow()
    pair.server.accept_stream(flow)
    pair.flush()
    pair.client.send_datagram(flow, DNS, b"late")
    pair.server.reset_stream(flow, ResetReason.CANCELLED, "")
    assert pair.deliver_to_server() == []  # a legal race: nothing reported, no error

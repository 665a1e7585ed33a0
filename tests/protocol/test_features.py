"""Feature bits: a session uses what both ends advertised, and each end sends only that."""

from __future__ import annotations

import pytest
from protocol.helpers import TunnelPair, inject

from flyway_core.protocol import (
    FRAME_FEATURES,
    SUPPORTED_FEATURES,
    AcceptBound,
    Address,
    CloseReason,
    DataReceived,
    Feature,
    FrameType,
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    SessionClosed,
    StreamAccepted,
)

ALPHA, BETA, GAMMA = Feature(1), Feature(2), Feature(4)


def test_a_session_uses_only_the_features_both_ends_advertised() -> None:
    pair = TunnelPair(client_features=ALPHA | GAMMA, server_features=BETA | GAMMA)
    assert pair.client.features == pair.server.features == 0  # nothing before the handshake
    pair.flush()
    assert pair.client.features == pair.server.features == GAMMA


def test_bits_an_end_does_not_know_are_ignored() -> None:
    pair = TunnelPair(client_features=1 << 31, server_features=0)
    pair.flush()
    assert pair.client.features == pair.server.features == 0
    stream_id = pair.client.open_stream(Address("example.com", 80))
    pair.flush()
    assert pair.server.has_stream(stream_id)


def test_features_outside_a_u32_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="u32"):
        TunnelPair(client_features=1 << 32)


@pytest.fixture
def ping_needs_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend Ping were a frame of the optional feature ALPHA."""
    monkeypatch.setitem(FRAME_FEATURES, FrameType.PING, ALPHA)


@pytest.mark.usefixtures("ping_needs_alpha")
def test_an_end_does_not_send_a_frame_of_a_feature_the_session_lacks() -> None:
    pair = TunnelPair(client_features=ALPHA, server_features=0)
    pair.flush()
    with pytest.raises(LocalProtocolError, match="did not advertise"):
        pair.client.ping(pair.now)


@pytest.mark.usefixtures("ping_needs_alpha")
def test_a_frame_of_a_feature_both_advertised_goes_through() -> None:
    pair = TunnelPair(client_features=ALPHA, server_features=ALPHA)
    pair.flush()
    pair.client.ping(pair.now)
    assert [type(e).__name__ for e in pair.flush().client] == ["PongReceived"]


@pytest.mark.usefixtures("ping_needs_alpha")
def test_receiving_a_frame_of_a_feature_the_session_lacks_is_a_protocol_error() -> None:
    pair = TunnelPair(client_features=ALPHA, server_features=0)
    pair.flush()
    inject(pair.client, Ping(bytes(8)))
    with pytest.raises(RemoteProtocolError, match="feature") as caught:
        pair.deliver_to_server()
    assert pair.deliver_to_client() == [
        SessionClosed(CloseReason.PROTOCOL_ERROR, str(caught.value))
    ]


# --- BOUND_ADDRESS: the server's Accept names its local address toward the target ---------

BOUND = Address("192.0.2.9", 40000)
TARGET = Address("example.com", 80)
BOTH = {"client_features": Feature.BOUND_ADDRESS, "server_features": Feature.BOUND_ADDRESS}


def _opened(**features: int) -> tuple[TunnelPair, int]:
    pair = TunnelPair(**features)
    stream_id = pair.client.open_stream(TARGET)
    pair.flush()
    return pair, stream_id


def test_bound_address_is_the_first_feature_bit_and_its_frame_is_accept_bound() -> None:
    assert Feature.BOUND_ADDRESS == 1
    assert FRAME_FEATURES[FrameType.ACCEPT_BOUND] == Feature.BOUND_ADDRESS
    assert SUPPORTED_FEATURES & Feature.BOUND_ADDRESS


def test_datagram_flows_are_the_second_feature_bit_with_two_frames() -> None:
    assert Feature.DATAGRAM_FLOWS == 2
    assert {FrameType.OPEN_FLOW, FrameType.DATAGRAM} == {
        frame for frame, feature in FRAME_FEATURES.items() if feature == Feature.DATAGRAM_FLOWS
    }
    assert SUPPORTED_FEATURES & Feature.DATAGRAM_FLOWS


@pytest.mark.parametrize("bound", [BOUND, Address("2001:db8::9", 443)])
def test_a_negotiated_accept_carries_the_servers_bound_address_to_the_client(
    bound: Address,
) -> None:
    pair, stream_id = _opened(**BOTH)
    assert pair.client.features == Feature.BOUND_ADDRESS
    pair.server.accept_stream(stream_id, bound)
    assert pair.flush().client == [StreamAccepted(stream_id, bound)]
    pair.server.send_data(stream_id, b"hi")  # the stream is open as after a plain Accept
    assert pair.flush().client == [DataReceived(stream_id, b"hi")]


def test_a_negotiated_accept_without_an_address_is_a_plain_accept() -> None:
    pair, stream_id = _opened(**BOTH)
    pair.server.accept_stream(stream_id)
    assert pair.flush().client == [StreamAccepted(stream_id, None)]


def test_a_scoped_ipv6_address_the_wire_cannot_carry_falls_back_to_a_plain_accept() -> None:
    pair, stream_id = _opened(**BOTH)
    pair.server.accept_stream(stream_id, Address("fe80::1%eth0", 5000))
    assert pair.flush().client == [StreamAccepted(stream_id, None)]


@pytest.mark.parametrize(
    "features",
    [
        {"client_features": Feature.BOUND_ADDRESS, "server_features": 0},
        {"client_features": 0, "server_features": Feature.BOUND_ADDRESS},
        {"client_features": 0, "server_features": 0},
    ],
    ids=["server-lacks-it", "client-lacks-it", "neither"],
)
def test_without_the_feature_the_accept_is_byte_for_byte_the_old_one(
    features: dict[str, int],
) -> None:
    pair, stream_id = _opened(**features)
    old, old_id = _opened()  # an end that never heard of the feature
    assert stream_id == old_id
    pair.server.accept_stream(stream_id, BOUND)
    old.server.accept_stream(old_id)
    sent = pair.server.data_to_send()
    assert sent == old.server.data_to_send()
    assert len(sent) == 18 + 5 + 16  # one record: sealed length, then the 5-byte Accept
    assert pair.client.receive_data(sent, pair.now) == [StreamAccepted(stream_id, None)]


@pytest.mark.parametrize(
    "features",
    [
        {"client_features": Feature.BOUND_ADDRESS, "server_features": 0},
        {"client_features": 0, "server_features": Feature.BOUND_ADDRESS},
    ],
    ids=["server-lacks-it", "client-lacks-it"],
)
def test_an_accept_bound_outside_the_feature_is_a_protocol_error_and_a_close(
    features: dict[str, int],
) -> None:
    pair, stream_id = _opened(**features)
    inject(pair.server, AcceptBound(stream_id, BOUND))
    with pytest.raises(RemoteProtocolError, match="BOUND_ADDRESS feature") as caught:
        pair.deliver_to_client()
    assert pair.deliver_to_server() == [
        SessionClosed(CloseReason.PROTOCOL_ERROR, str(caught.value))
    ]


def test_the_client_may_not_send_accept_bound_even_when_negotiated() -> None:
    pair, stream_id = _opened(**BOTH)
    inject(pair.client, AcceptBound(stream_id, BOUND))
    with pytest.raises(RemoteProtocolError, match="may not send ACCEPT_BOUND"):
        pair.deliver_to_server()


def test_a_second_accept_after_accept_bound_is_a_protocol_error() -> None:
    pair, stream_id = _opened(**BOTH)
    pair.server.accept_stream(stream_id, BOUND)
    pair.flush()
    inject(pair.server, AcceptBound(stream_id, BOUND))
    with pytest.raises(RemoteProtocolError, match="ACCEPT_BOUND on stream"):
        pair.deliver_to_client()

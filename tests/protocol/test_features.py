"""Feature bits: a session uses what both ends advertised, and each end sends only that."""

from __future__ import annotations

import pytest
from protocol.helpers import TunnelPair, inject

from flyway_core.protocol import (
    FRAME_FEATURES,
    Address,
    CloseReason,
    Feature,
    FrameType,
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    SessionClosed,
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

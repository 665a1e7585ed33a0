"""Liveness: keepalive pings, round-trip times and the idle timeout, all on a fake clock."""

from __future__ import annotations

import pytest
from protocol.helpers import NOW, TunnelPair

from flyway_core.protocol import CloseReason, PongReceived, SessionClosed


def _started(**kwargs: float) -> TunnelPair:
    pair = TunnelPair(**kwargs)  # type: ignore[arg-type]
    pair.flush()
    return pair


def test_a_ping_comes_back_with_its_round_trip_time() -> None:
    pair = _started()
    pair.client.ping(NOW)
    pair.deliver_to_server()  # the server answers by itself
    pair.now = NOW + 0.25
    (event,) = pair.deliver_to_client()
    assert isinstance(event, PongReceived)
    assert event.rtt == pytest.approx(0.25, abs=1e-6)


def test_the_server_can_ping_too() -> None:
    pair = _started()
    pair.server.ping(NOW)
    pair.now = NOW + 0.5
    (event,) = pair.flush().server
    assert event == PongReceived(0.5)


def test_a_silent_client_pings_every_keepalive_interval() -> None:
    pair = _started(idle_timeout=60.0)
    assert pair.client.next_deadline() == NOW + 20.0  # keepalive defaults to a third
    assert pair.client.tick(NOW + 19.9) == []
    assert pair.client.data_to_send() == b""
    assert pair.client.tick(NOW + 20.0) == []
    assert pair.client.data_to_send() != b""  # a Ping
    assert pair.client.next_deadline() == NOW + 40.0
    assert pair.client.tick(NOW + 40.0) == []
    assert pair.client.data_to_send() != b""
    assert pair.client.next_deadline() == NOW + 60.0  # the idle timeout comes first now


def test_a_pong_keeps_the_session_alive() -> None:
    pair = _started(idle_timeout=60.0, keepalive=10.0)
    for second in range(10, 200, 10):
        pair.now = NOW + second
        assert pair.client.tick(pair.now) == []
        assert pair.server.tick(pair.now) == []
        events = pair.flush()
        assert [type(e) for e in events.client] == [PongReceived]
    assert not pair.client.closed and not pair.server.closed


def test_an_idle_server_closes_the_session_and_tells_the_client() -> None:
    pair = _started(idle_timeout=30.0)
    assert pair.server.next_deadline() == NOW + 30.0
    assert pair.server.tick(NOW + 29.0) == []
    (event,) = pair.server.tick(NOW + 30.0)
    assert event == SessionClosed(CloseReason.IDLE_TIMEOUT, "nothing received for 30 s")
    assert pair.server.closed and pair.server.next_deadline() is None
    assert pair.server.tick(NOW + 31.0) == []
    assert pair.deliver_to_client() == [event]


def test_a_client_whose_server_went_silent_times_out() -> None:
    pair = _started(idle_timeout=9.0, keepalive=3.0)
    now = NOW
    pings = 0
    while (deadline := pair.client.next_deadline()) is not None:
        now = deadline
        events = pair.client.tick(now)
        pings += bool(pair.client.data_to_send()) and not events
    assert now == NOW + 9.0
    assert pings == 2
    assert pair.client.closed


def test_receiving_anything_postpones_the_idle_timeout() -> None:
    pair = _started(idle_timeout=30.0)
    pair.client.ping(NOW + 25.0)
    pair.now = NOW + 25.0
    pair.deliver_to_server()
    assert pair.server.next_deadline() == NOW + 55.0
    assert pair.server.tick(NOW + 30.0) == []

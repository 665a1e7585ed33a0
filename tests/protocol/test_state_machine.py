"""A rule-based state machine drives both ends at random and checks streams, windows and order."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from protocol.helpers import TunnelPair

from flyway_core.address import Address
from flyway_core.errors import LocalProtocolError
from flyway_core.protocol import (
    MIN_WINDOW,
    Connection,
    ConnectionEvent,
    CreditAvailable,
    DataReceived,
    PongReceived,
    ResetReason,
    SessionStarted,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

PATTERN = random.Random(7).randbytes(1 << 18)
SIDES = ("client", "server")
PEER = {"client": "server", "server": "client"}
TARGET = Address("example.com", 80)
Key = tuple[str, int]  # (side, stream id)


class StreamMachine(RuleBasedStateMachine):
    """Both ends open, send, acknowledge, end and reset at random while bytes move in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = TunnelPair(client_window=MIN_WINDOW, server_window=MIN_WINDOW)
        self.conns: dict[str, Connection] = {"client": self.pair.client, "server": self.pair.server}
        self.known: set[Key] = set()  # streams each side has heard of
        self.dead: set[Key] = set()  # streams a side has forgotten (reset, or both ends done)
        self.sent: dict[Key, bytearray] = {}  # what (side, id) sent
        self.got: dict[Key, bytearray] = {}  # what (side, id) received
        self.unacked: dict[Key, int] = {}
        self.we_ended: set[Key] = set()  # side ended its own direction
        self.they_ended: set[Key] = set()  # side saw StreamEnded
        self.accepted: set[int] = set()
        self.reset: set[int] = set()
        self.offset = 0

    # --- helpers ------------------------------------------------------------------------

    def _chunk(self, size: int) -> bytes:
        self.offset = (self.offset + 7919) % (len(PATTERN) // 2)
        return PATTERN[self.offset : self.offset + size]

    def _live(self, side: str) -> list[int]:
        return sorted(sid for s, sid in self.known - self.dead if s == side)

    def _forget_if_done(self, key: Key) -> None:
        if key in self.we_ended and key in self.they_ended:
            self.dead.add(key)

    def _process(self, side: str, events: list[ConnectionEvent]) -> None:
        peer = PEER[side]
        for event in events:
            if isinstance(event, SessionStarted | PongReceived):
                continue
            key = (side, event.stream_id)
            if isinstance(event, StreamOpened):
                assert side == "server" and key not in self.known
                self.known.add(key)
                self.got[key] = bytearray(event.data)
                self.unacked[key] = len(event.data)
                continue
            assert key in self.known and key not in self.dead, f"{event} for a forgotten stream"
            if isinstance(event, DataReceived):
                assert key not in self.they_ended, "data after End"
                self.got[key] += event.data
                self.unacked[key] += len(event.data)
                assert self.sent[(peer, event.stream_id)].startswith(self.got[key]), "out of order"
            elif isinstance(event, StreamEnded):
                assert self.got[key] == self.sent[(peer, event.stream_id)], "End before all data"
                self.they_ended.add(key)
                self._forget_if_done(key)
            elif isinstance(event, StreamReset):
                self.reset.add(event.stream_id)
                self.dead.add(key)
            elif isinstance(event, StreamAccepted):
                assert side == "client"
            else:
                assert isinstance(event, CreditAvailable)

    def _sendable(self, side: str) -> list[int]:
        conn = self.conns[side]
        return [
            sid
            for sid in self._endable(side)
            if conn.send_window(sid) > 0 and (side == "client" or sid in self.accepted)
        ]

    def _endable(self, side: str) -> list[int]:
        return [
            sid
            for sid in self._live(side)
            if (side, sid) not in self.we_ended and (side == "client" or sid in self.accepted)
        ]

    def _ackable(self, side: str) -> list[int]:
        return [sid for sid in self._live(side) if self.unacked[(side, sid)]]

    def _pick(self, data: st.DataObject, candidates: Callable[[str], list[int]]) -> Key:
        side = data.draw(st.sampled_from([side for side in SIDES if candidates(side)]))
        return side, data.draw(st.sampled_from(candidates(side)))

    # --- rules --------------------------------------------------------------------------

    @initialize(size=st.integers(0, 3000), handshake=st.booleans())
    def start(self, size: int, handshake: bool) -> None:
        self.open_stream(size)
        if handshake:
            self.drain()

    @precondition(lambda self: len(self._live("client")) < 6)
    @rule(size=st.integers(0, 3000))
    def open_stream(self, size: int) -> None:
        data = self._chunk(size)
        stream_id = self.pair.client.open_stream(TARGET, data)
        key = ("client", stream_id)
        self.known.add(key)
        self.sent[key] = bytearray(data)
        self.sent[("server", stream_id)] = bytearray()
        self.got[key] = bytearray()
        self.unacked[key] = 0

    @precondition(lambda self: any(s not in self.accepted for s in self._live("server")))
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        pending = [sid for sid in self._live("server") if sid not in self.accepted]
        stream_id = data.draw(st.sampled_from(pending))
        self.pair.server.accept_stream(stream_id)
        self.accepted.add(stream_id)

    @precondition(lambda self: self._sendable("client") or self._sendable("server"))
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        side, stream_id = self._pick(data, self._sendable)
        conn = self.conns[side]
        window = conn.send_window(stream_id)
        if data.draw(st.booleans()):
            with pytest.raises(LocalProtocolError):
                conn.send_data(stream_id, bytes(window + 1))
        size = data.draw(
            st.one_of(st.integers(1, min(window, 3000)), st.integers(1, window), st.just(window))
        )
        chunk = self._chunk(size)
        conn.send_data(stream_id, chunk)
        self.sent[(side, stream_id)] += chunk

    @precondition(lambda self: self._endable("client") or self._endable("server"))
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        side, stream_id = self._pick(data, self._endable)
        self.conns[side].end_stream(stream_id)
        self.we_ended.add((side, stream_id))
        self._forget_if_done((side, stream_id))
        with pytest.raises(LocalProtocolError):
            self.conns[side].send_data(stream_id, b"x")

    @precondition(lambda self: self._live("client") or self._live("server"))
    @rule(data=st.data())
    def reset_stream(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 3)) == 0:  # rarely, so that most streams finish
            side, stream_id = self._pick(data, self._live)
            self.conns[side].reset_stream(stream_id, ResetReason.CANCELLED)
            self.reset.add(stream_id)
            self.dead.add((side, stream_id))

    @precondition(lambda self: self._ackable("client") or self._ackable("server"))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        side, stream_id = self._pick(data, self._ackable)
        size = data.draw(st.integers(1, self.unacked[(side, stream_id)]))
        self.conns[side].acknowledge(stream_id, size)
        self.unacked[(side, stream_id)] -= size

    @rule(size=st.one_of(st.none(), st.integers(1, 100_000)))
    def deliver_to_server(self, size: int | None) -> None:
        self._process("server", self.pair.deliver_to_server(size))

    @rule(size=st.one_of(st.none(), st.integers(1, 100_000)))
    def deliver_to_client(self, size: int | None) -> None:
        self._process("client", self.pair.deliver_to_client(size))

    @rule(side=st.sampled_from(SIDES))
    def ping(self, side: str) -> None:
        if self.pair.server.accepted:
            self.conns[side].ping(self.pair.now)

    @rule()
    def drain(self) -> None:
        """Move everything, acknowledge everything, and check every open stream is complete."""
        for _ in range(100):
            flushed = self.pair.flush()
            self._process("client", flushed.client)
            self._process("server", flushed.server)
            for side in SIDES:
                for sid in self._live(side):
                    if self.unacked[(side, sid)]:
                        self.conns[side].acknowledge(sid, self.unacked[(side, sid)])
                        self.unacked[(side, sid)] = 0
            self.pair.pump()
            if not self.pair.to_server and not self.pair.to_client:
                break
        for (side, sid), got in self.got.items():
            if sid not in self.reset:
                assert got == self.sent[(PEER[side], sid)]

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def streams_are_forgotten_exactly_when_they_should_be(self) -> None:
        for side in SIDES:
            assert self.conns[side].stream_ids() == self._live(side)

    @invariant()
    def no_receiver_holds_more_than_its_window(self) -> None:
        for side in SIDES:
            conn = self.conns[side]
            for sid in conn.stream_ids():
                assert conn.buffered(sid) == self.unacked[(side, sid)]
                assert conn.buffered(sid) <= conn.window

    @invariant()
    def no_sender_has_more_credit_than_the_peer_granted(self) -> None:
        for side in SIDES:
            conn = self.conns[side]
            for sid in conn.stream_ids():
                assert 0 <= conn.send_window(sid) <= conn.peer_window


StreamMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_streams_behave = StreamMachine.TestCase

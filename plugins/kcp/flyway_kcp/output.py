"""Where a conversation's segments go: sealed, one datagram each, to the peer's address.

With FEC, parity is sent only while the link is losing datagrams: from the first segment
KCP sends again until ``FEC_HOLD`` seconds after the last. On a clean link that is never,
and FEC costs a 7-byte header; on a lossy one resends keep coming (a group that loses more
than its parity can rebuild, the tail of a burst), so parity stays on. Meanwhile a small
datagram with data in it is sent twice: a lone one (a keystroke, a ping) fills no group,
and its loss would wait for KCP's timeout, which a bulk transfer may have stretched to
seconds. ACK-only datagrams go twice when no parity covers them.
"""

from __future__ import annotations

import socket
import time

from flyway_core.protocol.crypto import DatagramSealer
from flyway_kcp.fec import FecEncoder
from flyway_kcp.udp import Peer

__all__ = ["DUPLICATE_ACKS", "FEC_HOLD", "DatagramOutput"]

DUPLICATE_ACKS = True
FEC_HOLD = 60.0  # seconds parity stays on after KCP last sent a segment again
SMALL = 256  # bytes of segments: on a lossy link such a datagram with data goes twice (below)
_ACK = 82  # ikcp's IKCP_CMD_ACK
_PUSH = 81  # ikcp's IKCP_CMD_PUSH (data)
_HEADER = 24  # bytes of an ikcp segment header; an ACK carries nothing after it
_SERIAL = 0xFFFFFFFF


def _newest_push(segments: bytes, newest: int) -> tuple[int, int, int, bool]:
    """Walk ikcp's segments (little-endian headers): the newest data sn, the data segments
    sent before (how many, their bytes), any data at all.

    ikcp numbers data segments in the order it first sends them, so one whose sn is not past
    the newest sent is a resend (after a timeout or a fast resend alike).
    """
    resent = resent_bytes = 0
    pushed = False
    offset, end = 0, len(segments) - _HEADER
    while offset <= end:
        length = int.from_bytes(segments[offset + 20 : offset + 24], "little")
        if segments[offset + 4] == _PUSH:
            pushed = True
            sn = int.from_bytes(segments[offset + 12 : offset + 16], "little")
            ahead = (sn - newest) & _SERIAL
            if newest < 0 or 0 < ahead < 0x80000000:
                newest = sn
            else:
                resent += 1
                resent_bytes += length
        offset += _HEADER + length
    return newest, resent, resent_bytes, pushed


def _only_acks(segments: bytes) -> bool:
    """True if ``segments`` holds ikcp ACK segments and nothing else."""
    return len(segments) % _HEADER == 0 and segments[4::_HEADER].count(_ACK) * _HEADER == len(
        segments
    )


class DatagramOutput:
    """The callable ikcp hands each outgoing datagram to; seals it and sends it, never raises.

    ``address`` is the peer's: the server's on the client; on the server the client's latest
    authenticated address, so a client whose NAT mapping changed is followed there. None
    sends on a connected socket.
    """

    __slots__ = (
        "_fec",
        "_newest",
        "_sealer",
        "_sock",
        "address",
        "bytes_sent",
        "dropped",
        "lossy_until",
        "resends",
        "resent_bytes",
        "resent_segments",
        "sent",
    )

    def __init__(
        self,
        sock: socket.socket,
        sealer: DatagramSealer,
        address: Peer | None,
        fec: FecEncoder | None = None,
    ) -> None:
        self._sock = sock
        self._fec = fec
        self._sealer = sealer
        self.address = address
        self.sent = 0
        self.bytes_sent = 0
        self.dropped = 0  # datagrams the socket refused (full buffer): KCP sends them again
        self.resends = 0  # datagrams carrying a segment sent before (with FEC only)
        self.resent_segments = 0  # data segments sent again (timeouts and fast resends)
        self.resent_bytes = 0  # their payload bytes
        self.lossy_until = 0.0  # time.monotonic() until which parity is sent
        self._newest = -1  # the newest data segment's sn sent so far

    def __call__(self, segments: bytes) -> int:
        self._newest, resent, resent_bytes, pushed = _newest_push(segments, self._newest)
        if resent:
            self.resent_segments += resent
            self.resent_bytes += resent_bytes
        if self._fec is not None:
            now = time.monotonic()
            if resent:
                self.resends += 1
                self.lossy_until = now + FEC_HOLD
            parity = now < self.lossy_until
            twice = (parity and pushed and len(segments) <= SMALL) or (
                not parity and DUPLICATE_ACKS and _only_acks(segments)
            )
            for shard in self._fec.shards(segments, parity=parity):
                self._send(self._sealer.seal(shard))
                if twice:
                    self._send(self._sealer.seal(shard))
                    twice = False  # the data shard only, not the parity after it
            return 0
        self._send(self._sealer.seal(segments))
        if DUPLICATE_ACKS and _only_acks(segments):  # a lost ack costs a spurious resend
            self._send(self._sealer.seal(segments))
        return 0

    def _send(self, datagram: bytes) -> None:
        try:
            if self.address is None:
                self._sock.send(datagram)
            else:
                self._sock.sendto(datagram, self.address)
        except OSError:  # BlockingIOError, or the socket is gone: lost like any datagram
            self.dropped += 1
        else:
            self.sent += 1
            self.bytes_sent += len(datagram)

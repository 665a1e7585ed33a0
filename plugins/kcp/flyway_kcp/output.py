"""Where a conversation's segments go: sealed, one datagram each, to the peer's address."""

from __future__ import annotations

import socket

from flyway_core.protocol.crypto import DatagramSealer
from flyway_kcp.fec import FecEncoder

__all__ = ["DUPLICATE_ACKS", "DatagramOutput"]

DUPLICATE_ACKS = True
_ACK = 82  # ikcp's IKCP_CMD_ACK
_HEADER = 24  # bytes of an ikcp segment header; an ACK carries nothing after it


def _only_acks(segments: bytes) -> bool:
    """True if ``segments`` holds ikcp ACK segments and nothing else."""
    return len(segments) % _HEADER == 0 and segments[4::_HEADER].count(_ACK) * _HEADER == len(
        segments
    )


class DatagramOutput:
    """The callable ikcp hands each outgoing datagram to; seals it and sends it, never raises.

    ``address`` is None on a connected socket (the client); on the server it is the client's
    latest authenticated address, so a client whose NAT mapping changed is followed there.
    """

    __slots__ = ("_fec", "_sealer", "_sock", "address", "bytes_sent", "dropped", "sent")

    def __init__(
        self,
        sock: socket.socket,
        sealer: DatagramSealer,
        address: tuple[str, int] | None,
        fec: FecEncoder | None = None,
    ) -> None:
        self._sock = sock
        self._fec = fec
        self._sealer = sealer
        self.address = address
        self.sent = 0
        self.bytes_sent = 0
        self.dropped = 0  # datagrams the socket refused (full buffer): KCP sends them again

    def __call__(self, segments: bytes) -> int:
        if self._fec is not None:
            for shard in self._fec.shards(segments):
                self._send(self._sealer.seal(shard))
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

"""Forward error correction for KCP datagrams: Reed-Solomon over groups, through zfec.

Optional (``--kcp-fec K,M``). Every ``K`` datagrams the sender has sent make a group, and
``M`` parity datagrams follow them; a receiver that gets any ``K`` of the ``K + M`` rebuilds
the data datagrams it missed, so KCP never waits a round trip to resend them. Data datagrams
go out at once, never held back for their group; a group that does not fill (a quiet link)
gets no parity, and KCP resends what it lost as without FEC.

A shard is the plaintext of one sealed datagram::

    u32 group || u8 index || body
    data   (index < K):  body = u16 length || KCP segments
    parity (index >= K): body = zfec parity over the group's data bodies, zero-padded alike

The receiver keeps the last ``KEEP`` groups; memory is bounded whatever arrives.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

import zfec  # type: ignore[import-untyped]

__all__ = ["FEC_HEADER", "FecDecoder", "FecEncoder"]

_HEAD = struct.Struct(">IB")
_LENGTH = struct.Struct(">H")
FEC_HEADER = _HEAD.size + _LENGTH.size  # what a data datagram carries beyond its segments
KEEP = 64  # groups the receiver remembers


class FecEncoder:
    """Turn each outgoing payload into a data shard; after every ``k``, add ``m`` parity."""

    __slots__ = ("_bodies", "_encoder", "_group", "_parity", "k", "m")

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._encoder = zfec.Encoder(k, k + m)
        self._parity = list(range(k, k + m))
        self._group = 0
        self._bodies: list[bytes] = []

    def shards(self, payload: bytes) -> list[bytes]:
        """The shards to send for ``payload``: its data shard, then any parity it completes."""
        body = _LENGTH.pack(len(payload)) + payload
        index = len(self._bodies)
        out = [_HEAD.pack(self._group, index) + body]
        self._bodies.append(body)
        if index + 1 == self.k:
            bodies, self._bodies = self._bodies, []
            size = max(map(len, bodies))
            padded = [b.ljust(size, b"\0") for b in bodies]
            parity = self._encoder.encode(padded, self._parity)
            out += [_HEAD.pack(self._group, self.k + i) + p for i, p in enumerate(parity)]
            self._group = (self._group + 1) & 0xFFFFFFFF
        return out


class FecDecoder:
    """Take shards in any order; return the payloads to hand to KCP (at most once each)."""

    __slots__ = ("_decoder", "_groups", "k", "m", "recovered")

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._decoder = zfec.Decoder(k, k + m)
        # group -> its shards by index, or None once its data is all in (received or rebuilt)
        self._groups: OrderedDict[int, dict[int, bytes] | None] = OrderedDict()
        self.recovered = 0  # data datagrams rebuilt from parity

    def payloads(self, shard: bytes) -> list[bytes]:
        """The KCP payloads ``shard`` yields: its own (data), rebuilt ones, or none."""
        if len(shard) < _HEAD.size + 1:
            return []
        group, index = _HEAD.unpack_from(shard)
        if index >= self.k + self.m:
            return []
        body = shard[_HEAD.size :]
        payload = None
        if index < self.k and (payload := _payload(body)) is None:
            return []
        groups = self._groups
        if group not in groups:
            groups[group] = {}
            while len(groups) > KEEP:
                groups.popitem(last=False)
        shards = groups[group]
        if shards is None or index in shards:  # complete already, or a duplicate
            return []
        shards[index] = body
        out = [] if payload is None else [payload]
        if sum(1 for i in shards if i < self.k) == self.k:
            groups[group] = None
        elif len(shards) >= self.k:
            out += self._rebuild(shards)
            groups[group] = None
        return out

    def _rebuild(self, shards: dict[int, bytes]) -> list[bytes]:
        size = max(map(len, shards.values()))
        numbers = sorted(shards)[: self.k]
        blocks = [shards[i].ljust(size, b"\0") for i in numbers]
        try:
            primary = self._decoder.decode(blocks, numbers)
        except zfec.Error:
            return []
        out = []
        for i in range(self.k):
            if i not in shards and (payload := _payload(primary[i])) is not None:
                out.append(payload)
                self.recovered += 1
        return out


def _payload(body: bytes) -> bytes | None:
    if len(body) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(body)
    if length > len(body) - _LENGTH.size:
        return None
    return body[_LENGTH.size : _LENGTH.size + length]

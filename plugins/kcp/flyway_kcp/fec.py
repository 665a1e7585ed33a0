"""Forward error correction for KCP datagrams: Reed-Solomon over groups, through zfec.

Optional (``--kcp-fec K,M``). Every ``K`` datagrams the sender has sent make a group, and
``M`` parity datagrams follow them (while the link loses datagrams: ``output.py``); a
receiver that gets any ``K`` of the ``K + M`` rebuilds the data datagrams it missed, so KCP
never waits a round trip to resend them. Data datagrams go out at once, never held back for
their group; a group that does not fill (a quiet link) gets no parity, and KCP resends what
it lost as without FEC.

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
_DATA = struct.Struct(">IBH")  # a data shard's head: group, index, length
_LENGTH = struct.Struct(">H")
FEC_HEADER = _DATA.size  # what a data datagram carries beyond its segments
KEEP = 64  # groups the receiver remembers


class FecEncoder:
    """Turn each outgoing payload into a data shard; after every ``k``, add ``m`` parity."""

    __slots__ = ("_encoder", "_group", "_parity", "_shards", "k", "m")

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._encoder = zfec.Encoder(k, k + m)
        self._parity = list(range(k, k + m))
        self._group = 0
        self._shards: list[bytes] = []

    def shards(self, payload: bytes, *, parity: bool = True) -> list[bytes]:
        """The shards to send for ``payload``: its data shard, then any parity it completes.

        With ``parity`` False a group it completes ends without parity (a clean link).
        """
        index = len(self._shards)
        shard = _DATA.pack(self._group, index, len(payload)) + payload
        self._shards.append(shard)
        if index + 1 < self.k:
            return [shard]
        shards, self._shards = self._shards, []
        group, self._group = self._group, (self._group + 1) & 0xFFFFFFFF
        if not parity:
            return [shard]
        size = max(map(len, shards)) - _HEAD.size
        bodies = [s[_HEAD.size :].ljust(size, b"\0") for s in shards]
        extra = self._encoder.encode(bodies, self._parity)
        return [shard, *(_HEAD.pack(group, self.k + i) + p for i, p in enumerate(extra))]


class _Group:
    __slots__ = ("data", "done", "shards")

    def __init__(self) -> None:
        self.shards: dict[int, bytes] = {}  # index -> the whole shard, head included
        self.data = 0  # data shards among them
        self.done = False  # every data shard is in, received or rebuilt


class FecDecoder:
    """Take shards in any order; return the payloads to hand to KCP (at most once each)."""

    __slots__ = ("_decoder", "_groups", "k", "m", "recovered")

    def __init__(self, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._decoder = zfec.Decoder(k, k + m)
        self._groups: OrderedDict[int, _Group] = OrderedDict()
        self.recovered = 0  # data datagrams rebuilt from parity

    def payloads(self, shard: bytes) -> list[memoryview]:
        """The KCP payloads ``shard`` yields: its own (data), rebuilt ones, or none."""
        if len(shard) < _DATA.size:
            return []
        group_id, index = _HEAD.unpack_from(shard)
        k = self.k
        if index >= k + self.m:
            return []
        payload = _payload(shard) if index < k else None
        if index < k and payload is None:
            return []
        groups = self._groups
        group = groups.get(group_id)
        if group is None:
            group = groups[group_id] = _Group()
            if len(groups) > KEEP:
                groups.popitem(last=False)
        if group.done or index in group.shards:  # complete already, or a duplicate
            return []
        group.shards[index] = shard
        out = [] if payload is None else [payload]
        if index < k:
            group.data += 1
        if group.data == k:
            group.done, group.shards = True, {}
        elif len(group.shards) >= k:
            out += self._rebuild(group)
            group.done, group.shards = True, {}
        return out

    def _rebuild(self, group: _Group) -> list[memoryview]:
        shards = group.shards
        numbers = sorted(shards)[: self.k]
        size = max(len(shards[i]) for i in numbers) - _HEAD.size
        blocks = [shards[i][_HEAD.size :].ljust(size, b"\0") for i in numbers]
        try:
            primary = self._decoder.decode(blocks, numbers)
        except zfec.Error:
            return []
        out = []
        for i in range(self.k):
            if i not in shards:
                (length,) = _LENGTH.unpack_from(primary[i])
                if length <= len(primary[i]) - _LENGTH.size:
                    out.append(memoryview(primary[i])[_LENGTH.size : _LENGTH.size + length])
                    self.recovered += 1
        return out


def _payload(shard: bytes) -> memoryview | None:
    (length,) = _LENGTH.unpack_from(shard, _HEAD.size)
    if length > len(shard) - _DATA.size:
        return None
    return memoryview(shard)[_DATA.size : _DATA.size + length]

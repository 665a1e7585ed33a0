"""Stream targets on the wire: an address type, the host (IPv4, domain or IPv6), a port.

``encode_address`` writes an IP literal in ``Address.host`` as its 4 or 16 packed bytes and
anything else as a domain name (ASCII, or IDNA for non-ASCII names), SOCKS5 style::

    0x01  IPv4    4 bytes                          port u16
    0x03  domain  length u8 (1-255), name bytes     port u16
    0x04  IPv6    16 bytes                         port u16
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum

from flyway_core.protocol.address import Address
from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["AddressType", "address_size", "decode_address", "encode_address"]


class AddressType(IntEnum):
    """How an Open frame spells its target host."""

    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


def _name_bytes_ok(name: bytes) -> bool:
    # Printable ASCII without spaces: enough for every DNS and IDNA name, nothing a log chokes on.
    return 0 < len(name) <= 255 and all(0x21 <= byte <= 0x7E for byte in name)


def encode_address(target: Address) -> bytes:
    """Return ``target`` in its wire form; LocalProtocolError if it cannot be sent."""
    port = target.port.to_bytes(2, "big")
    try:
        ip = ipaddress.ip_address(target.host)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv4Address):
            return bytes([AddressType.IPV4]) + ip.packed + port
        if ip.scope_id:
            raise LocalProtocolError(f"cannot send the scoped IPv6 address {target.host!r}")
        return bytes([AddressType.IPV6]) + ip.packed + port
    try:
        name = target.host.encode("ascii" if target.host.isascii() else "idna")
    except UnicodeError as exc:
        raise LocalProtocolError(f"host {target.host!r} is not a valid name: {exc}") from None
    if not _name_bytes_ok(name):
        raise LocalProtocolError(f"host {target.host!r} is not a valid name")
    return bytes([AddressType.DOMAIN, len(name)]) + name + port


def address_size(target: Address) -> int:
    """Return how many bytes ``encode_address(target)`` takes."""
    return len(encode_address(target))


def decode_address(payload: bytes) -> tuple[Address, int]:
    """Parse the target at the start of ``payload``; return it and the bytes it used."""
    if not payload:
        raise RemoteProtocolError("missing target address")
    kind = payload[0]
    if kind == AddressType.IPV4:
        size = 1 + 4
        host = str(ipaddress.IPv4Address(_field(payload, 1, 4)))
    elif kind == AddressType.IPV6:
        size = 1 + 16
        host = str(ipaddress.IPv6Address(_field(payload, 1, 16)))
    elif kind == AddressType.DOMAIN:
        length = _field(payload, 1, 1)[0]
        name = _field(payload, 2, length)
        if not _name_bytes_ok(name):
            raise RemoteProtocolError(f"invalid host name {name!r}")
        size = 2 + length
        host = name.decode("ascii")
    else:
        raise RemoteProtocolError(f"unknown address type {kind}")
    port = int.from_bytes(_field(payload, size, 2), "big")
    return Address(host, port), size + 2


def _field(payload: bytes, start: int, size: int) -> bytes:
    field = payload[start : start + size]
    if len(field) != size:
        raise RemoteProtocolError("target address is truncated")
    return field

"""SOCKS4 and SOCKS4a CONNECT: an IPv4 target, or (4a) a name after the user id.

Theory of operation: VN CD DSTPORT DSTIP USERID NUL [NAME NUL], then the stream is
opened and the reply (0x5A granted, 0x5B rejected) waits for the server's
outcome, then relay. SOCKS4 carries no password, so a port with credentials
rejects every SOCKS4 client.
"""

from __future__ import annotations

import asyncio
import ipaddress

from flyway_core import Address
from flyway_socks5.base import Client, HandshakeError, valid_hostname

__all__ = ["GRANTED", "REJECTED", "reply", "serve"]

CONNECT = 1
GRANTED = 0x5A
REJECTED = 0x5B
MAX_FIELD = 255  # bytes of a user id or a name


def reply(code: int, bound: Address | None = None) -> bytes:
    """Return a SOCKS4 reply (VN 0), with ``bound`` as DSTPORT/DSTIP when it is IPv4.

    ``bound`` is the server's local address toward the target; otherwise the port and
    address are zeros (clients ignore them on CONNECT).
    """
    try:
        ip = ipaddress.ip_address(bound.host) if bound is not None else None
    except ValueError:
        ip = None
    if bound is None or not isinstance(ip, ipaddress.IPv4Address):
        return bytes([0, code, 0, 0, 0, 0, 0, 0])
    return bytes([0, code]) + bound.port.to_bytes(2, "big") + ip.packed


async def serve(client: Client) -> None:
    """Handle a SOCKS4 client whose version byte was already read."""
    async with asyncio.timeout_at(client.deadline):
        target = await _handshake(client)
    await client.connect(
        target,
        success=lambda bound: reply(GRANTED, bound),
        failure=lambda reason, _: reply(REJECTED),
    )


async def _handshake(client: Client) -> Address:
    reader = client.reader
    command = (await reader.readexactly(1))[0]
    port = int.from_bytes(await reader.readexactly(2), "big")
    ip = await reader.readexactly(4)
    await _read_field(reader, "user id")
    if ip[:3] == b"\0\0\0" and ip[3]:  # SOCKS4a: 0.0.0.x, the name follows
        name = await _read_field(reader, "name")
        if not valid_hostname(name):
            raise HandshakeError(f"bad name {name[:64]!r}", reply(REJECTED))
        host = name.decode("ascii")
    else:
        host = str(ipaddress.IPv4Address(ip))
    if client.credentials is not None:
        raise HandshakeError("SOCKS4 has no password; this port requires one", reply(REJECTED))
    if command != CONNECT:
        raise HandshakeError(f"command {command}", reply(REJECTED))
    if port == 0 or host == "0.0.0.0":
        raise HandshakeError("port 0 or address 0.0.0.0", reply(REJECTED))
    return Address(host, port)


async def _read_field(reader: asyncio.StreamReader, what: str) -> bytes:
    field = bytearray()
    while (byte := await reader.readexactly(1)) != b"\0":
        field += byte
        if len(field) > MAX_FIELD:
            raise HandshakeError(f"{what} over {MAX_FIELD} bytes", reply(REJECTED))
    return bytes(field)

"""SOCKS5 (RFC 1928) CONNECT and UDP ASSOCIATE, with username/password (RFC 1929).

Theory of operation: greeting (methods) -> method choice -> optional RFC 1929
sub-negotiation -> request -> for CONNECT the stream is opened, and the reply
waits for the server's outcome -> relay; for UDP ASSOCIATE a datagram flow is
opened the same way (``udp_associate``). The whole handshake runs under the
client's deadline; a broken rule gets the RFC's reply where one exists, then a
close.
"""

from __future__ import annotations

import asyncio
import ipaddress
from enum import IntEnum

from flyway_core import Address
from flyway_core.protocol import ResetReason
from flyway_socks5 import udp_associate
from flyway_socks5.base import Client, HandshakeError, valid_hostname

__all__ = ["REPLY_FOR", "Reply", "reply", "serve"]

VERSION = 5
AUTH_VERSION = 1
NO_AUTH = 0x00
USER_PASS = 0x02
NO_ACCEPTABLE = 0xFF
CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3
IPV4, DOMAIN, IPV6 = 1, 3, 4


class Reply(IntEnum):
    """The REP field of a SOCKS5 reply."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


# BUSY (the server's stream limit) is no ruleset refusal: general failure, as all else.
REPLY_FOR: dict[int, Reply] = {
    ResetReason.REFUSED: Reply.REFUSED,
    ResetReason.NETWORK_UNREACHABLE: Reply.NETWORK_UNREACHABLE,
    ResetReason.UNREACHABLE: Reply.HOST_UNREACHABLE,
    ResetReason.NAME_NOT_FOUND: Reply.HOST_UNREACHABLE,
    ResetReason.TIMED_OUT: Reply.TTL_EXPIRED,
    ResetReason.NOT_ALLOWED: Reply.NOT_ALLOWED,
}


def reply(code: int, bound: Address | None = None) -> bytes:
    """Return a reply carrying ``bound`` as BND.ADDR/BND.PORT (ATYP 1 or 4).

    ``bound`` is the server's local address toward the target; without it (the server
    did not report it, or it is no IP literal) the reply says 0.0.0.0:0.
    """
    try:
        ip = ipaddress.ip_address(bound.host) if bound is not None else None
    except ValueError:
        ip = None
    if bound is None or ip is None:
        return bytes([VERSION, code, 0, IPV4, 0, 0, 0, 0, 0, 0])
    kind = IPV4 if ip.version == 4 else IPV6
    return bytes([VERSION, code, 0, kind]) + ip.packed + bound.port.to_bytes(2, "big")


async def serve(client: Client) -> None:
    """Handle a SOCKS5 client whose version byte was already read."""
    async with asyncio.timeout_at(client.deadline):
        command, target = await _handshake(client)
    if command == UDP_ASSOCIATE:
        await udp_associate.associate(
            client,
            target,
            success=lambda bound: reply(Reply.SUCCEEDED, bound),
            failure=lambda reason: reply(REPLY_FOR.get(reason, Reply.GENERAL_FAILURE)),
            unsupported=reply(Reply.COMMAND_NOT_SUPPORTED),
        )
        return
    await client.connect(
        target,
        success=lambda bound: reply(Reply.SUCCEEDED, bound),
        failure=lambda reason, _: reply(REPLY_FOR.get(reason, Reply.GENERAL_FAILURE)),
    )


async def _handshake(client: Client) -> tuple[int, Address]:
    reader, writer = client.reader, client.writer
    (count,) = await reader.readexactly(1)
    methods = await reader.readexactly(count)
    wanted = NO_AUTH if client.credentials is None else USER_PASS
    if wanted not in methods:
        raise HandshakeError("no acceptable method", bytes([VERSION, NO_ACCEPTABLE]))
    writer.write(bytes([VERSION, wanted]))
    if client.credentials is not None:
        await _authenticate(client)
    version, command, _, kind = await reader.readexactly(4)
    if version != VERSION:
        raise HandshakeError(f"request version {version}")
    host = await _read_host(client, kind, udp=command == UDP_ASSOCIATE)
    port = int.from_bytes(await reader.readexactly(2), "big")
    if command not in (CONNECT, UDP_ASSOCIATE):
        raise HandshakeError(f"command {command}", reply(Reply.COMMAND_NOT_SUPPORTED))
    if port == 0 and command == CONNECT:  # for UDP it means "not known yet"
        raise HandshakeError("port 0", reply(Reply.GENERAL_FAILURE))
    return command, Address(host, port)


async def _authenticate(client: Client) -> None:
    assert client.credentials is not None
    reader = client.reader
    version, length = await reader.readexactly(2)
    user = await reader.readexactly(length)
    (length,) = await reader.readexactly(1)
    password = await reader.readexactly(length)
    if version != AUTH_VERSION or not client.credentials.check(user, password):
        raise HandshakeError("wrong credentials", bytes([AUTH_VERSION, 1]))
    client.writer.write(bytes([AUTH_VERSION, 0]))


async def _read_host(client: Client, kind: int, *, udp: bool = False) -> str:
    reader = client.reader
    if kind == IPV4:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if kind == IPV6:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if kind == DOMAIN:
        (length,) = await reader.readexactly(1)
        name = await reader.readexactly(length)
        if udp and name in (b"", b"0"):  # the client's own address, unknown (PySocks: "0")
            return name.decode("ascii")
        if not valid_hostname(name):
            await reader.readexactly(2)  # the port: the reply follows the whole request
            raise HandshakeError(f"bad domain {name[:64]!r}", reply(Reply.GENERAL_FAILURE))
        return name.decode("ascii")
    raise HandshakeError(f"address type {kind}", reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED))

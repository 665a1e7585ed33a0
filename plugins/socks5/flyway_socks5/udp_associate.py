"""SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): a UDP relay riding a datagram flow.

Theory of operation: the request opens a flow on the tunnel and waits for the
server's answer (a server without flows gets 0x07, as an unsupported command).
Then a UDP socket is bound on the address the control connection came in on
(port chosen by the system), and the reply names it: clients such as PySocks
connect their UDP socket to that address, so every answer leaves from it.

Each datagram from the client carries the SOCKS UDP header (RSV, FRAG, ATYP,
DST.ADDR, DST.PORT) before its data; RSV is not checked (nor is it by Dante).
It is taken only from the client that associated: the control connection's IP
address, and the port the request named (or, when it named port 0, the port of
the first datagram). The
unspecified forms clients send for "not known yet" (``0.0.0.0:0``, ``[::]:0``,
PySocks' domain ``"0"``) mean exactly that. A fragment (FRAG != 0), a bad
header and a datagram from anyone else are dropped and counted, as is one over
the session's datagram budget; a reply from the server goes back with the
header naming its source. The association ends when the control connection
does (either end closing it), or when the flow ends (the session went down).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from typing import TYPE_CHECKING

from flyway_core import Address, DatagramsUnsupported, TunnelUnavailable
from flyway_core.protocol import ResetReason
from flyway_core.udp import UdpEndpoint, open_udp
from flyway_socks5.base import Client, log, valid_hostname, wait_accepted

if TYPE_CHECKING:
    from collections.abc import Callable

    from flyway_core.interfaces import Flow

__all__ = ["Association", "associate", "udp_header"]

IPV4, DOMAIN, IPV6 = 1, 3, 4
_UNSPECIFIED_NAMES = {"0", ""}


def udp_header(source: Address) -> bytes:
    """The SOCKS UDP header naming ``source`` (an IP literal from the server; a name as ATYP 3)."""
    port = source.port.to_bytes(2, "big")
    try:
        ip = ipaddress.ip_address(source.host)
    except ValueError:
        name = source.host.encode("idna")[:255]
        return bytes([0, 0, 0, DOMAIN, len(name)]) + name + port
    kind = IPV4 if ip.version == 4 else IPV6
    return bytes([0, 0, 0, kind]) + ip.packed + port


def parse_datagram(packet: bytes) -> tuple[Address, bytes] | str:
    """Split a client's datagram into (destination, data), or say why it is refused."""
    if len(packet) < 4:  # RSV (2 bytes, ignored as Dante does), FRAG, ATYP
        return "bad header"
    if packet[2]:
        return "fragment"
    kind = packet[3]
    if kind == IPV4:
        start, host = 8, str(ipaddress.IPv4Address(packet[4:8])) if len(packet) >= 8 else ""
    elif kind == IPV6:
        start, host = 20, str(ipaddress.IPv6Address(packet[4:20])) if len(packet) >= 20 else ""
    elif kind == DOMAIN and len(packet) >= 5:
        start = 5 + packet[4]
        name = packet[5:start]
        host = name.decode("ascii") if len(name) == packet[4] and valid_hostname(name) else ""
    else:
        return "bad header"
    if not host or len(packet) < start + 2:
        return "bad header"
    port = int.from_bytes(packet[start : start + 2], "big")
    if port == 0:
        return "bad header"
    return Address(host, port), packet[start + 2 :]


def _unspecified(host: str) -> bool:
    if host in _UNSPECIFIED_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return True  # a name: not an address we could check datagrams against


def _plain_ip(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class Association:
    """One UDP association: the client's datagrams into the flow, the server's back out."""

    def __init__(self, flow: Flow, client_ip: str, declared: Address) -> None:
        self.flow = flow
        self.client_ip = _plain_ip(client_ip)
        self.client_port = declared.port or None  # None: locked to the first datagram's
        if not _unspecified(declared.host) and _plain_ip(declared.host) != self.client_ip:
            log.debug("UDP client says %s, its control connection %s", declared, client_ip)
        self.endpoint: UdpEndpoint | None = None
        self.drops: Counter[str] = Counter()
        self.relayed = 0

    def from_client(self, packet: bytes, host: str, port: int) -> None:
        if _plain_ip(host) != self.client_ip or (
            self.client_port is not None and port != self.client_port
        ):
            self.drops["foreign source"] += 1
            return
        parsed = parse_datagram(packet)
        if isinstance(parsed, str):
            self.drops[parsed] += 1
            return
        self.client_port = port
        destination, data = parsed
        if self.flow.send(destination, data):
            self.relayed += 1
        else:
            self.drops["over the datagram budget"] += 1

    def send_error(self, exc: Exception) -> None:
        """An error for an earlier send to the client (EMSGSIZE for an answer too large)."""
        self.drops[f"send error ({type(exc).__name__})"] += 1

    def from_server(self, source: Address, data: bytes) -> None:
        endpoint, port = self.endpoint, self.client_port
        if endpoint is None or port is None:
            self.drops["no client yet"] += 1
            return
        if not endpoint.send(udp_header(source) + data, self.client_ip, port):
            self.drops["local socket full"] += 1


async def associate(
    client: Client,
    declared: Address,
    *,
    success: Callable[[Address], bytes],
    failure: Callable[[int], bytes],
    unsupported: bytes,
) -> None:
    """Run one UDP association for ``client`` until its control connection ends."""
    writer = client.writer
    local = writer.get_extra_info("sockname")
    peer = writer.get_extra_info("peername")
    try:
        async with client.tunnel.open_flow(origin=client.origin) as flow:
            association = Association(flow, peer[0], declared)
            flow.on_datagram = association.from_server
            reason, message = await wait_accepted(flow)
            if reason is not None:
                log.debug("%s UDP: %s", client.origin, message)
                await client.refuse(failure(reason))
                return
            try:
                endpoint = await open_udp(  # an IPv4-mapped local address: bind its IPv4
                    _plain_ip(local[0]), 0, association.from_client, on_error=association.send_error
                )
            except OSError as exc:
                log.debug("%s UDP: cannot bind a relay socket: %s", client.origin, exc)
                await client.refuse(failure(ResetReason.INTERNAL))
                return
            association.endpoint = endpoint
            try:
                writer.write(success(Address(*endpoint.address)))
                await _until_over(client, flow)
            finally:
                endpoint.close()
                log.debug(
                    "%s UDP association over: %d datagrams out, %d dropped %s",
                    client.origin,
                    association.relayed,
                    sum(association.drops.values()),
                    dict(association.drops),
                )
    except DatagramsUnsupported as exc:
        log.debug("%s UDP: %s", client.origin, exc)
        await client.refuse(unsupported)
    except TunnelUnavailable as exc:
        log.debug("%s UDP: %s", client.origin, exc)
        await client.refuse(failure(ResetReason.INTERNAL))


async def _until_over(client: Client, flow: Flow) -> None:
    """Wait for the control connection to end (bytes on it are ignored), or the flow."""

    async def control_ends() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await client.reader.read(4096):
                pass

    control = asyncio.create_task(control_ends())
    over = asyncio.create_task(flow.wait_closed())
    try:
        await asyncio.wait({control, over}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (control, over):
            task.cancel()
        client.writer.close()

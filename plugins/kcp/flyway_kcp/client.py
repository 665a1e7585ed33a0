"""The client's end: a UDP socket to the server, the hello said until the server answers.

The socket is not connected: a connected one is told of every ICMP error (port unreachable
while the server restarts), and under uvloop the first such error stops the reader for
good (libuv stops a poll handle on POLLERR), so the session would hear nothing more. Sent
with ``sendto``; a datagram from any other address is dropped before it is opened, as the
kernel would have dropped it for a connected socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket

from flyway_core import DialError, ServerURL, describe_error
from flyway_core.protocol.crypto import (
    DATAGRAM_OVERHEAD,
    SERVER_SALT_SIZE,
    DatagramOpener,
    derive_master_key,
)
from flyway_core.protocol.errors import RemoteProtocolError
from flyway_kcp.carrier import KcpCarrier
from flyway_kcp.config import KcpConfig
from flyway_kcp.fec import FecEncoder
from flyway_kcp.handshake import conv_of, keys_for, seal_hello
from flyway_kcp.output import DatagramOutput
from flyway_kcp.stats import TALLY
from flyway_kcp.udp import BatchReader, Peer, udp_socket

__all__ = ["HELLO_RETRY", "dial"]

HELLO_RETRY = (0.2, 0.4, 0.8, 1.6, 2.0)  # seconds between hellos; the last repeats
HELLO_TIMEOUT = 10.0  # seconds without an answer before the dial fails


async def dial(server: ServerURL, hello: bytes, password: str, config: KcpConfig) -> KcpCarrier:
    """Open a conversation with ``server``; DialError if it does not answer in time."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(server.host, server.port, type=socket.SOCK_DGRAM)
        family, _, _, _, where = infos[0]
        peer: Peer = (str(where[0]), int(where[1]), *where[2:])
        sock = udp_socket(family)
    except OSError as exc:
        raise DialError(f"cannot reach {server}: {describe_error(exc).lower()}") from None
    master = derive_master_key(password)
    keys = keys_for(master, hello)
    k, m = config.fec
    output = DatagramOutput(sock, keys.client_sealer(), peer, FecEncoder(k, m) if k else None)
    reader: BatchReader | None = None

    def closed() -> None:
        TALLY.ended(carrier)
        if reader is not None:
            reader.close()
        sock.close()

    carrier = KcpCarrier(conv_of(keys), config, output, None, on_close=closed)
    TALLY.track(carrier, "client")
    # The server's datagrams start with its salt for this session; the first one that opens
    # fixes it. Until then each new salt costs an HKDF (only while dialing).
    server_salt = b""
    opener: DatagramOpener | None = None

    def on_datagram(data: bytes, address: Peer) -> None:
        nonlocal server_salt, opener
        if address != peer:
            return
        prefix = data[:SERVER_SALT_SIZE]
        if opener is None:
            if len(data) < DATAGRAM_OVERHEAD:
                return
            candidate = keys.client_opener(prefix)
            try:
                segments = candidate.open(data)
            except RemoteProtocolError:
                return
            server_salt, opener = prefix, candidate
        elif prefix != server_salt:
            return
        else:
            try:
                segments = opener.open(data)
            except RemoteProtocolError:
                return
        carrier.datagram_in(segments)

    reader = BatchReader(sock, on_datagram, carrier.batch_done)
    first = seal_hello(master, hello, config.fec)
    pauses = itertools.chain(HELLO_RETRY, itertools.repeat(HELLO_RETRY[-1]))
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            while not carrier.heard.is_set():
                with contextlib.suppress(OSError):  # the buffer is full: try again later
                    sock.sendto(first, peer)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next(pauses)):
                        await carrier.heard.wait()
    except TimeoutError:
        carrier.shutdown()
        raise DialError(f"no answer from {server.host}:{server.port} over UDP") from None
    except BaseException:
        carrier.shutdown()
        raise
    return carrier

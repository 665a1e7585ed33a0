"""The server's side of a datagram flow: a UDP socket toward the targets, under the policy.

Theory of operation. For each flow a client opens, ``FlowRelay`` opens one
unconnected UDP socket (dual-stack IPv6 where the host has IPv6, else IPv4;
wildcard address, ephemeral port), accepts the flow, and then relays in
callbacks until the flow is over:

- A datagram from the client names its destination. An IP literal is checked by
  the policy at once. A name is resolved once (``policy.resolve``) and its
  addresses, or its failure, kept for ``NAME_TTL`` seconds, at most ``MAX_NAMES``
  names per flow; each datagram is then checked by the policy (name, port and
  every address) as a stream's target is. While a name resolves, at most
  ``MAX_WAITING`` datagrams wait for it, ``WAITING_BYTES`` for all names
  together; at most ``MAX_RESOLVING`` names of a flow resolve at once, and a
  lookup shares the server's ``Resolvers`` (a few at a time in the whole server,
  each at most ``TARGET_TIMEOUT``), so flows never starve the streams' lookups.
  Anything beyond is dropped. Nothing here ever blocks.
- Multicast and broadcast destinations are dropped: the relay is for unicast.
- A datagram from a target is sent back (with its source address) only if the
  flow sent to that address and port before, as a port-restricted NAT does: the
  relay's port is no open door into the client. At most ``MAX_PEERS`` such
  addresses are kept per flow; the oldest is forgotten first.
- Whatever is dropped is counted by reason; ``flow.dropped`` has the total.

The UDP socket (``flyway_core.udp``) is bounded by the datagram budget: a
datagram that finds ``DATAGRAM_BUDGET`` bytes already waiting is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from flyway_core.address import Address
from flyway_core.errors import TargetError
from flyway_core.policy import IPAddress, resolve
from flyway_core.protocol import ResetReason
from flyway_core.udp import UdpEndpoint, open_udp

if TYPE_CHECKING:
    from flyway_core.flow import TunnelFlow
    from flyway_core.policy import Policy

__all__ = ["FlowRelay", "Resolvers"]

log = logging.getLogger(__name__)
NAME_TTL = 60.0
MAX_NAMES = 256
MAX_WAITING = 8
WAITING_BYTES = 64 << 10  # datagram bytes one flow holds while names resolve (or it opens)
MAX_RESOLVING = 4
MAX_PEERS = 256
RESOLVERS = 2  # flows' lookups at once in the whole server (the executor has a few more)
RESOLVE_TIMEOUT = 10.0

_Peer = tuple[bytes, int]  # packed address, port
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class Resolvers:
    """The server's lookups for flows: a few at a time, each bounded in time."""

    def __init__(self, at_once: int = RESOLVERS, timeout: float = RESOLVE_TIMEOUT) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._timeout = timeout

    async def resolve(self, name: Address) -> list[IPAddress]:
        """Resolve ``name``; TargetError when it does not resolve, or not in time."""
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout):
                    return await resolve(name)
            except TimeoutError:
                raise TargetError("timed out", reason=ResetReason.TIMED_OUT) from None


class FlowRelay:
    """Relays one flow's datagrams to their targets and their replies back.

    Build it when the flow opens and ``run`` it in a task: datagrams that came with
    the OpenFlow wait (``MAX_WAITING`` of them) until the socket is open.
    """

    def __init__(self, flow: TunnelFlow, policy: Policy, resolvers: Resolvers) -> None:
        self.flow = flow
        self.policy = policy
        self.resolvers = resolvers
        self.drops: Counter[str] = Counter()
        self._socket: UdpEndpoint | None = None
        self._dual = False  # the socket is IPv6 and reaches IPv4 as ::ffff:a.b.c.d
        self._peers: dict[_Peer, None] = {}  # where we sent: replies come only from these
        self._names: dict[str, tuple[float, list[IPAddress]]] = {}  # [] : did not resolve
        self._waiting: dict[str, list[tuple[Address, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._early: list[tuple[Address, bytes]] | None = []  # before the socket is open
        self._held = 0  # bytes of the datagrams in _early and _waiting
        flow.on_datagram = self._before_open

    def _before_open(self, address: Address, data: bytes) -> None:
        if self._early is not None and len(self._early) < MAX_WAITING and self._hold(data):
            self._early.append((address, data))
        else:
            self._drop("before the flow was ready")

    async def run(self, accept: Callable[[], None]) -> None:
        """Open the socket, accept the flow (``accept()``), relay until the flow is over."""
        self._socket = await self._open()
        try:
            early, self._early = self._early or [], None
            self._held = 0
            self.flow.on_datagram = self.outgoing
            for address, data in early:
                self.outgoing(address, data)
            accept()
            await self.flow.wait_closed()
        finally:
            for task in self._tasks:
                task.cancel()
            self._socket.close()
            if self.drops:
                log.debug("flow %d dropped %s", self.flow.stream_id, dict(self.drops))

    async def _open(self) -> UdpEndpoint:
        """One descriptor per flow: a dual-stack socket, or IPv4 alone without IPv6."""
        try:
            endpoint = await open_udp("::", 0, self.reply, on_error=self._send_error)
            self._dual = True
            return endpoint
        except OSError:
            pass
        try:
            return await open_udp("0.0.0.0", 0, self.reply, on_error=self._send_error)
        except OSError as exc:
            raise TargetError(
                f"cannot open a UDP socket ({exc.strerror or exc})", reason=ResetReason.INTERNAL
            ) from None

    # --- from the client toward targets --------------------------------------------------

    def outgoing(self, address: Address, data: bytes) -> None:
        """A datagram from the client to ``address``: check it, resolve it, send it."""
        if address.port == 0:
            self._drop("port 0")
            return
        try:
            literal: IPAddress | None = ipaddress.ip_address(address.host)
        except ValueError:
            literal = None
        if literal is not None:
            if self.policy.allows_all or self.policy.check(address):
                self._send(literal, address.port, data)
            else:
                self._drop("not allowed")
            return
        name = address.host.lower()
        known = self._names.get(name)
        if known is not None and known[0] > time.monotonic():
            self._send_to_name(address, known[1], data)
            return
        waiting = self._waiting.get(name)
        if waiting is not None:
            if len(waiting) < MAX_WAITING and self._hold(data):
                waiting.append((address, data))
            else:
                self._drop("waiting for a name")
            return
        if len(self._waiting) >= MAX_RESOLVING or not self._hold(data):
            self._drop("too many names resolving")
            return
        self._waiting[name] = [(address, data)]
        task = asyncio.get_running_loop().create_task(self._resolve(name, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str, address: Address) -> None:
        try:
            found = await self.resolvers.resolve(address)
        except TargetError:
            found = []
        except Exception as exc:  # a resolver's surprise must not leave datagrams waiting
            log.debug("resolving %s failed: %r", name, exc)
            found = []
        if len(self._names) >= MAX_NAMES:
            self._names.pop(next(iter(self._names)))
        self._names[name] = (time.monotonic() + NAME_TTL, found)
        for destination, data in self._waiting.pop(name, []):
            self._held -= len(data)
            self._send_to_name(destination, found, data)

    def _send_to_name(self, address: Address, found: list[IPAddress], data: bytes) -> None:
        """Send to a resolved name: its first IPv4 address, else IPv6, if the policy agrees.

        UDP has no connection to try address after address with, so one is chosen;
        IPv4 first, as a name's service is reachable there more often (Dante too
        resolves to IPv4).
        """
        if not found:
            self._drop("name not found")
        elif not self.policy.allows_all and not self.policy.check(address, found):
            self._drop("not allowed")
        else:
            usable = [ip for ip in found if ip.version == 4 or self._dual]
            if not usable:
                self._drop("no IPv6 here")
                return
            self._send(min(usable, key=lambda ip: ip.version), address.port, data)

    def _hold(self, data: bytes) -> bool:
        """Count ``data`` as held while it waits, unless that is over ``WAITING_BYTES``."""
        if self._held + len(data) > WAITING_BYTES:
            return False
        self._held += len(data)
        return True

    def _send(self, ip: IPAddress, port: int, data: bytes) -> None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # replies come back from the IPv4 address: remember that one
        endpoint = self._socket
        if endpoint is None or (ip.version == 6 and not self._dual):
            self._drop("no IPv6 here")
            return
        if ip.is_multicast or ip == _BROADCAST:
            self._drop("multicast or broadcast")
            return
        peer = (ip.packed, port)
        self._peers.pop(peer, None)
        self._peers[peer] = None  # the newest last: the oldest is forgotten first
        if len(self._peers) > MAX_PEERS:
            self._peers.pop(next(iter(self._peers)))
        host = f"::ffff:{ip}" if self._dual and ip.version == 4 else str(ip)
        if not endpoint.send(data, host, port):
            self._drop("socket buffer full")

    # --- from targets back to the client -------------------------------------------------

    def _send_error(self, exc: Exception) -> None:
        """An error for an earlier send: ICMP unreachable, EMSGSIZE, EACCES."""
        self.drops[f"send error ({type(exc).__name__})"] += 1

    def reply(self, data: bytes, host: str, port: int) -> None:
        """A datagram from ``host:port``: back to the client if we sent there before."""
        ip = ipaddress.ip_address(host.partition("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (ip.packed, port) not in self._peers:
            self._drop("unsolicited reply")
            return
        self.flow.send(Address(str(ip), port), data)  # counts its own drops (budget)

    def _drop(self, why: str) -> None:
        self.drops[why] += 1
        self.flow.dropped += 1

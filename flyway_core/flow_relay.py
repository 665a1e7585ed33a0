"""The server's side of a datagram flow: UDP sockets toward the targets, under the policy.

Theory of operation. For each flow a client opens, ``FlowRelay`` opens one
unconnected UDP socket (dual-stack IPv6 where the host has IPv6, else IPv4;
wildcard address, ephemeral port),
accepts the flow, and then relays in callbacks until the flow is over:

- A datagram from the client names its destination. An IP literal is checked by
  the policy at once; a name is resolved once (``Policy.admit``: resolved, every
  address checked) and the answer, or the refusal, kept for ``NAME_TTL`` seconds,
  at most ``MAX_NAMES`` names per flow. While a name resolves, at most
  ``MAX_WAITING`` datagrams wait for it (``WAITING_BYTES`` in all, for every
  name together), and at most ``MAX_RESOLVING`` names
  resolve at once; anything beyond is dropped. Nothing here ever blocks.
- A datagram from a target is sent back (with its source address) only if the
  flow sent to that address and port before, as a port-restricted NAT does: the
  relay's port is no open door into the client. At most ``MAX_PEERS`` such
  addresses are kept; the oldest is forgotten first.
- Whatever is dropped is counted by reason; ``flow.dropped`` has the total.

The UDP sockets (``flyway_core.udp``) are bounded by the datagram budget: a
datagram that finds ``DATAGRAM_BUDGET`` bytes already waiting is dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from flyway_core.address import Address
from flyway_core.errors import TargetError
from flyway_core.protocol import ResetReason
from flyway_core.udp import UdpEndpoint, open_udp

if TYPE_CHECKING:
    from flyway_core.flow import TunnelFlow
    from flyway_core.policy import Policy

__all__ = ["FlowRelay"]

log = logging.getLogger(__name__)
NAME_TTL = 60.0
MAX_NAMES = 256
MAX_WAITING = 8
WAITING_BYTES = 64 << 10  # datagram bytes one flow holds while names resolve (or it opens)
MAX_RESOLVING = 16
MAX_PEERS = 4096

_Peer = tuple[str, int]


class FlowRelay:
    """Relays one flow's datagrams to their targets and their replies back."""

    def __init__(self, flow: TunnelFlow, policy: Policy) -> None:
        self.flow = flow
        self.policy = policy
        self.drops: Counter[str] = Counter()
        self._socket: UdpEndpoint | None = None
        self._dual = False  # the socket is IPv6 and reaches IPv4 as ::ffff:a.b.c.d
        self._peers: dict[_Peer, None] = {}  # where we sent: replies come only from these
        self._names: dict[tuple[str, int], tuple[float, Address | None]] = {}
        self._waiting: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._early: list[tuple[Address, bytes]] | None = []  # before the sockets are open
        self._held = 0  # bytes of the datagrams in _early and _waiting
        flow.on_datagram = self._before_open

    def _before_open(self, address: Address, data: bytes) -> None:
        """Datagrams sent with the OpenFlow (no round trip) wait for the sockets, a few."""
        if self._early is not None and len(self._early) < MAX_WAITING and self._hold(data):
            self._early.append((address, data))
        else:
            self._drop("before the flow was ready")

    async def run(self, accept: Callable[[], None]) -> None:
        """Open the sockets, accept the flow (``accept()``), relay until the flow is over.

        Build the relay when the flow opens, and run it in a task: datagrams that came
        with the OpenFlow wait (``MAX_WAITING`` of them) until the sockets are open.
        """
        try:  # one descriptor per flow: a dual-stack socket, or IPv4 alone without IPv6
            self._socket = await open_udp(
                "::", 0, self.reply, on_error=self._icmp_error, family=socket.AF_INET6
            )
            self._dual = True
        except OSError:
            try:
                self._socket = await open_udp("0.0.0.0", 0, self.reply, on_error=self._icmp_error)
            except OSError as exc:
                raise TargetError(
                    f"cannot open a UDP socket ({exc.strerror or exc})",
                    reason=ResetReason.INTERNAL,
                ) from None
        try:
            early, self._early = self._early or [], None
            self._held -= sum(len(data) for _, data in early)
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

    # --- from the client toward targets --------------------------------------------------

    def outgoing(self, address: Address, data: bytes) -> None:
        """A datagram from the client to ``address``: check it, resolve it, send it."""
        if address.port == 0:
            self._drop("port 0")
            return
        if _literal(address.host):
            if self.policy.allows_all or self.policy.check(address):
                self._send(address, data)
            else:
                self._drop("not allowed")
            return
        key = (address.host.lower(), address.port)
        known = self._names.get(key)
        if known is not None and known[0] > time.monotonic():
            if known[1] is None:
                self._drop("not allowed or not found")
            else:
                self._send(known[1], data)
            return
        waiting = self._waiting.get(key)
        if waiting is not None:
            if len(waiting) < MAX_WAITING and self._hold(data):
                waiting.append(data)
            else:
                self._drop("waiting for a name")
            return
        if len(self._waiting) >= MAX_RESOLVING or not self._hold(data):
            self._drop("too many names resolving")
            return
        self._waiting[key] = [data]
        task = asyncio.get_running_loop().create_task(self._resolve(key, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, key: tuple[str, int], address: Address) -> None:
        try:
            found: Address | None = self._pick(await self.policy.admit(address))
        except TargetError:
            found = None
        except Exception as exc:  # a resolver's surprise must not leave datagrams waiting
            log.debug("resolving %s failed: %r", address, exc)
            found = None
        if len(self._names) >= MAX_NAMES:
            self._names.pop(next(iter(self._names)))
        self._names[key] = (time.monotonic() + NAME_TTL, found)
        for data in self._waiting.pop(key, []):
            self._held -= len(data)
            if found is None:
                self._drop("not allowed or not found")
            else:
                self._send(found, data)

    def _hold(self, data: bytes) -> bool:
        """Count ``data`` as held while it waits, unless that is over ``WAITING_BYTES``."""
        if self._held + len(data) > WAITING_BYTES:
            return False
        self._held += len(data)
        return True

    def _pick(self, addresses: list[Address]) -> Address | None:
        """The address to send a name's datagrams to: its first IPv4 one, else IPv6.

        UDP has no connection to try address after address with, so one is chosen;
        IPv4 first, as a name's service is reachable there more often (Dante too
        resolves to IPv4).
        """
        for want in (4, 6):
            if want == 6 and not self._dual:
                break
            for address in addresses:
                if ipaddress.ip_address(address.host).version == want:
                    return address
        return None

    def _send(self, address: Address, data: bytes) -> None:
        ip = ipaddress.ip_address(address.host)
        endpoint = self._socket
        if endpoint is None or (ip.version == 6 and not self._dual):
            self._drop("no IPv6 here")
            return
        peer = (str(ip), address.port)
        self._peers.pop(peer, None)
        self._peers[peer] = None  # the newest last: the oldest is forgotten first
        if len(self._peers) > MAX_PEERS:
            self._peers.pop(next(iter(self._peers)))
        host = f"::ffff:{ip}" if self._dual and ip.version == 4 else str(ip)
        if not endpoint.send(data, host, address.port):
            self._drop("socket buffer full")

    # --- from targets back to the client -------------------------------------------------

    def _icmp_error(self, exc: Exception) -> None:
        self.drops["icmp error"] += 1

    def reply(self, data: bytes, host: str, port: int) -> None:
        """A datagram from ``host:port``: back to the client if we sent there before."""
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        peer = (str(ip), port)
        if peer not in self._peers:
            self._drop("unsolicited reply")
            return
        self.flow.send(Address(*peer), data)  # counts its own drops (budget)

    def _drop(self, why: str) -> None:
        self.drops[why] += 1
        self.flow.dropped += 1


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

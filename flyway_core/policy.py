"""The server's policy: which targets clients may reach (``--allow``, ``--deny``, ...).

A rule is ``HOST[:PORTS]``. HOST is an exact name (``db.lan``), a wildcard domain
(``*.example.com``: every subdomain at any depth, not ``example.com`` itself), an
address or CIDR (``10.0.0.0/8``, ``::1/128``, ``[fe80::]/10``; brackets when IPv6 is
followed by ports), or ``*`` (any host). PORTS is ``N`` or ``N-M``; absent means all.

Order: a deny rule that matches wins; then, with any allow rule, only what an allow
rule matches is reachable; with no rules everything is (as with ``ssh -L``).
Name rules match the name the client asked for; address rules match the addresses
it resolves to, and every one of them is checked: one denied address denies the
name, and without a matching allow name rule, every address needs an allow rule.
The server resolves once (:meth:`Policy.admit`) and connects only to what it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from flyway_core.errors import ConfigError, TargetError
from flyway_core.protocol import Address, ResetReason

__all__ = ["NOT_ALLOWED", "IPAddress", "Policy", "Rule", "is_private", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NOT_ALLOWED = "not allowed by the server's policy"
_ALL_PORTS = (1, 65535)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


def is_private(address: IPAddress) -> bool:
    """Say whether ``--deny-private`` keeps clients off ``address``.

    That is every address ``ipaddress`` does not call global (RFC 1918, loopback,
    link-local, unique-local IPv6, CGNAT 100.64/10, 0.0.0.0/8, the broadcast
    address, documentation and reserved ranges), plus multicast; an IPv4-mapped
    IPv6 address is judged by its IPv4 address.
    """
    address = _unmapped(address)
    return not address.is_global or address.is_multicast


def _unmapped(address: IPAddress) -> IPAddress:
    """The address a connection to ``address`` really reaches, as the rules judge it.

    An IPv4-mapped IPv6 address is its IPv4 address; the unspecified address
    (0.0.0.0, ``::``) reaches this host's own services, so it is judged as loopback.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return _LOOPBACK[address.version]
    return address


_LOOPBACK: dict[int, IPAddress] = {
    4: ipaddress.IPv4Address("127.0.0.1"),
    6: ipaddress.IPv6Address("::1"),
}


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


def _ip(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return _unmapped(address)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``--allow`` or ``--deny`` value: a host pattern and a port range."""

    text: str
    name: str | None = None  # an exact name, or ".example.com" for a wildcard domain
    network: IPNetwork | None = None  # an address rule
    ports: tuple[int, int] = _ALL_PORTS  # any host when neither name nor network is set

    @classmethod
    def parse(cls, text: str, option: str = "--allow") -> Rule:
        """Parse one rule; ConfigError says what is wrong with it."""
        text = text.strip()
        host, ports = _split(text, option)
        rule = cls(text, ports=_ports(ports, text, option) if ports else _ALL_PORTS)
        if host == "*":
            return rule
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            pass
        else:
            return cls(text, network=network, ports=rule.ports)
        name = _normal(host)
        wildcard = name.startswith("*.")
        label = name[2:] if wildcard else name
        if not all(_LABEL.fullmatch(part) for part in label.split(".")):
            raise ConfigError(f"{option} {text}: {host!r} is not a host, *.domain or CIDR")
        return cls(text, name="." + label if wildcard else name, ports=rule.ports)

    def matches_name(self, name: str, port: int) -> bool:
        """Say whether the rule matches the name a client asked for (name rules only)."""
        if self.name is None or not self.ports[0] <= port <= self.ports[1]:
            return False
        if self.name.startswith("."):
            return name.endswith(self.name)
        return name == self.name

    def matches_address(self, address: IPAddress, port: int) -> bool:
        """Say whether the rule matches an address (address rules and ``*``)."""
        if self.name is not None or not self.ports[0] <= port <= self.ports[1]:
            return False
        return self.network is None or address in self.network


def _split(text: str, option: str) -> tuple[str, str]:
    """Split ``HOST[:PORTS]``: brackets or a bare IPv6 address (two colons) keep theirs."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        host_rest, colon, ports = rest.partition(":")
        if not bracket or (rest and not colon) or ":" in ports:
            raise ConfigError(f"{option} {text}: expected [IPV6[/LEN]][:PORTS]")
        return inside + host_rest, ports  # host_rest is a "/LEN" after the bracket
    if text.count(":") > 1:
        return text, ""
    host, _, ports = text.partition(":")
    return host, ports


def _ports(text: str, rule: str, option: str) -> tuple[int, int]:
    low, dash, high = text.partition("-")
    bounds = (low, high) if dash else (low, low)
    if not all(b.isdigit() and 0 < int(b) <= 65535 for b in bounds):
        raise ConfigError(f"{option} {rule}: {text!r} is not a port or range (1-65535)")
    first, last = int(bounds[0]), int(bounds[1])
    if first > last:
        raise ConfigError(f"{option} {rule}: the range {text!r} runs backwards")
    return first, last


@dataclass(frozen=True, slots=True)
class Policy:
    """The server's rules; ``Policy()`` allows everything."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    deny_private: bool = False

    @classmethod
    def parse(
        cls, allow: Iterable[str] = (), deny: Iterable[str] = (), deny_private: bool = False
    ) -> Policy:
        """Build a policy from option values; ConfigError for a bad rule."""
        allowed = tuple(Rule.parse(text, "--allow") for text in allow)
        denied = tuple(Rule.parse(text, "--deny") for text in deny)
        return cls(allowed, denied, deny_private)

    @property
    def allows_all(self) -> bool:
        """True without any rule: targets are dialled as the client sent them."""
        return not (self.allow or self.deny or self.deny_private)

    def check(self, target: Address, addresses: Iterable[IPAddress] = ()) -> bool:
        """Say whether ``target`` may be reached at all of ``addresses`` (its resolved ones).

        A literal address target is checked as its own address.
        """
        literal = _ip(target.host)
        name = "" if literal is not None else _normal(target.host or "localhost")
        found = [literal] if literal is not None else [_unmapped(a) for a in addresses]
        port = target.port
        if name and any(rule.matches_name(name, port) for rule in self.deny):
            return False
        for address in found:
            if self.deny_private and is_private(address):
                return False
            if any(rule.matches_address(address, port) for rule in self.deny):
                return False
        if not self.allow:
            return True
        if name and any(rule.matches_name(name, port) for rule in self.allow):
            return True
        return bool(found) and all(
            any(rule.matches_address(address, port) for rule in self.allow) for address in found
        )

    def __str__(self) -> str:
        parts = [f"allow {', '.join(r.text for r in self.allow)}"] if self.allow else []
        parts += [f"deny {', '.join(r.text for r in self.deny)}"] if self.deny else []
        parts += ["deny private addresses"] if self.deny_private else []
        return "; ".join(parts) or "every target (no rules)"

    async def admit(self, target: Address) -> list[Address]:
        """Resolve ``target`` once and check it: the addresses to connect to, in order.

        Raise TargetError: NOT_ALLOWED when a rule refuses it, NAME_NOT_FOUND when
        the name does not resolve.
        """
        literal = _ip(target.host)
        if literal is not None:
            found = [literal]
        else:
            found = await resolve(target)
        if not self.check(target, found):
            raise TargetError(NOT_ALLOWED, reason=ResetReason.NOT_ALLOWED)
        return [Address(str(address), target.port) for address in found]


async def resolve(target: Address) -> list[IPAddress]:
    """Resolve ``target``'s name once (TargetError NAME_NOT_FOUND if it does not resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            target.host or "localhost", target.port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise TargetError(
            f"name not found ({exc.strerror})", reason=ResetReason.NAME_NOT_FOUND
        ) from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = _ip(str(sockaddr[0]))
        if address is not None and address not in found:
            found.append(address)
    if not found:
        raise TargetError("name not found (no addresses)", reason=ResetReason.NAME_NOT_FOUND)
    return found

"""The server's policy: rule syntax, the order rules apply in, and refusals end to end."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import os
import signal
import socket
import subprocess
import time

import pytest
from flyway_procs import FLYWAY, flyway
from rich.console import Console

from flyway_core import Address, ConfigError, Settings, TargetError, hookimpl
from flyway_core.console import ConsoleReporter
from flyway_core.events import StreamDown
from flyway_core.forward import parse_forward
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.policy import NOT_ALLOWED, Policy, Rule, is_private
from flyway_core.protocol import ResetReason
from flyway_core.testing import (
    EchoServer,
    free_port,
    joined_tunnel,
    listening,
    run_pair,
    wait_for,
    wait_port,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def allowed(policy: Policy, host: str, port: int, *resolved: str) -> bool:
    return policy.check(Address(host, port), [ip(a) for a in resolved])


# --- syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "network", "ports"),
    [
        ("db.lan", "db.lan", None, (1, 65535)),
        ("DB.Lan.:5432", "db.lan", None, (5432, 5432)),
        ("*.example.com", ".example.com", None, (1, 65535)),
        ("*", None, None, (1, 65535)),
        ("*:1-1024", None, None, (1, 1024)),
        ("10.0.0.0/8", None, "10.0.0.0/8", (1, 65535)),
        ("10.0.0.0/8:22", None, "10.0.0.0/8", (22, 22)),
        ("127.0.0.1:80", None, "127.0.0.1/32", (80, 80)),
        ("::1/128", None, "::1/128", (1, 65535)),
        ("fe80::/10", None, "fe80::/10", (1, 65535)),
        ("[::1]:22", None, "::1/128", (22, 22)),
        ("[fc00::]/7:8000-8999", None, "fc00::/7", (8000, 8999)),
    ],
)
def test_every_rule_kind_parses(
    text: str, name: str | None, network: str | None, ports: tuple[int, int]
) -> None:
    rule = Rule.parse(text)
    assert rule.name == name
    assert (str(rule.network) if rule.network else None) == network
    assert rule.ports == ports


@pytest.mark.parametrize(
    "text", ["", "*.", "a..b", "foo*.com", "x.*.com", "host:0", "host:9-1", "host:http",
             "10.0.0.0/33", "[::1", "[::1]22", "[::1]:1:2", "*:70000"],
)  # fmt: skip
def test_a_bad_rule_is_a_config_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match="--deny"):
        Policy.parse(deny=[text])


def test_a_policy_describes_itself_for_the_servers_startup_panel() -> None:
    assert str(Policy.parse()) == "every target (no rules)"
    policy = Policy.parse(
        allow=[" *.example.com", "10.0.0.0/8:22"], deny=["*:25"], deny_private=True
    )
    assert str(policy) == "allow *.example.com, 10.0.0.0/8:22; deny *:25; deny private addresses"


# --- what each kind matches -------------------------------------------------------------


def test_no_rules_allow_everything_loopback_included() -> None:
    policy = Policy.parse()
    assert policy.allows_all
    assert allowed(policy, "127.0.0.1", 22)
    assert allowed(policy, "localhost", 22, "127.0.0.1", "::1")


def test_an_exact_name_matches_only_that_name_and_its_ports() -> None:
    policy = Policy.parse(allow=["example.com:443"])
    assert allowed(policy, "example.com", 443, "93.184.216.34")
    assert allowed(policy, "EXAMPLE.com.", 443, "93.184.216.34")
    assert not allowed(policy, "example.com", 80, "93.184.216.34")
    assert not allowed(policy, "www.example.com", 443, "93.184.216.34")
    assert not allowed(policy, "93.184.216.34", 443)  # a name rule never matches an address


def test_a_wildcard_matches_subdomains_at_any_depth_but_not_the_bare_domain() -> None:
    policy = Policy.parse(allow=["*.example.com"])
    assert allowed(policy, "a.example.com", 80, "93.184.216.34")
    assert allowed(policy, "a.b.example.com", 80, "93.184.216.34")
    assert not allowed(policy, "example.com", 80, "93.184.216.34")
    assert not allowed(policy, "badexample.com", 80, "93.184.216.34")


def test_a_cidr_matches_literal_addresses_and_every_resolved_one() -> None:
    policy = Policy.parse(allow=["10.0.0.0/8", "2001:db8::/32"])
    assert allowed(policy, "10.1.2.3", 80)
    assert allowed(policy, "2001:db8::5", 80)
    assert not allowed(policy, "11.0.0.1", 80)
    assert allowed(policy, "intranet", 80, "10.0.0.1", "2001:db8::1")
    assert not allowed(policy, "intranet", 80, "10.0.0.1", "8.8.8.8")  # every address counts


def test_an_ipv4_mapped_ipv6_address_is_judged_as_its_ipv4_address() -> None:
    policy = Policy.parse(deny=["127.0.0.0/8"])
    assert not allowed(policy, "::ffff:127.0.0.1", 80)
    assert not allowed(policy, "sneaky", 80, "::ffff:127.0.0.1")


def test_port_ranges_limit_a_rule_to_its_ports() -> None:
    policy = Policy.parse(deny=["*:1-1024", "10.0.0.0/8:2222"])
    assert not allowed(policy, "8.8.8.8", 80)
    assert allowed(policy, "8.8.8.8", 8080)
    assert not allowed(policy, "10.0.0.1", 2222)
    assert allowed(policy, "10.0.0.1", 2223)
    assert not allowed(policy, "::1", 22)


# --- the order ------------------------------------------------------------------------


def test_deny_wins_over_allow() -> None:
    policy = Policy.parse(
        allow=["*.example.com", "10.0.0.0/8"], deny=["bad.example.com", "10.0.0.5"]
    )
    assert allowed(policy, "good.example.com", 80, "93.184.216.34")
    assert not allowed(policy, "bad.example.com", 80, "93.184.216.34")
    assert allowed(policy, "10.0.0.4", 80)
    assert not allowed(policy, "10.0.0.5", 80)


def test_with_any_allow_rule_only_what_one_matches_is_reachable() -> None:
    policy = Policy.parse(allow=["db.lan:5432"])
    assert allowed(policy, "db.lan", 5432, "10.0.0.7")
    assert not allowed(policy, "other.lan", 5432, "10.0.0.8")
    assert not allowed(policy, "8.8.8.8", 53)


def test_deny_rules_alone_leave_the_rest_reachable() -> None:
    policy = Policy.parse(deny=["*.corp"])
    assert not allowed(policy, "wiki.corp", 80, "10.0.0.1")
    assert allowed(policy, "example.com", 80, "93.184.216.34")


def test_a_name_that_resolves_to_a_denied_address_is_denied() -> None:
    policy = Policy.parse(allow=["*.example.com"], deny=["127.0.0.0/8", "::1/128"])
    assert allowed(policy, "www.example.com", 443, "93.184.216.34")
    assert not allowed(policy, "rebind.example.com", 443, "127.0.0.1")
    assert not allowed(policy, "rebind.example.com", 443, "93.184.216.34", "::1")
    private = Policy.parse(allow=["*.example.com"], deny_private=True)
    assert not allowed(private, "rebind.example.com", 443, "10.1.1.1")


# --- --deny-private -------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.255.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
     "169.254.169.254", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
     "255.255.255.255", "224.0.0.251", "239.255.255.250", "::1", "::", "fe80::1",
     "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_deny_private_covers_the_lan_loopback_and_the_like(address: str) -> None:
    assert is_private(ip(address))
    assert not allowed(Policy.parse(deny_private=True), address, 80)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "2606:4700::1111"]
)
def test_deny_private_leaves_global_addresses_reachable(address: str) -> None:
    assert not is_private(ip(address))
    policy = Policy.parse(deny_private=True)
    assert allowed(policy, address, 443)
    assert allowed(policy, "dns.example", 443, address)


# --- resolving once -------------------------------------------------------------------


async def test_admit_resolves_names_and_returns_only_checked_addresses() -> None:
    addresses = await Policy.parse(deny=["10.0.0.0/8"]).admit(Address("localhost", 22))
    assert addresses
    assert {a.host for a in addresses} <= {"127.0.0.1", "::1"}
    assert all(a.port == 22 for a in addresses)


async def test_admit_refuses_localhost_under_deny_private() -> None:
    with pytest.raises(TargetError, match=NOT_ALLOWED) as caught:
        await Policy.parse(deny_private=True).admit(Address("localhost", 22))
    assert caught.value.reason == ResetReason.NOT_ALLOWED


async def test_a_name_that_does_not_resolve_keeps_its_own_reason() -> None:
    with pytest.raises(TargetError, match="name not found") as caught:
        await Policy.parse(deny_private=True).admit(Address("flyway-policy-test.invalid", 80))
    assert caught.value.reason == ResetReason.NAME_NOT_FOUND


# --- end to end -----------------------------------------------------------------------


async def _echoes(local: Address) -> None:
    reader, writer = await asyncio.open_connection(local.host, local.port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()


async def _refused(local: Address) -> None:
    reader, writer = await asyncio.open_connection(local.host, local.port)
    assert await reader.read() == b""
    writer.close()


async def test_deny_private_refuses_loopback_by_address_and_by_name() -> None:
    server = EchoServer()
    async with server as echo:
        targets = [echo, Address("localhost", echo.port), Address("::1", echo.port)]
        settings = Settings(password="pw", policy=Policy.parse(deny_private=True))
        async with run_pair(targets, server_settings=settings) as pair, asyncio.timeout(10):
            for target in targets:
                await _refused(pair.local(target))
            await wait_for(lambda: sum(isinstance(e, StreamDown) for e in pair.client_events) == 3)
            errors = [e.error for e in pair.client_events if isinstance(e, StreamDown)]
            assert errors == [NOT_ALLOWED] * 3
            logged = [e.error for e in pair.server_events if isinstance(e, StreamDown)]
            assert all(NOT_ALLOWED in (error or "") for error in logged)
        assert server.connections == 0


async def test_a_refused_forward_is_one_console_line_at_default_verbosity() -> None:
    target = Address("127.0.0.1", 9)
    settings = Settings(password="pw", policy=Policy.parse(deny=["127.0.0.0/8:1-1024"]))
    async with run_pair([target], server_settings=settings) as pair, asyncio.timeout(10):
        await _refused(pair.local(target))
        await _refused(pair.local(target))
        await wait_for(lambda: sum(isinstance(e, StreamDown) for e in pair.client_events) == 2)
        out = io.StringIO()
        reporter = ConsoleReporter(Console(file=out, width=200))
        for event in pair.client_events:
            reporter.on_event(event)
    lines = [line for line in out.getvalue().splitlines() if "127.0.0.1:9" in line]
    assert len(lines) == 2
    assert all(line.endswith(f"127.0.0.1:9: {NOT_ALLOWED}") for line in lines)


async def test_without_rules_lport_to_hport_still_reaches_the_servers_loopback() -> None:
    async with EchoServer() as echo:
        target = parse_forward(f"1080::{echo.port}").target  # -L LPORT::HPORT
        async with run_pair([target]) as pair, asyncio.timeout(10):
            await _echoes(pair.local(target))


async def test_an_allowed_name_connects_to_its_checked_addresses_in_turn() -> None:
    async with EchoServer() as echo:  # on 127.0.0.1 only: ::1, if listed first, is refused
        target = Address("localhost", echo.port)
        settings = Settings(password="pw", policy=Policy.parse(allow=["localhost"]))
        async with run_pair([target], server_settings=settings) as pair, asyncio.timeout(10):
            await _echoes(pair.local(target))


async def test_an_allowed_name_resolving_to_a_denied_address_is_refused() -> None:
    async with EchoServer() as echo:
        target = Address("localhost", echo.port)
        policy = Policy.parse(allow=["localhost"], deny=["127.0.0.0/8", "::1/128"])
        settings = Settings(password="pw", policy=policy)
        async with run_pair([target], server_settings=settings) as pair, asyncio.timeout(10):
            await _refused(pair.local(target))
            await wait_for(lambda: any(isinstance(e, StreamDown) for e in pair.client_events))
            (down,) = [e for e in pair.client_events if isinstance(e, StreamDown)]
            assert down.error == NOT_ALLOWED


async def test_the_policy_applies_before_any_dialer_plugin_is_asked(echo_server: Address) -> None:
    asked: list[Address] = []
    dialed: list[Address] = []

    class Chain:
        """A dialer plugin that would reach anything it is given."""

        @hookimpl
        def dial_upstream(self, target: Address, settings: Settings) -> Chain:
            asked.append(target)
            return self

        async def connect(self, target: Address, protocol: asyncio.Protocol) -> None:
            dialed.append(target)
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: protocol, target.host, target.port)

    pm = make_plugin_manager(entry_points=False)
    pm.register(Chain(), name="chain")
    policy = Policy.parse(allow=["localhost"], deny=[f"*:{echo_server.port + 1}"])
    settings = Settings(password="pw", policy=policy)
    async with joined_tunnel(settings, Plugins(pm)) as tunnel, asyncio.timeout(5):
        async with tunnel.open_stream(Address("127.0.0.1", echo_server.port)) as stream:
            with pytest.raises(TargetError, match=NOT_ALLOWED) as caught:
                await stream.accepted()
            assert caught.value.reason == ResetReason.NOT_ALLOWED
        assert asked == dialed == []
        async with tunnel.open_stream(Address("localhost", echo_server.port)) as stream:
            await stream.accepted()
    assert asked == [Address("localhost", echo_server.port)]
    assert dialed[-1] == echo_server  # a checked address, not the name again


# --- the command line -----------------------------------------------------------------


def test_a_bad_rule_on_the_command_line_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [*FLYWAY, "--allow", "10.0.0.0/8:99999", "-p", "pw"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if not line.startswith("flyway: plugin ")] == [
        "flyway: --allow 10.0.0.0/8:99999: '99999' is not a port or range (1-65535)"
    ]


def test_deny_private_on_the_server_is_a_log_line_on_the_forwarding_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as target:  # listening, never reached
        hport, port, local = target.getsockname()[1], free_port(), free_port()
        with flyway([f"127.0.0.1:{port}", "-p", "pw", "--deny-private"]) as server:
            wait_port(port)
            with flyway(["-w", "-L", f"{local}::{hport}",
                         f"127.0.0.1:{port}", "-p", "pw"]) as client:  # fmt: skip
                wait_port(local)
                time.sleep(0.3)
                for _ in range(3):
                    with socket.create_connection(("127.0.0.1", local), timeout=5) as conn:
                        assert conn.recv(1) == b""
                time.sleep(0.3)
                client.send_signal(signal.SIGTERM)
                _, client_err = client.communicate(timeout=5)
            server.send_signal(signal.SIGTERM)
            _, server_err = server.communicate(timeout=5)
    refused = [line for line in client_err.splitlines() if NOT_ALLOWED in line]
    # one per connection: ours, and wait_port's probe if the tunnel was up by then
    assert len(refused) in (3, 4)
    assert all(f"localhost:{hport}: {NOT_ALLOWED}" in line for line in refused)
    assert NOT_ALLOWED in server_err
    assert "Traceback" not in client_err + server_err


# --- what proxy clients see (flyway-socks5, when installed) ---------------------------


async def test_a_refusal_is_socks5_reply_2_and_http_proxy_403(echo_server: Address) -> None:
    socks = pytest.importorskip("flyway_socks5.listener")
    settings = Settings(password="pw", policy=Policy.parse(deny_private=True))
    async with joined_tunnel(settings) as tunnel, asyncio.timeout(10):
        listener = socks.Socks5Listener(Address("127.0.0.1", 0))
        async with listening(listener, tunnel) as proxy:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            port = echo_server.port.to_bytes(2, "big")
            writer.write(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port)
            assert await reader.readexactly(2) == b"\x05\x00"
            assert (await reader.readexactly(3))[:2] == b"\x05\x02"  # not allowed by ruleset
            writer.close()
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            where = f"localhost:{echo_server.port}"
            writer.write(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n\r\n".encode())
            assert (await reader.readline()).startswith(b"HTTP/1.1 403")
            writer.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
def test_the_unspecified_address_is_judged_as_loopback(host: str) -> None:
    # A connection or datagram to 0.0.0.0 (or ::) reaches this host's own services.
    assert not Policy.parse(deny=["127.0.0.0/8", "::1"]).check(Address(host, 53))
    assert not Policy.parse(deny_private=True).check(Address(host, 53))
    assert Policy.parse(deny=["10.0.0.0/8"]).check(Address(host, 53))

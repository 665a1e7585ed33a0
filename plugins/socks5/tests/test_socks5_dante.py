"""A reference server side by side: the same SOCKS5 bytes to flyway's -D and to Dante.

Dante (Debian's dante-server, ``danted``, started per test on another loopback port) is
the SOCKS server the others are measured against. Each test sends one request to both
and compares the reply code (REP) and what the connection does after it. Where the two
differ, the test says why. BND.ADDR/BND.PORT are compared loosely: Dante reports its
real bound address; flyway reports the server side's address where the tunnel protocol
carries it, 0.0.0.0:0 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import socks
from flyway_socks5 import Socks5Listener

from flyway_core import Address, Settings
from flyway_core.policy import Policy
from flyway_core.testing import joined_tunnel, listening
from flyway_core.testing.udp import udp_echo

if TYPE_CHECKING:
    from intermediaries import Child

pytest_plugins = ["intermediaries"]
StartProxy = Callable[..., Any]  # the start_proxy fixture (conftest.py)

NO_AUTH = b"\x05\x01\x00"
ANY = ipaddress.IPv4Address("0.0.0.0")
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
SILENCE = 1.0  # how long a server that does not close is given to say something


@dataclass(frozen=True, slots=True)
class Answer:
    """What one SOCKS5 exchange got back."""

    method: bytes  # the reply to the greeting
    reply: bytes  # the whole reply to the request (b"" if none)
    closed: bool  # the server closed the connection after it (within SILENCE)

    @property
    def rep(self) -> int | None:
        return self.reply[1] if len(self.reply) >= 2 else None

    @property
    def bound(self) -> tuple[ipaddress.IPv4Address, int]:
        assert self.reply[3] == 1, self.reply.hex()  # both answer with an IPv4 BND.ADDR
        return ipaddress.IPv4Address(self.reply[4:8]), struct.unpack(">H", self.reply[8:10])[0]


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.read(4)
    while 0 < len(head) < 4:
        more = await reader.read(4 - len(head))
        if not more:
            return head
        head += more
    if len(head) < 4:
        return head
    sizes = {1: 4, 4: 16}
    if head[3] == 3:
        length = await reader.readexactly(1)
        return head + length + await reader.readexactly(length[0] + 2)
    return head + await reader.readexactly(sizes.get(head[3], 4) + 2)


async def _exchange(
    port: int, request: bytes, *, greeting: bytes = NO_AUTH, then: bytes = b""
) -> tuple[Answer, bytes]:
    """Greet, send ``request``, read the reply; then send ``then`` and read it echoed."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(greeting)
            method = await reader.read(2)
            reply = b""
            if method[:2] == b"\x05\x00" and request:
                writer.write(request)
                with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError):
                    async with asyncio.timeout(SILENCE):
                        reply = await _read_reply(reader)
            echoed = b""
            if then:
                writer.write(then)
                echoed = await reader.readexactly(len(then))
            closed = False
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(SILENCE if not then else 0.05):
                    while await reader.read(65536):  # the rest of an HTTP answer
                        pass
                    closed = True
            return Answer(method, reply, closed), echoed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _connect(command: int, atyp: int, address: bytes, port: int) -> bytes:
    return bytes([5, command, 0, atyp]) + address + struct.pack(">H", port)


def _ipv4(port: int, command: int = 1) -> bytes:
    return _connect(command, 1, socket.inet_aton("127.0.0.1"), port)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("by", ["ipv4", "domain"])
async def test_connect_is_granted_by_both_and_carries_the_same_bytes(
    proxy: Address, dante_server: Child, echo_server: Address, by: str
) -> None:
    port = echo_server.port
    request = _ipv4(port) if by == "ipv4" else _connect(1, 3, b"\x09localhost", port)
    data = os.urandom(64 * 1024)
    (flyway, f_echo), (dante, d_echo) = await asyncio.gather(
        _exchange(proxy.port, request, then=data),
        _exchange(dante_server.port, request, then=data),
    )
    assert flyway.method == dante.method == b"\x05\x00"
    assert flyway.rep == dante.rep == 0x00
    digest = hashlib.sha256(data).digest()
    assert hashlib.sha256(f_echo).digest() == hashlib.sha256(d_echo).digest() == digest
    # BND: Dante names its own end of the connection to the target; flyway does the same
    # once the tunnel carries the server's local address, 0.0.0.0:0 until then.
    d_addr, d_port = dante.bound
    assert d_addr == LOOPBACK and d_port != 0
    assert flyway.bound == (ANY, 0) or (flyway.bound[0] == LOOPBACK and flyway.bound[1] != 0)


async def test_a_closed_port_is_refused_by_both(proxy: Address, dante_server: Child) -> None:
    request = _ipv4(_closed_port())
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    assert flyway.rep == dante.rep == 0x05  # connection refused
    # RFC 1928 wants the close "shortly after" a failure reply (within 10 s): flyway
    # closes at once, Dante only later (not within SILENCE), so only flyway's is checked.
    assert flyway.closed
    # Dante still reports the local address it dialled from; flyway has none to report.
    assert dante.bound[0] == LOOPBACK
    assert flyway.bound[0] in (ANY, LOOPBACK)


async def test_an_unknown_command_gets_0x07_from_flyway_and_a_bare_close_from_dante(
    proxy: Address, dante_server: Child, echo_server: Address
) -> None:
    request = _ipv4(echo_server.port, command=0x09)
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    # RFC 1928 defines 0x07 "command not supported" for this; Dante logs "unknown
    # socks_v5 command: 9" and closes without a reply.
    assert (flyway.rep, flyway.closed) == (0x07, True)
    assert (dante.reply, dante.closed) == (b"", True)


async def test_bind_is_dantes_and_not_flyways(proxy: Address, dante_server: Child) -> None:
    request = _connect(0x02, 1, b"\0\0\0\0", 0)
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    # Dante listens for the target's connection and answers with where; flyway's
    # tunnel only dials out, so BIND gets 0x07 (command not supported) and a close.
    assert dante.rep == 0x00
    assert dante.bound[0] == LOOPBACK and dante.bound[1] != 0
    assert (flyway.rep, flyway.closed) == (0x07, True)


async def test_udp_associate_is_granted_by_both_on_the_control_connections_address(
    proxy: Address, dante_server: Child
) -> None:
    request = _connect(0x03, 1, b"\0\0\0\0", 0)
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    assert flyway.rep == dante.rep == 0x00
    for answer in (flyway, dante):  # the relay is on the address the client came to
        assert answer.bound[0] == LOOPBACK and answer.bound[1] != 0


def _udp_header(port: int, frag: int = 0) -> bytes:
    return bytes([0, 0, frag, 1]) + socket.inet_aton("127.0.0.1") + struct.pack(">H", port)


def _udp_session(proxy_port: int, echo_port: int) -> list[tuple[str, bytes | None]]:
    """One PySocks association; then raw datagrams on its socket. What came back for each."""
    with socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port)
        sock.settimeout(2)
        data = os.urandom(20000)
        sock.sendto(data, ("127.0.0.1", echo_port))
        answer, _ = sock.recvfrom(65535)
        whole = hashlib.sha256(answer).digest() == hashlib.sha256(data).digest()
        seen: list[tuple[str, bytes | None]] = [("echo whole", b"yes" if whole else b"no")]
        raw = [
            ("fragment", _udp_header(echo_port, frag=1) + b"part"),
            ("reserved bits set", b"\0\1" + _udp_header(echo_port)[2:] + b"rsv"),
            ("empty payload", _udp_header(echo_port)),
            ("after them", _udp_header(echo_port) + b"again"),
        ]
        for label, packet in raw:  # the socket is connected to the relay: send as is
            socket.socket.send(sock, packet)
            try:
                got: bytes | None = socket.socket.recv(sock, 65535)[10:]  # past the header
            except TimeoutError:
                got = None
            seen.append((label, got))
    return seen


async def test_udp_datagrams_fare_the_same_through_both(
    proxy: Address, dante_server: Child
) -> None:
    async with udp_echo() as echo:
        flyway = await asyncio.to_thread(_udp_session, proxy.port, echo.address.port)
        dante = await asyncio.to_thread(_udp_session, dante_server.port, echo.address.port)
    # Both relay a datagram of 20000 bytes whole, drop a fragment (neither reassembles:
    # Dante logs "fragmented socks udp packets are not supported"), ignore the reserved
    # bytes, and carry an empty datagram.
    assert flyway == dante
    assert dict(flyway) == {
        "echo whole": b"yes",
        "fragment": None,
        "reserved bits set": b"rsv",
        "empty payload": b"",
        "after them": b"again",
    }


async def test_an_unknown_address_type_gets_0x08_from_flyway_and_a_bare_close_from_dante(
    proxy: Address, dante_server: Child, echo_server: Address
) -> None:
    request = _connect(1, 0x05, socket.inet_aton("127.0.0.1"), echo_server.port)
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    # RFC 1928 has 0x08 "address type not supported"; Dante drops the connection.
    assert (flyway.rep, flyway.closed) == (0x08, True)
    assert (dante.reply, dante.closed) == (b"", True)


async def test_a_request_with_the_wrong_version_gets_no_reply_from_either(
    proxy: Address, dante_server: Child, echo_server: Address
) -> None:
    request = b"\x04" + _ipv4(echo_server.port)[1:]
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_server.port, request)
    # RFC 1928 defines no reply for it. flyway closes at once; Dante keeps reading
    # (its log: "error after reading 13 bytes ... eof from local client") until the
    # client gives up, so only its silence is compared.
    assert flyway.reply == dante.reply == b""
    assert flyway.closed


async def test_no_acceptable_method_gets_05_ff_and_a_close_from_both(
    proxy: Address, dante_server: Child
) -> None:
    greeting = b"\x05\x01\x02"  # username/password only, and neither side has credentials
    flyway, _ = await _exchange(proxy.port, b"", greeting=greeting)
    dante, _ = await _exchange(dante_server.port, b"", greeting=greeting)
    assert flyway.method == dante.method == b"\x05\xff"
    assert flyway.closed and dante.closed


async def test_a_greeting_of_another_version_is_not_socks_to_either(
    proxy: Address, dante_server: Child
) -> None:
    greeting = b"\x06\x01\x00"
    flyway, _ = await _exchange(proxy.port, b"", greeting=greeting)
    dante, _ = await _exchange(dante_server.port, b"", greeting=greeting)
    # Dante closes without a byte ("unknown SOCKS version 6"). flyway's port is also an
    # HTTP proxy (first byte not 4 or 5), so it answers this as a malformed HTTP request.
    assert (dante.method, dante.closed) == (b"", True)
    assert flyway.method == b"HT" and flyway.closed


# --- a Dante with rules: a blocked address, and username/password (RFC 1929) -------------

BLOCKED = "127.0.0.2"  # Dante's `socks block` rule; flyway's --deny
DANTE_RULES = """\
logoutput: @DIR@/danted.log
internal: 127.0.0.1 port = @PORT@
external: 127.0.0.1
socksmethod: username none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks block {
  from: 0.0.0.0/0 to: @BLOCKED@/32
  log: error connect
}
socks pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
  command: connect
  log: error connect
}
"""
# Dante's "username" method checks the system's password database. Its own copy of
# /etc/passwd and /etc/shadow, with alice added, is bind-mounted over the real ones in
# a mount namespace of danted's own (unshare --mount): the machine's files stay as
# they are.
_IN_OWN_MOUNTS = (
    "mount --bind {dir}/passwd /etc/passwd && mount --bind {dir}/shadow /etc/shadow && "
    'exec "$0" "$@"'
)


@pytest.fixture
def dante_with_rules() -> Iterator[Child]:
    """danted offering "none" and username/password (alice:s3cret), blocking BLOCKED."""
    # at run time only: imported with this module, pytest could not rewrite its asserts
    from intermediaries import binary_or_skip
    from intermediaries.children import make_workdir, running, spawn

    danted = binary_or_skip("danted")
    unshare, openssl = binary_or_skip("unshare"), binary_or_skip("openssl")
    if os.geteuid() != 0:
        pytest.skip("a user of danted's own needs root (a mount namespace, /etc/shadow)")
    hashed = subprocess.run(
        [openssl, "passwd", "-6", "s3cret"], capture_output=True, text=True, check=True
    ).stdout.strip()

    def start(port: int) -> Child:
        workdir = make_workdir("dante")
        passwd = Path("/etc/passwd").read_text().rstrip("\n")
        shadow = Path("/etc/shadow").read_text().rstrip("\n")
        (workdir / "passwd").write_text(f"{passwd}\nalice:x:4242:4242::/nonexistent:/bin/false\n")
        (workdir / "shadow").write_text(f"{shadow}\nalice:{hashed}:19000:0:99999:7:::\n")
        (workdir / "shadow").chmod(0o600)
        config = workdir / "danted.conf"
        rules = {"@DIR@": str(workdir), "@PORT@": str(port), "@BLOCKED@": BLOCKED}
        text = DANTE_RULES
        for name, value in rules.items():
            text = text.replace(name, value)
        config.write_text(text)
        script = _IN_OWN_MOUNTS.format(dir=workdir)
        argv = [unshare, "--mount", "--propagation", "private", "sh", "-c", script, danted]
        argv += ["-f", str(config), "-p", str(workdir / "danted.pid"), "-N", "1"]
        return spawn("danted", argv, port, workdir, (workdir / "danted.log",))

    with running(start) as dante:
        yield dante


@contextlib.asynccontextmanager
async def _flyway_denying(address: str) -> AsyncIterator[Address]:
    """A -D port whose server has ``--deny address``."""
    async with joined_tunnel(Settings(password="pw", policy=Policy.parse(deny=[address]))) as t:
        async with listening(Socks5Listener(Address("127.0.0.1", 0)), t) as proxy:
            yield proxy


async def test_a_name_that_does_not_resolve_is_host_unreachable_to_both(
    proxy: Address, dante_with_rules: Child
) -> None:
    name = b"no-such-name.invalid"  # one lookup each, answered by the resolver (RFC 6761)
    request = _connect(1, 3, bytes([len(name)]) + name, 80)
    flyway, _ = await _exchange(proxy.port, request)
    dante, _ = await _exchange(dante_with_rules.port, request)
    assert flyway.rep == dante.rep == 0x04  # host unreachable: RFC 1928 has no "no such name"
    assert flyway.closed and dante.closed
    # Dante echoes the name it could not resolve as BND.ADDR (ATYP 3); flyway, as for
    # every failure, says 0.0.0.0:0.
    assert dante.reply[3:5] == bytes([3, len(name)]) and name in dante.reply
    assert flyway.bound == (ANY, 0)


async def test_a_blocked_target_is_not_allowed_by_both(
    echo_server: Address, dante_with_rules: Child
) -> None:
    request = _connect(1, 1, socket.inet_aton(BLOCKED), echo_server.port)
    async with _flyway_denying(BLOCKED) as proxy:
        flyway, _ = await _exchange(proxy.port, request)
        allowed, _ = await _exchange(proxy.port, _ipv4(echo_server.port), then=b"ok")
    dante, _ = await _exchange(dante_with_rules.port, request)
    d_allowed, _ = await _exchange(dante_with_rules.port, _ipv4(echo_server.port), then=b"ok")
    assert flyway.rep == dante.rep == 0x02  # connection not allowed by ruleset
    assert flyway.closed and dante.closed
    assert allowed.rep == d_allowed.rep == 0x00  # the rule refuses that address only
    # Dante names the blocked target as BND.ADDR; flyway says 0.0.0.0:0, as for any failure.
    assert dante.bound[0] == ipaddress.IPv4Address(BLOCKED)
    assert flyway.bound == (ANY, 0)


async def _authenticate(
    port: int, subnegotiation: bytes, request: bytes, then: bytes = b""
) -> tuple[bytes, bytes, bytes, bool]:
    """Offer username/password only, send ``subnegotiation``; then ``request`` if it passed.

    Returns (method choice, sub-negotiation status, reply + echoed ``then``, closed).
    """
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"\x05\x01\x02")
            method = await reader.readexactly(2)
            writer.write(subnegotiation)
            status = await reader.read(2)
            answer = b""
            if status == b"\x01\x00":
                writer.write(request)
                answer = await _read_reply(reader)
                writer.write(then)
                answer += await reader.readexactly(len(then))
            closed = False
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(SILENCE if not then else 0.05):
                    closed = await reader.read(65536) == b""
            return method, status, answer, closed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _userpass(user: bytes, password: bytes, version: int = 1) -> bytes:
    return bytes([version, len(user)]) + user + bytes([len(password)]) + password


@pytest.mark.parametrize(
    ("user", "password", "status"),
    [
        pytest.param(b"alice", b"s3cret", b"\x01\x00", id="right"),
        pytest.param(b"alice", b"wrong", b"\x01\x01", id="wrong-password"),
        pytest.param(b"mallory", b"s3cret", b"\x01\x01", id="unknown-user"),
    ],
)
async def test_username_and_password_fare_the_same_with_both(
    start_proxy: StartProxy,
    dante_with_rules: Child,
    echo_server: Address,
    user: bytes,
    password: bytes,
    status: bytes,
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    sub, request, data = _userpass(user, password), _ipv4(echo_server.port), os.urandom(4096)
    flyway = await _authenticate(proxy.port, sub, request, data if status[1] == 0 else b"")
    dante = await _authenticate(
        dante_with_rules.port, sub, request, data if status[1] == 0 else b""
    )
    assert flyway[:2] == dante[:2] == (b"\x05\x02", status)
    if status == b"\x01\x00":  # granted, and the bytes go through both
        assert flyway[2][:2] == dante[2][:2] == b"\x05\x00"
        assert flyway[2][10:] == dante[2][10:] == data
    else:  # RFC 1929: on failure the server MUST close the connection
        assert flyway[2] == dante[2] == b""
        assert flyway[3] and dante[3]


async def test_a_subnegotiation_of_another_version_is_01_01_from_flyway_a_bare_close_from_dante(
    start_proxy: StartProxy, dante_with_rules: Child
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    sub = _userpass(b"alice", b"s3cret", version=2)
    flyway = await _authenticate(proxy.port, sub, b"")
    dante = await _authenticate(dante_with_rules.port, sub, b"")
    # RFC 1929 defines version 1 only and no answer to another. flyway answers as to wrong
    # credentials (status 1, then the close); Dante closes without a byte.
    assert flyway == (b"\x05\x02", b"\x01\x01", b"", True)
    assert dante == (b"\x05\x02", b"", b"", True)

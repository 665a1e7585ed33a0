"""Real HTTP intermediaries for tests: squid, nginx, and a relay that resets bodies.

* squid: a forward proxy that refuses CONNECT, so clients send absolute-form requests.
* nginx: a CDN edge stand-in that buffers request and response bodies (nginx defaults).
* ``FaultRelay``: sits in front of a TCP port and resets (RST) the connection in the
  middle of every Nth request body or response body, passing everything else as is.

squid and nginx run as child processes on 127.0.0.1 with free ports and a private
temporary directory each (config, pid file, logs, temp files); they are stopped with
everything they started when the ``with`` block or the test ends, failed or not.

In a test module, register the fixtures with ``pytest_plugins = ["intermediaries"]``
(and import names from this module only under ``if TYPE_CHECKING:``: importing it
at run time as well makes pytest warn that it cannot rewrite its asserts)::

    async def test_through_squid(squid_proxy: str) -> None:
        ...  # squid_proxy == "http://127.0.0.1:PORT": pass it as aiohttp's proxy=

    async def test_through_nginx(nginx_cdn: NginxFactory) -> None:
        base = nginx_cdn(origin_port)  # "http://127.0.0.1:PORT", proxying to the origin

    async def test_resets(fault_relay: FaultRelayFactory) -> None:
        relay = await fault_relay(origin_port, direction="response", every=3)
        ...  # send requests to relay.url; relay.records says which bodies were cut

Outside pytest, ``run_squid()`` and ``run_nginx(upstream_port)`` are context managers
yielding a ``Child`` (``.url``, ``.port``, ``.workdir``, ``.log_tail()``), and
``async with FaultRelay(port, direction=..., every=...) as relay`` works as well.

When squid or nginx is not installed the fixtures skip, except under CI (``CI`` set),
where they fail: scripts/test installs both.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import enum
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol

import pytest

__all__ = [
    "BodyRecord",
    "Child",
    "Direction",
    "FaultRelay",
    "FaultRelayFactory",
    "MissingBinary",
    "NginxFactory",
    "StartFailed",
    "binary_or_skip",
    "fault_relay",
    "find_binary",
    "free_port",
    "nginx_cdn",
    "render",
    "run_nginx",
    "run_squid",
    "squid_proxy",
]

TEMPLATES = Path(__file__).parent
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 3  # a free port can be taken by someone else before the child binds it


class MissingBinary(RuntimeError):
    """squid or nginx is not installed."""


class StartFailed(RuntimeError):
    """A child exited or did not listen in time; the message holds its log tail."""


# --- finding and configuring -----------------------------------------------------------


def find_binary(name: str) -> str:
    """The path of ``name`` on PATH or in the sbin directories; MissingBinary if none."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))
    if found is None:
        raise MissingBinary(f"{name} is not installed (scripts/test installs it with apt-get)")
    return found


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def binary_or_skip(name: str) -> str:
    """The binary's path; skips the test when it is missing, fails instead under CI."""
    try:
        return find_binary(name)
    except MissingBinary as exc:
        if in_ci():
            pytest.fail(f"{exc}; CI must run these tests", pytrace=False)
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``@NAME@`` placeholders of a template in this package."""
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    leftover = re.search(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"{template}: no value for {leftover.group()}")
    return text


def make_workdir(kind: str, owner: str | None = None) -> Path:
    """A fresh directory under the system temp dir, readable by an unprivileged worker.

    (pytest's tmp_path lives under a 0700 directory that squid's and nginx's
    unprivileged processes could not enter.)
    """
    path = Path(tempfile.mkdtemp(prefix=f"flyway-{kind}-"))
    path.chmod(0o755)
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def squid_user() -> str | None:
    """The user to run squid as when we are root (squid refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("proxy", "squid", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


# --- child processes ----------------------------------------------------------------


@dataclass
class Child:
    """A running squid or nginx, in a process group of its own."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    logs: tuple[Path, ...]
    output: IO[bytes]
    stop_signal: signal.Signals = signal.SIGTERM
    writes_pidfile: bool = True  # ready once it wrote one (haproxy -db writes none)

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's output and log files, for error messages."""
        parts = []
        for path in (Path(self.output.name), *self.logs):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Signal the whole process group, SIGKILL what is left after STOP_TIMEOUT."""
        _RUNNING.pop(self.process.pid, None)
        _signal_group(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
        _signal_group(self.process.pid, signal.SIGKILL)  # workers or helpers left behind
        self.output.close()


_RUNNING: dict[int, Child] = {}


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@atexit.register
def _stop_leftovers() -> None:
    """Stop children whose test was interrupted before its teardown ran."""
    for child in list(_RUNNING.values()):
        with contextlib.suppress(Exception):
            child.stop()


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent(signum: int) -> None:
    """In the child before exec: get ``signum`` when the thread that started it dies,
    so a test run killed outright (no teardown, no atexit) leaves nothing running."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signum)


def _spawn(
    name: str,
    argv: list[str],
    port: int,
    workdir: Path,
    logs: tuple[Path, ...],
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    user: str | None = None,
    writes_pidfile: bool = True,
) -> Child:
    output = (workdir / f"{name}.out").open("wb")
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() reaches its children
        user=user,
        group=pwd.getpwnam(user).pw_gid if user else None,
        extra_groups=[] if user else None,
        preexec_fn=functools.partial(_die_with_parent, stop_signal),  # after the uid change
    )
    child = Child(name, process, port, workdir, logs, output, stop_signal, writes_pidfile)
    _RUNNING[process.pid] = child
    return child


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_ready(child: Child, timeout: float = START_TIMEOUT) -> None:
    """Until the child wrote its pid file (after binding its port) and accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartFailed(
                f"{child.name} exited with {child.process.returncode}\n{child.log_tail()}"
            )
        if (child.pidfile.exists() or not child.writes_pidfile) and _listening(child.port):
            return
        time.sleep(0.05)
    raise StartFailed(f"{child.name} is not ready on port {child.port}\n{child.log_tail()}")


def _start_ready(start: Callable[[int], Child]) -> Child:
    """Start a child on a free port, again on another if that one was taken meanwhile."""
    for attempt in range(1, START_ATTEMPTS + 1):
        child = start(free_port())
        try:
            _wait_ready(child)
            return child
        except BaseException as exc:
            child.stop()
            shutil.rmtree(child.workdir, ignore_errors=True)
            if not isinstance(exc, StartFailed) or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("not reached")


@contextlib.contextmanager
def _running(start: Callable[[int], Child]) -> Iterator[Child]:
    """A started child, stopped (its temporary directory removed) at the end."""
    child = _start_ready(start)
    try:
        yield child
    finally:
        child.stop()
        shutil.rmtree(child.workdir, ignore_errors=True)


@contextlib.contextmanager
def run_squid(binary: str | None = None) -> Iterator[Child]:
    """squid -N on a free port of 127.0.0.1, refusing CONNECT (squid.conf.in)."""
    squid = binary or find_binary("squid")
    user = squid_user()

    def start(port: int) -> Child:
        workdir = make_workdir("squid", owner=user)
        config = workdir / "squid.conf"
        config.write_text(render("squid.conf.in", {"PORT": str(port), "DIR": str(workdir)}))
        argv = [squid, "-N", "-f", str(config)]
        # squid takes over a second to shut down even with shutdown_lifetime 0, and
        # nothing it holds is worth keeping: kill it.
        logs = (workdir / "cache.log",)
        return _spawn("squid", argv, port, workdir, logs, stop_signal=signal.SIGKILL, user=user)

    with _running(start) as child:
        yield child


@contextlib.contextmanager
def run_nginx(
    upstream_port: int, *, location_extra: str = "", binary: str | None = None
) -> Iterator[Child]:
    """nginx (daemon off) on a free port of 127.0.0.1, proxying to ``upstream_port``.

    ``location_extra`` goes into ``location /`` of nginx.conf.in, where it can add
    directives or override http-level ones (e.g. ``sendfile off;``).
    """
    nginx = binary or find_binary("nginx")

    def start(port: int) -> Child:
        workdir = make_workdir("nginx")
        config = workdir / "nginx.conf"
        values = {
            "PORT": str(port),
            "UPSTREAM_PORT": str(upstream_port),
            "DIR": str(workdir),
            "LOCATION_EXTRA": location_extra,
        }
        config.write_text(render("nginx.conf.in", values))
        error_log = workdir / "error.log"
        argv = [nginx, "-p", str(workdir), "-c", str(config), "-e", str(error_log)]
        return _spawn("nginx", argv, port, workdir, (error_log,))

    with _running(start) as child:
        yield child


@contextlib.contextmanager
def run_haproxy(
    backend_ports: list[int], *, sticky: bool = True, binary: str | None = None
) -> Iterator[Child]:
    """HAProxy (foreground) on a free port of 127.0.0.1, balancing over the backends.

    Round robin; ``sticky`` adds the cookie HAProxy inserts into the first answer and
    routes by afterwards (haproxy.cfg.in): the way to keep a client's requests on
    one server.
    """
    haproxy = binary or find_binary("haproxy")

    def start(port: int) -> Child:
        workdir = make_workdir("haproxy")
        config = workdir / "haproxy.cfg"
        servers = "\n".join(
            f"    server s{n} 127.0.0.1:{backend}" + (f" cookie s{n}" if sticky else "")
            for n, backend in enumerate(backend_ports, 1)
        )
        cookie = "cookie fwsrv insert indirect nocache" if sticky else "# no cookie: not sticky"
        values = {"PORT": str(port), "COOKIE": cookie, "SERVERS": servers}
        config.write_text(render("haproxy.cfg.in", values))
        argv = [haproxy, "-db", "-f", str(config)]
        return _spawn("haproxy", argv, port, workdir, (), writes_pidfile=False)

    with _running(start) as child:
        yield child


# --- pytest fixtures ---------------------------------------------------------------


class NginxFactory(Protocol):
    def __call__(self, upstream_port: int, *, location_extra: str = "") -> str: ...


class BalancerFactory(Protocol):
    def __call__(self, backend_ports: list[int], *, sticky: bool = True) -> Child: ...


@pytest.fixture
def haproxy_balancer() -> Iterator[BalancerFactory]:
    """Start HAProxy in front of servers: ``haproxy_balancer([port, ...]) -> Child``."""
    binary = binary_or_skip("haproxy")
    with contextlib.ExitStack() as stack:

        def start(backend_ports: list[int], *, sticky: bool = True) -> Child:
            return stack.enter_context(run_haproxy(backend_ports, sticky=sticky, binary=binary))

        yield start


@pytest.fixture
def squid_proxy() -> Iterator[str]:
    """A running squid that refuses CONNECT: its URL, "http://127.0.0.1:PORT"."""
    binary = binary_or_skip("squid")
    with run_squid(binary) as squid:
        yield squid.url


@pytest.fixture
def nginx_cdn() -> Iterator[NginxFactory]:
    """Start nginx in front of an origin port: ``nginx_cdn(port) -> "http://127.0.0.1:PORT"``.

    Every nginx started is stopped when the test ends.
    """
    binary = binary_or_skip("nginx")
    with contextlib.ExitStack() as stack:

        def start(upstream_port: int, *, location_extra: str = "") -> str:
            nginx = run_nginx(upstream_port, location_extra=location_extra, binary=binary)
            return stack.enter_context(nginx).url

        yield start


# --- FaultRelay (its fixture is at the end) ------------------------------------------

Direction = Literal["request", "response"]
MAX_HEAD = 64 << 10
MAX_LINE = 8 << 10


class _State(enum.Enum):
    HEAD = enum.auto()
    LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()
    TRAILERS = enum.auto()
    UNTIL_CLOSE = enum.auto()
    PASSTHROUGH = enum.auto()


@dataclass
class _Exchange:
    """What the two directions of one connection share: methods awaiting a response."""

    methods: deque[bytes] = field(default_factory=deque)
    tunnel: bool = False  # CONNECT or Upgrade: stop parsing either way


@dataclass(frozen=True)
class BodyRecord:
    """One non-empty body in the faulted direction, numbered from 1 across connections."""

    index: int
    connection: int  # numbered from 1 in the order the relay accepted them
    length: int | None  # its Content-Length; None when chunked or until close
    cut: bool


class _Framer:
    """Follows HTTP/1.1 messages in one direction of a connection to find their bodies.

    ``feed(data)`` returns ``(n, reset)``: forward ``data[:n]``, then reset the
    connection when ``reset``. ``choose(length)`` is asked once per non-empty body
    whether to cut it; a cut body is forwarded up to about its middle.
    """

    def __init__(
        self, role: Direction, exchange: _Exchange, choose: Callable[[int | None], bool]
    ) -> None:
        self.role = role
        self.exchange = exchange
        self.choose = choose
        self.state = _State.HEAD
        self.buffer = bytearray()  # an incomplete head or line
        self.remaining = 0  # bytes left in the body (LENGTH) or chunk (CHUNK_DATA/END)
        self.counted = False  # the current body was offered to choose()
        self.cut_in: int | None = None  # body bytes still to forward before the reset
        self.cut_at: int | None = None

    def feed(self, data: bytes) -> tuple[int, bool]:
        pos = 0
        self.cut_at = None
        while pos < len(data) and self.cut_at is None:
            if self.exchange.tunnel:
                self.state = _State.PASSTHROUGH
            pos = self._step(data, pos)
        if self.cut_at is not None:
            return self.cut_at, True
        return len(data), False

    def _step(self, data: bytes, pos: int) -> int:
        match self.state:
            case _State.HEAD:
                return self._head(data, pos)
            case _State.LENGTH | _State.CHUNK_DATA:
                return self._counted_bytes(data, pos)
            case _State.CHUNK_END:
                take = min(self.remaining, len(data) - pos)
                self.remaining -= take
                if not self.remaining:
                    self.state = _State.CHUNK_SIZE
                return pos + take
            case _State.CHUNK_SIZE:
                return self._chunk_size(data, pos)
            case _State.TRAILERS:
                return self._trailers(data, pos)
            case _State.UNTIL_CLOSE:
                if not self.counted and self._offer(None):
                    self.cut_at = pos + (len(data) - pos) // 2
                return len(data)
            case _:
                return len(data)

    # heads

    def _head(self, data: bytes, pos: int) -> int:
        before = len(self.buffer)
        self.buffer += data[pos:]
        end = self.buffer.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.exchange.tunnel = True  # not HTTP as we know it: stop looking
            return len(data)
        head = bytes(self.buffer[:end]).lstrip(b"\r\n")
        self.buffer.clear()
        pos += end + 4 - before
        if head:
            self._message(head)
            if self.cut_in == 0:
                self.cut_at = pos
        return pos

    def _message(self, head: bytes) -> None:
        start, *lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
        if self.role == "request":
            self._request(start, headers)
        else:
            self._response(start, headers)

    def _request(self, start: bytes, headers: dict[bytes, bytes]) -> None:
        method = start.split(b" ", 1)[0].upper()
        self.exchange.methods.append(method)
        if method == b"CONNECT":
            self.state = _State.PASSTHROUGH  # what follows is tunnel data, if anything
            return
        self._body(headers, until_close=False)

    def _response(self, start: bytes, headers: dict[bytes, bytes]) -> None:
        parts = start.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 101:
            self.exchange.tunnel = True
            return
        if 100 <= status < 200:
            return  # interim (100 Continue): the final response follows
        method = self.exchange.methods.popleft() if self.exchange.methods else b"GET"
        if method == b"CONNECT" and 200 <= status < 300:
            self.exchange.tunnel = True
            return
        if method == b"HEAD" or status in (204, 304):
            self._done()
            return
        self._body(headers, until_close=True)

    def _body(self, headers: dict[bytes, bytes], *, until_close: bool) -> None:
        coding = headers.get(b"transfer-encoding", b"").split(b",")[-1].strip().lower()
        length = headers.get(b"content-length", b"").split(b",")[0].strip()
        self._done()
        if coding == b"chunked":
            self.state = _State.CHUNK_SIZE
        elif coding or (not length and until_close):
            self.state = _State.UNTIL_CLOSE
        elif length.isdigit() and int(length) > 0:
            self.state = _State.LENGTH
            self.remaining = int(length)
            if self._offer(self.remaining):
                self.cut_in = self.remaining // 2

    def _done(self) -> None:
        self.state = _State.HEAD
        self.counted = False
        self.cut_in = None

    def _offer(self, length: int | None) -> bool:
        self.counted = True
        return self.choose(length)

    # bodies

    def _counted_bytes(self, data: bytes, pos: int) -> int:
        take = min(self.remaining, len(data) - pos)
        if self.cut_in is not None and self.cut_in <= take:
            self.cut_at = pos + self.cut_in
            return self.cut_at
        if self.cut_in is not None:
            self.cut_in -= take
        self.remaining -= take
        if not self.remaining:
            if self.state is _State.LENGTH:
                self._done()
            else:
                self.state = _State.CHUNK_END
                self.remaining = 2  # the CRLF after the chunk's data
        return pos + take

    def _line(self, data: bytes, pos: int) -> tuple[int, bytes | None]:
        end = data.find(b"\n", pos)
        if end < 0:
            self.buffer += data[pos:]
            if len(self.buffer) > MAX_LINE:
                self.exchange.tunnel = True
            return len(data), None
        self.buffer += data[pos:end]
        line = bytes(self.buffer).rstrip(b"\r")
        self.buffer.clear()
        return end + 1, line

    def _chunk_size(self, data: bytes, pos: int) -> int:
        pos, line = self._line(data, pos)
        if line is None:
            return pos
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            self.exchange.tunnel = True  # broken framing: pass the rest through
            return pos
        if size == 0:
            self.state = _State.TRAILERS
            return pos
        self.state = _State.CHUNK_DATA
        self.remaining = size
        if not self.counted and self._offer(None):
            self.cut_in = size // 2
            if self.cut_in == 0:
                self.cut_at = pos
        return pos

    def _trailers(self, data: bytes, pos: int) -> int:
        pos, line = self._line(data, pos)
        if line == b"":
            self._done()
        return pos


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Connection:
    number: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)


class FaultRelay:
    """A TCP relay for HTTP/1.1 that resets the connection mid-body every ``every``th body.

    Bodies are counted in ``direction`` ("request" or "response") across all relayed
    connections, from 1; only non-empty ones count. Body number ``every``, ``2*every``…
    is forwarded up to about its middle (Content-Length: half of it; chunked: the size
    line and half of the first chunk; until-close: half of the first read), then both
    sides of that connection are reset (RST). Everything else, including keep-alive
    connections carrying several messages, passes byte for byte. ``every=0`` never cuts.
    """

    def __init__(
        self,
        target_port: int,
        *,
        direction: Direction = "response",
        every: int = 2,
        target_host: str = "127.0.0.1",
    ) -> None:
        if direction not in ("request", "response"):
            raise ValueError(f"direction must be 'request' or 'response', not {direction!r}")
        if every < 0:
            raise ValueError("every must be >= 0")
        self.target = (target_host, target_port)
        self.direction: Direction = direction
        self.every = every
        self.port = 0
        self.records: list[BodyRecord] = []
        self.connections = 0  # connections accepted so far
        self._server: asyncio.Server | None = None
        self._live: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resets(self) -> int:
        return sum(record.cut for record in self.records)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._live.values()):
            connection.reset()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> FaultRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _choose(self, connection: int, length: int | None) -> bool:
        index = len(self.records) + 1
        cut = self.every > 0 and index % self.every == 0
        self.records.append(BodyRecord(index, connection, length, cut))
        return cut

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            try:
                async with asyncio.timeout(5.0):
                    up_reader, up_writer = await asyncio.open_connection(*self.target)
            except (OSError, TimeoutError):
                _reset(writer)
                return
            connection = _Connection(number, writer, up_writer)
            self._live[number] = connection
            exchange = _Exchange()
            framers = {
                role: _Framer(role, exchange, self._chooser(role, number))
                for role in ("request", "response")
            }
            await asyncio.gather(
                self._pump(reader, up_writer, framers["request"], connection),
                self._pump(up_reader, writer, framers["response"], connection),
            )
            writer.close()
            up_writer.close()
        finally:
            self._live.pop(number, None)
            self._tasks.discard(task)

    def _chooser(self, role: Direction, connection: int) -> Callable[[int | None], bool]:
        if role != self.direction:
            return lambda length: False
        return functools.partial(self._choose, connection)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        framer: _Framer,
        connection: _Connection,
    ) -> None:
        sink.transport.set_write_buffer_limits(high=0)  # drain() waits for the kernel
        try:
            while data := await source.read(1 << 16):
                count, cut = framer.feed(data)
                if count:
                    sink.write(data[:count])
                    await sink.drain()
                if cut:
                    connection.reset()
                    return
            if sink.can_write_eof() and not sink.transport.is_closing():
                sink.write_eof()
        except (ConnectionError, OSError):
            connection.reset()  # a reset on one side resets the other


class FaultRelayFactory(Protocol):
    async def __call__(
        self, target_port: int, *, direction: Direction = "response", every: int = 2
    ) -> FaultRelay: ...


@pytest.fixture
async def fault_relay() -> AsyncIterator[FaultRelayFactory]:
    """Start FaultRelays: ``await fault_relay(port, direction="request", every=3)``.

    Every relay started is closed when the test ends.
    """
    relays: list[FaultRelay] = []

    async def start(
        target_port: int, *, direction: Direction = "response", every: int = 2
    ) -> FaultRelay:
        relay = FaultRelay(target_port, direction=direction, every=every)
        await relay.start()
        relays.append(relay)
        return relay

    try:
        yield start
    finally:
        for relay in relays:
            await relay.close()

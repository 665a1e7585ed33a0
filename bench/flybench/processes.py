"""flyway processes: one server plus one client per column, started as users start them.

``Tunnel`` spawns ``python -m flyway_core`` twice (the client with one ``-L`` per target),
waits until both listen and one echo went through, reads their CPU time, and stops
them with SIGTERM (SIGKILL after 5 s; PR_SET_PDEATHSIG if the driver dies first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import ROOT
from .procfs import cpu_seconds, listening_ports
from .wire import HOST, TARGETS, Endpoint, close, connect

if TYPE_CHECKING:
    from .hops import Intermediaries

__all__ = ["PROXY_VARIABLES", "Tunnel", "first_line", "free_ports", "read_lines"]

# Removed from flyway's environment: with them the `http` column would not be direct.
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the driver dies, so no flyway outlives a crashed bench."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on ``HOST`` right now (all bound at once, then released).

    flyway_core.testing is getting a ``free_port()``; until it has one, the bench keeps
    its own (and never imports from tests/ for it).
    """
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def first_line(path: Path) -> str:
    """The first line of a log with text in it (rich's box drawing stripped)."""
    for line in read_lines(path):
        text = line.strip(" │╭╮╰╯─")
        if text:
            return text
    return "(no output)"


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a log, or none if it cannot be read."""
    try:
        return [
            line.rstrip() for line in path.read_text(errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return []


@dataclass
class Tunnel:
    """One flyway server plus one client forwarding a local port to each target."""

    header: ClassVar[str] = "tunnel ({})"
    metrics: ClassVar[tuple[str, ...] | None] = None  # None: every metric
    latency_share: ClassVar[float] = 1.0  # of the plan's latency samples (a slow link: fewer)

    label: str
    transport: str
    python: str
    log_dir: Path
    window: int | None
    client_flags: list[str] = field(default_factory=list)  # what picks the transport (-w)
    env_extra: dict[str, str] = field(default_factory=dict)
    via: str = ""  # "squid" or "nginx": an intermediary in the path (Column.via)
    hops: Intermediaries | None = None
    via_child: Any = None  # the intermediaries.Child this column goes through
    server: subprocess.Popen[bytes] | None = None
    client: subprocess.Popen[bytes] | None = None
    forwards: dict[str, Endpoint] = field(default_factory=dict)  # how to reach each target
    skipped: str = ""
    exit_codes: dict[str, Any] = field(default_factory=dict)

    def does(self, metric: str) -> bool:
        """Whether ``metric`` runs on this column."""
        return self.metrics is None or metric in self.metrics

    @property
    def log_stem(self) -> str:
        return self.label.replace("/", "-").replace(" ", "-")

    @property
    def server_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-server.log"

    @property
    def client_log(self) -> Path:
        return self.log_dir / f"{self.log_stem}-client.log"

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        return self._popen([self.python, "-m", "flyway_core", *args], log)

    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **self.env_extra}
        for name in PROXY_VARIABLES:  # only the http-squid column goes through a proxy
            env.pop(name, None)
        with log.open("wb") as sink:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=env,
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )

    async def start(self, target_ports: dict[str, int]) -> bool:
        """Start server and client; False (and ``skipped`` says why) if the column cannot run."""
        password = secrets.token_urlsafe(12)
        server_port, *local = free_ports(1 + len(TARGETS))
        window = ["-W", str(self.window)] if self.window else []
        if not await self._start_server(server_port, password, window):
            return False
        self.forwards = dict(zip(TARGETS, local, strict=True))
        rules = [
            a
            for name, lport in self.forwards.items()
            for a in ("-L", f"{lport}:{HOST}:{target_ports[name]}")
        ]
        flags = self.client_flags
        server_url = f"{HOST}:{server_port}"
        if self.via:
            assert self.hops is not None
            try:  # blocks the loop for a moment: fine, nothing is being measured yet
                if self.via == "squid":
                    self.via_child = self.hops.squid()
                    flags = [*flags, "--proxy", self.via_child.url]
                else:
                    self.via_child = self.hops.nginx(self.label, server_port)
                    server_url = self.via_child.url
            except Exception as exc:
                lines = [x for x in str(exc).splitlines() if x.strip()] or [type(exc).__name__]
                self.skipped = f"{self.via} did not start: {lines[0]}"
                return False
        self.client = self._spawn(
            [*flags, "-q", *window, *rules, server_url, "-p", password],
            self.client_log,
        )
        return await self._started(local)

    async def _start_server(self, port: int, password: str, window: list[str]) -> bool:
        """Start the flyway server on ``port``; False (``skipped`` says why) if it did not."""
        self.server = self._spawn(
            [f"{HOST}:{port}", "-p", password, "-q", *window], self.server_log
        )
        if not await self._listening(self.server, [port], 20):
            self.skipped = f"server did not start: {first_line(self.server_log)}"
            return False
        return True

    async def _started(self, local: list[int]) -> bool:
        assert self.client is not None
        assert self.server is not None
        if not await self._listening(self.client, local, 20):
            self.skipped = f"client did not start: {first_line(self.client_log)}"
            return False
        # The first stream may be what dials the server: check one echo end to end.
        try:
            async with asyncio.timeout(20):
                reader, writer = await connect(self.forwards["echo"])
                writer.write(b"hello")
                echoed = await reader.readexactly(5)
                await close(writer)
            if echoed != b"hello":
                raise AssertionError("echo differs")
        except (Exception, TimeoutError) as exc:
            died = self.client.poll() is not None or self.server.poll() is not None
            why = first_line(self.client_log) if died else f"{type(exc).__name__}: {exc}"
            self.skipped = f"first echo through the tunnel failed: {why}"
            return False
        return True

    @staticmethod
    async def _listening(proc: subprocess.Popen[bytes], ports: list[int], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if set(ports) <= listening_ports():
                return True
            await asyncio.sleep(0.1)
        return False

    def alive(self) -> str:
        """'' while both processes (and the intermediary) run, else what died."""
        dead = [
            f"{name} exited with {p.returncode}"
            for name, p in (("server", self.server), ("client", self.client))
            if p is not None and p.poll() is not None
        ]
        if self.via_child is not None and not self.via_child.alive():
            dead.append(f"{self.via} exited with {self.via_child.process.returncode}")
        return "; ".join(dead)

    def wire(self) -> dict[str, int]:
        """Counters of what crossed the wire so far (a relay's), or {} when none are kept."""
        return {}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the server and the client."""
        return {
            name: cpu_seconds(p.pid)
            for name, p in (("server", self.server), ("client", self.client))
            if p is not None
        }

    async def stop(self) -> None:
        """SIGTERM both processes, SIGKILL after 5 s; record how each exited."""
        for name, proc in (("client", self.client), ("server", self.server)):
            if proc is None:
                continue
            if proc.poll() is not None:
                self.exit_codes[name] = proc.returncode
                continue
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                self.exit_codes[name] = "killed (no exit 5 s after SIGTERM)"
            else:
                self.exit_codes[name] = proc.returncode

    def kill_now(self) -> None:
        """SIGKILL whatever still runs (the driver is going away)."""
        for proc in (self.client, self.server):
            if proc is not None and proc.poll() is None:
                proc.kill()

"""Child processes for the intermediaries: found, configured from a template, started on a
free port of 127.0.0.1 until ready, and stopped with everything they started.

Each child gets a fresh directory under the system temp dir, its own process group and
``PR_SET_PDEATHSIG``, so it dies with the test process even when that is SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flyway_core.testing.ports import free_port

__all__ = [
    "Child",
    "MissingBinary",
    "StartFailed",
    "find_binary",
    "make_workdir",
    "render",
    "running",
    "spawn",
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


def spawn(
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
def running(start: Callable[[int], Child]) -> Iterator[Child]:
    """A started child, stopped (its temporary directory removed) at the end."""
    child = _start_ready(start)
    try:
        yield child
    finally:
        child.stop()
        shutil.rmtree(child.workdir, ignore_errors=True)

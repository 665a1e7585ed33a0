"""What the kernel says, read from /proc: memory and CPU of a process, listening ports, drops."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["cpu_seconds", "listen_overflows", "listening_ports", "rss_kib"]


def listen_overflows() -> int:
    """The kernel's count of SYNs dropped because an accept queue was full (host-wide)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = [x.split() for x in Path("/proc/net/netstat").read_text().splitlines()]
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names[0] == "TcpExt:":
                return int(values[names.index("ListenOverflows")])
    return 0


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (NaN once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state (from /proc, so probing opens no connection)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports

"""Dante's SOCKS server (Debian's dante-server, ``danted``) on 127.0.0.1, from dante.conf.in."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator

from intermediaries.children import Child, find_binary, make_workdir, render, running, spawn

__all__ = ["run_dante"]


def _users() -> tuple[str, str]:
    """(privileged, unprivileged) users for dante.conf: root and nobody when we are root."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() != 0:
        return me, me
    return "root", "nobody"


@contextlib.contextmanager
def run_dante(binary: str | None = None) -> Iterator[Child]:
    """danted (in the foreground, one process set) on a free port of 127.0.0.1."""
    danted = binary or find_binary("danted")
    privileged, unprivileged = _users()

    def start(port: int) -> Child:
        workdir = make_workdir("dante")
        config = workdir / "danted.conf"
        values = {
            "PORT": str(port),
            "DIR": str(workdir),
            "PRIVILEGED": privileged,
            "UNPRIVILEGED": unprivileged,
        }
        config.write_text(render("dante.conf.in", values))
        argv = [danted, "-f", str(config), "-p", str(workdir / "danted.pid"), "-N", "1"]
        return spawn("danted", argv, port, workdir, (workdir / "danted.log",))

    with running(start) as child:
        yield child

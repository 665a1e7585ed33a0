"""nginx as a plain web site serving a directory (``nginx-site.conf.in``): ``run_nginx_site``.

The fallback tests put it behind flyway ``-P http://`` and compare ``-P /dir`` with
it. The directory must be readable by nginx's unprivileged worker: make it with
``make_workdir("site")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from intermediaries.children import Child, find_binary, make_workdir, render, running, spawn

__all__ = ["run_nginx_site"]


@contextlib.contextmanager
def run_nginx_site(
    root: Path, *, workers: int = 1, server_extra: str = "", binary: str | None = None
) -> Iterator[Child]:
    """nginx (daemon off) on a free port of 127.0.0.1 serving ``root`` as Debian's would."""
    nginx = binary or find_binary("nginx")

    def start(port: int) -> Child:
        workdir = make_workdir("nginx")
        config = workdir / "nginx.conf"
        values = {
            "PORT": str(port),
            "DIR": str(workdir),
            "ROOT": str(root),
            "WORKERS": str(workers),
            "SERVER_EXTRA": server_extra,
        }
        config.write_text(render("nginx-site.conf.in", values))
        error_log = workdir / "error.log"
        argv = [nginx, "-p", str(workdir), "-c", str(config), "-e", str(error_log)]
        return spawn("nginx", argv, port, workdir, (error_log,))

    with running(start) as child:
        yield child

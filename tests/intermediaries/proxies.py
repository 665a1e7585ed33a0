"""squid, nginx and HAProxy on 127.0.0.1, each configured from its template in this package."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
from collections.abc import Iterator

from intermediaries.children import Child, find_binary, make_workdir, render, running, spawn

__all__ = ["run_haproxy", "run_nginx", "run_squid", "squid_user"]


def squid_user() -> str | None:
    """The user to run squid as when we are root (squid refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("proxy", "squid", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


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
        return spawn("squid", argv, port, workdir, logs, stop_signal=signal.SIGKILL, user=user)

    with running(start) as child:
        yield child


@contextlib.contextmanager
def run_nginx(
    upstream_port: int,
    *,
    location_extra: str = "",
    binary: str | None = None,
    template: str = "nginx.conf.in",
) -> Iterator[Child]:
    """nginx (daemon off) on a free port of 127.0.0.1, proxying to ``upstream_port``.

    ``template`` is ``nginx.conf.in`` (the tuned CDN stand-in) or ``nginx-stock.conf.in``
    (Debian's stock limits). ``location_extra`` goes into ``location /``, where it can
    add directives or override http-level ones (e.g. ``sendfile off;``).
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
        config.write_text(render(template, values))
        error_log = workdir / "error.log"
        argv = [nginx, "-p", str(workdir), "-c", str(config), "-e", str(error_log)]
        return spawn("nginx", argv, port, workdir, (error_log,))

    with running(start) as child:
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
        return spawn("haproxy", argv, port, workdir, (), writes_pidfile=False)

    with running(start) as child:
        yield child

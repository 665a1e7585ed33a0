"""Real HTTP intermediaries for tests: squid, nginx, HAProxy, and a relay that resets bodies.

This module holds the pytest fixtures; the work is done in ``children`` (running a child
process), ``proxies`` (squid, nginx and HAProxy from the ``*.in`` templates here),
``framing`` and ``fault_relay``. README.md says how they are run and what they do.

* squid: a forward proxy that refuses CONNECT, so clients send absolute-form requests.
* nginx: a CDN edge stand-in that buffers request and response bodies (nginx defaults);
  ``nginx_stock`` runs it with Debian's stock configuration instead (1m bodies).
* ``RecordingRelay``: a reverse proxy that records every request, to replay them.
* HAProxy: a round-robin balancer over several servers, sticky by cookie if asked.
* Dante (``danted``): a reference SOCKS5 server, ``dante_server`` (dante.py).
* ``FaultRelay``: sits in front of a TCP port and resets (RST) the connection in the
  middle of every Nth request body or response body, passing everything else as is.

squid, nginx and HAProxy run as child processes on 127.0.0.1 with free ports and a private
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

Outside pytest, ``run_squid()``, ``run_nginx(upstream_port)`` and ``run_haproxy(ports)`` are
context managers yielding a ``Child`` (``.url``, ``.port``, ``.workdir``, ``.log_tail()``),
and ``async with FaultRelay(port, direction=..., every=...) as relay`` works as well.

When squid, nginx or HAProxy is not installed the fixtures skip, except under CI (``CI``
set), where they fail: scripts/test installs them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import pytest

from intermediaries.children import (
    Child,
    MissingBinary,
    StartFailed,
    find_binary,
    render,
)
from intermediaries.dante import run_dante
from intermediaries.fault_relay import BodyRecord, FaultRelay
from intermediaries.framing import Direction
from intermediaries.proxies import run_haproxy, run_nginx, run_squid
from intermediaries.recording_relay import RecordedRequest, RecordingRelay

__all__ = [
    "BalancerFactory",
    "BodyRecord",
    "Child",
    "Direction",
    "FaultRelay",
    "FaultRelayFactory",
    "MissingBinary",
    "NginxFactory",
    "RecordedRequest",
    "RecordingRelay",
    "StartFailed",
    "binary_or_skip",
    "dante_server",
    "fault_relay",
    "find_binary",
    "haproxy_balancer",
    "nginx_cdn",
    "nginx_stock",
    "recording_relay",
    "render",
    "run_dante",
    "run_haproxy",
    "run_nginx",
    "run_squid",
    "squid_proxy",
]


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
def dante_server() -> Iterator[Child]:
    """A running danted (Dante's SOCKS server) on 127.0.0.1; ``.port`` is its SOCKS port."""
    binary = binary_or_skip("danted")
    with run_dante(binary) as dante:
        yield dante


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


@pytest.fixture
async def recording_relay() -> AsyncIterator[RecordingRelay]:
    """A RecordingRelay (not started: pass ``relay.start`` as a pair's ``front``), closed after."""
    relay = RecordingRelay()
    try:
        yield relay
    finally:
        await relay.close()


@pytest.fixture
def nginx_stock() -> Iterator[NginxFactory]:
    """Like ``nginx_cdn``, but nginx as Debian ships it (nginx-stock.conf.in): 1m bodies."""
    binary = binary_or_skip("nginx")
    with contextlib.ExitStack() as stack:

        def start(upstream_port: int, *, location_extra: str = "") -> str:
            nginx = run_nginx(
                upstream_port,
                location_extra=location_extra,
                binary=binary,
                template="nginx-stock.conf.in",
            )
            return stack.enter_context(nginx).url

        yield start


class FaultRelayFactory(Protocol):
    async def __call__(
        self,
        target_port: int,
        *,
        direction: Direction = "response",
        every: int = 2,
        larger_than: int | None = None,
    ) -> FaultRelay: ...


@pytest.fixture
async def fault_relay() -> AsyncIterator[FaultRelayFactory]:
    """Start FaultRelays: ``await fault_relay(port, direction="request", every=3)``.

    Every relay started is closed when the test ends.
    """
    relays: list[FaultRelay] = []

    async def start(
        target_port: int,
        *,
        direction: Direction = "response",
        every: int = 2,
        larger_than: int | None = None,
    ) -> FaultRelay:
        relay = FaultRelay(target_port, direction=direction, every=every, larger_than=larger_than)
        await relay.start()
        relays.append(relay)
        return relay

    try:
        yield start
    finally:
        for relay in relays:
            await relay.close()

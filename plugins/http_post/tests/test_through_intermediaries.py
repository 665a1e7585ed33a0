"""The HTTP POST carrier through real intermediaries: squid refusing CONNECT (by --proxy and by
http_proxy), nginx buffering like a CDN (honouring X-Accel-Buffering, and not), and a relay
that resets every third request or response mid-body."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import pytest

from flyway_core import Address, Settings
from flyway_core.testing import EchoServer, Running, hashed_exchange, run_pair, wait_for

if TYPE_CHECKING:
    from intermediaries import FaultRelay, FaultRelayFactory, NginxFactory

pytest_plugins = ["intermediaries"]

PATHS = [
    "squid --proxy",
    "squid http_proxy",
    "nginx",
    "nginx ignoring X-Accel",
    "resets up",
    "resets down",
]


@dataclass
class Path:
    """How the client reaches the server, and what it expects of the path."""

    name: str
    client: Settings
    front: Callable[[Address], Awaitable[str]] | None
    proxy: str | None  # for the plain-HTTP round trip measured alongside
    streaming: bool | None  # what the probe must conclude (None: either)
    relays: list[FaultRelay] = field(default_factory=list)

    @property
    def resets(self) -> int:
        return sum(relay.resets for relay in self.relays)


@pytest.fixture(params=PATHS)
async def path(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    fault_relay: FaultRelayFactory,
) -> AsyncIterator[Path]:
    name = str(request.param)
    plain = Settings(password="pw")
    if name.startswith("squid"):
        proxy = request.getfixturevalue("squid_proxy")
        if name == "squid --proxy":
            yield Path(
                name, Settings(password="pw", options={"http_proxy_url": proxy}), None, proxy, True
            )
        else:
            monkeypatch.setenv("http_proxy", proxy)
            monkeypatch.setenv("NO_PROXY", "")
            monkeypatch.setenv("no_proxy", "")
            yield Path(name, plain, None, proxy, True)
        return
    if name.startswith("nginx"):
        nginx: NginxFactory = request.getfixturevalue("nginx_cdn")
        extra = "proxy_ignore_headers X-Accel-Buffering;" if "ignoring" in name else ""

        async def via_nginx(server: Address) -> str:
            return nginx(server.port, location_extra=extra)

        yield Path(name, plain, via_nginx, None, "ignoring" not in name)
        return
    relays = fault_relay
    direction = "request" if name == "resets up" else "response"

    made = Path(name, plain, None, None, None)

    async def via_relay(server: Address) -> str:
        relay = await relays(server.port, direction=direction, every=3)
        made.relays.append(relay)
        return relay.url

    made.front = via_relay
    yield made


@pytest.fixture
async def echo() -> AsyncIterator[Address]:
    async with EchoServer() as address:
        yield address


@contextlib.asynccontextmanager
async def _through(path: Path, echo: Address) -> AsyncIterator[Running]:
    async with run_pair(
        [echo],
        transport="http",
        client_settings=path.client,
        server_settings=Settings(password="pw"),
        front=path.front,
    ) as pair:
        yield pair


async def test_twenty_megabytes_each_way_at_once_arrive_intact(path: Path, echo: Address) -> None:
    async with _through(path, echo) as pair:
        async with asyncio.timeout(90):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo), 20 << 20)
        assert sent == echoed
        if path.relays:
            assert path.resets >= 3, "the relay was to reset every third body"
        if path.streaming is not None:  # once a probe came back clear, not at a moment
            carrier = pair.tunnel.session._carrier  # type: ignore[union-attr]
            await wait_for(lambda: carrier.probes_decided > 0, timeout=30)
            assert carrier.streaming is path.streaming


async def test_fifty_parallel_connections_all_arrive_intact(path: Path, echo: Address) -> None:
    async with _through(path, echo) as pair:
        async with asyncio.timeout(90):
            results = await asyncio.gather(
                *(hashed_exchange(pair.local(echo), 200_000) for _ in range(50))
            )
        assert sum(sent == echoed for sent, echoed, *_ in results) == 50
        if path.relays:
            assert path.resets >= 3


async def test_half_close_still_brings_the_reply(path: Path) -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        writer.write(hashlib.sha256(request).hexdigest().encode())
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(answer_after_eof, "127.0.0.1", 0)
    address = Address("127.0.0.1", target.sockets[0].getsockname()[1])
    async with target:
        async with _through(path, address) as pair:
            local = pair.local(address)
            reader, writer = await asyncio.open_connection(local.host, local.port)
            body = os.urandom(500_000)
            writer.write(body)
            writer.write_eof()
            async with asyncio.timeout(30):
                assert await reader.read() == hashlib.sha256(body).hexdigest().encode()
            writer.close()


async def _plain_round_trip(url: str, proxy: str | None) -> float:
    """p50 of a plain GET over the same path: what one HTTP round trip costs there."""
    samples = []
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            started = time.perf_counter()
            async with http.get(url, proxy=proxy) as response:
                await response.read()
            samples.append(time.perf_counter() - started)
    return statistics.median(samples[5:])


@pytest.mark.parametrize("path", [p for p in PATHS if not p.startswith("resets")], indirect=True)
async def test_an_interactive_exchange_takes_a_few_http_round_trips(
    path: Path, echo: Address
) -> None:
    async with _through(path, echo) as pair:
        local = pair.local(echo)
        reader, writer = await asyncio.open_connection(local.host, local.port)
        samples = []
        async with asyncio.timeout(30):
            for _ in range(60):
                started = time.perf_counter()
                writer.write(b"k" * 64)
                await reader.readexactly(64)
                samples.append(time.perf_counter() - started)
        writer.close()
        url = str(pair.tunnel.server.url("/index.html"))
        one = await _plain_round_trip(url, path.proxy)
        tunnel = statistics.median(samples[10:])
        print(f"{path.name}: tunnel {tunnel * 1e3:.2f} ms, one HTTP round trip {one * 1e3:.2f} ms")
        assert tunnel < 4 * one + 0.005, (
            f"{tunnel * 1e3:.1f} ms vs one HTTP round trip {one * 1e3:.1f} ms"
        )

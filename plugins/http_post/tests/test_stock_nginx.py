"""Behind nginx as Debian ships it (client_max_body_size 1m, proxy_buffering on, the stock
proxy timeouts: tests/intermediaries/nginx-stock.conf.in): a default client fits its limits,
and a client told to send 4 MiB bodies halves them after the 413s and carries on. A path
that resets large bodies instead of answering 413 has the same effect."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import pytest
from flyway_http_post.client import HttpPostCarrier

from flyway_core import Address, Settings
from flyway_core.testing import hashed_exchange, run_pair

if TYPE_CHECKING:
    from intermediaries import FaultRelayFactory, NginxFactory

pytest_plugins = ["intermediaries"]


@pytest.mark.parametrize("max_body", [None, 4 << 20], ids=["default", "4 MiB bodies"])
async def test_fifty_connections_and_twenty_megabytes_through_stock_nginx(
    nginx_stock: NginxFactory,
    echo_server: Address,
    max_body: int | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def via_nginx(server: Address) -> str:
        return nginx_stock(server.port)

    options = {} if max_body is None else {"http_max_body": max_body}
    client = Settings(password="pw", options=options)
    caplog.set_level(logging.WARNING, logger="flyway_http_post.client")
    async with run_pair(
        [echo_server],
        transport="http",
        server_settings=Settings(password="pw"),
        client_settings=client,
        front=via_nginx,
    ) as pair:
        local = pair.local(echo_server)
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(hashed_exchange(local, 64 << 10) for _ in range(50)))
            assert sum(sent == echoed for sent, echoed, *_ in results) == 50
            sent, echoed, *_ = await hashed_exchange(local, 20_000_000)
            assert sent == echoed
        carrier = pair.tunnel.session._carrier  # type: ignore[union-attr]
        assert isinstance(carrier, HttpPostCarrier)
        assert carrier.body_limit <= 1 << 20
    shrunk = [r for r in caplog.records if "HTTP 413" in r.getMessage()]
    if max_body is None:
        assert carrier.body_limit == 1 << 20  # the default never needed to shrink
        assert not shrunk
    else:
        assert len(shrunk) == 1, "the shrinking is logged once"
        print(shrunk[0].getMessage())


async def test_a_path_that_resets_large_bodies_makes_the_client_send_smaller_ones(
    fault_relay: FaultRelayFactory, echo_server: Address
) -> None:
    """A proxy that answers a body over 300 KiB by resetting the connection, not with 413."""
    relays = []

    async def via_relay(server: Address) -> str:
        relay = await fault_relay(server.port, direction="request", larger_than=300 << 10)
        relays.append(relay)
        return relay.url

    async with run_pair([echo_server], transport="http", front=via_relay) as pair:
        async with asyncio.timeout(60):
            sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 8 << 20)
        assert sent == echoed
        carrier = pair.tunnel.session._carrier  # type: ignore[union-attr]
        assert isinstance(carrier, HttpPostCarrier)
        assert carrier.body_limit <= 300 << 10
    assert relays[0].resets >= 3

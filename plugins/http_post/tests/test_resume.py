"""Resume, both ways: a proxy cutting idle long polls, and the client's network dropping every
connection mid-transfer, lose and duplicate nothing and keep the same session."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from flyway_core import Address, Settings
from flyway_core.events import SessionDown, SessionUp
from flyway_core.testing import hashed_exchange, run_pair, wait_for

if TYPE_CHECKING:
    from intermediaries import NginxFactory

pytest_plugins = ["intermediaries"]

# nginx gives up on an upstream that says nothing for 2 s (504), well inside our 30 s polls.
IMPATIENT = (
    "location ~ .* { proxy_pass http://origin; proxy_http_version 1.1; "
    'proxy_set_header Connection ""; proxy_read_timeout 2s; }'
)


async def test_a_proxy_that_times_out_long_polls_loses_nothing(
    nginx_cdn: NginxFactory, echo_server: Address
) -> None:
    async def via_nginx(server: Address) -> str:
        return nginx_cdn(server.port, location_extra=IMPATIENT)

    settings = Settings(password="pw")
    async with run_pair(
        [echo_server], transport="http", server_settings=settings, front=via_nginx
    ) as pair:
        local = pair.local(echo_server)
        for _ in range(2):
            await asyncio.sleep(3)  # idle: every poll in flight is cut with a 504
            async with asyncio.timeout(30):
                sent, echoed, *_ = await hashed_exchange(local, 4 << 20)
            assert sent == echoed
        assert not [e for e in pair.client_events if isinstance(e, SessionDown)]
        assert sum(isinstance(e, SessionUp) for e in pair.client_events) == 1


async def test_a_network_that_drops_every_connection_mid_transfer_loses_nothing(
    echo_server: Address,
) -> None:
    async with run_pair([echo_server], transport="http", via_relay=True) as pair:
        assert pair.relay is not None
        exchange = asyncio.create_task(hashed_exchange(pair.local(echo_server), 20 << 20))
        relay = pair.relay
        for _ in range(3):
            await asyncio.sleep(0.1)
            # the client may be between retries: cut once it has connections again
            await wait_for(lambda: any(not w.is_closing() for w in relay.writers), timeout=10)
            assert relay.cut() > 0  # every HTTP connection dies at once, mid-body
            assert not exchange.done()
        async with asyncio.timeout(60):
            sent, echoed, *_ = await exchange
        assert sent == echoed
        assert not [e for e in pair.client_events if isinstance(e, SessionDown)]
        assert sum(isinstance(e, SessionUp) for e in pair.client_events) == 1

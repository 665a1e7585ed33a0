"""Several flyway servers behind a load balancer (DESIGN.md "Scale"), with a real HAProxy.

A session lives in the server process that accepted its hello, and the HTTP
session id travels sealed, so no balancer can hash on it. What keeps a session's
requests together is the balancer's own cookie: HAProxy inserts one naming the
server into the first answer, flyway-http-post keeps a cookie jar per session and
sends it back, and HAProxy routes by it. WebSocket needs nothing: a session is one
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import pytest

from flyway_core import Address, ServerURL, Settings
from flyway_core.events import Event, NotTunnelTraffic, SessionUp, TunnelRejected
from flyway_core.testing import forwarding, hashed_exchange, serving

if TYPE_CHECKING:
    from intermediaries import BalancerFactory

pytest_plugins = ["intermediaries"]

CLIENTS = 4


def sessions_up(events: list[Event]) -> int:
    return sum(isinstance(event, SessionUp) for event in events)


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_each_session_stays_on_its_server_and_the_servers_share_the_clients(
    transport: str, echo_server: Address, haproxy_balancer: BalancerFactory
) -> None:
    settings = Settings(password="pw")
    on_a: list[Event] = []
    on_b: list[Event] = []
    async with serving(settings, on_a) as (_, a), serving(settings, on_b) as (_, b):
        balancer = haproxy_balancer([a.port, b.port])
        url = ServerURL.parse(balancer.url, default_port=80)
        client_events: list[list[Event]] = [[] for _ in range(CLIENTS)]
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    forwarding(url, transport, settings, [echo_server], events)
                )
                for events in client_events
            ]
            async with asyncio.timeout(60):
                results = await asyncio.gather(
                    *(hashed_exchange(ports[echo_server], 2 << 20) for _, ports in clients)
                )
        for sent, echoed, sent_down, got_down in results:
            assert (sent, sent_down) == (echoed, got_down)
        # One session per client for the whole exchange (a request routed to the other
        # server would have ended it), and round robin gave each server some.
        assert [sessions_up(events) for events in client_events] == [1] * CLIENTS
        assert sessions_up(on_a) + sessions_up(on_b) == CLIENTS
        assert sessions_up(on_a) >= 1 and sessions_up(on_b) >= 1


async def test_without_the_balancers_cookie_http_sessions_break(
    echo_server: Address, haproxy_balancer: BalancerFactory
) -> None:
    """The control: the same balancer minus the cookie splits a session's requests.

    Split, a session usually breaks; its retries may yet land on its own server and
    save it, so what is asserted is the split: the other server saw requests of a
    session it never accepted (turned away as not tunnel traffic).
    """
    settings = Settings(password="pw")
    on_a: list[Event] = []
    on_b: list[Event] = []
    async with serving(settings, on_a) as (_, a), serving(settings, on_b) as (_, b):
        balancer = haproxy_balancer([a.port, b.port], sticky=False)
        url = ServerURL.parse(balancer.url, default_port=80)
        events: list[Event] = []
        failed = False
        async with forwarding(url, "http", settings, [echo_server], events) as (_, ports):
            try:
                async with asyncio.timeout(5):
                    sent, echoed, *_ = await hashed_exchange(ports[echo_server], 1 << 20)
                failed = sent != echoed
            except* (TimeoutError, ConnectionError, OSError, AssertionError):
                failed = True  # AssertionError: the echo came back short (the session ended)
        turned_away = [e for e in on_a + on_b if isinstance(e, NotTunnelTraffic | TunnelRejected)]
        assert failed or sessions_up(events) > 1 or turned_away

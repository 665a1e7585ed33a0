"""The server's policy (--deny) as a -D client meets it: SOCKS5 0x02, SOCKS4 0x5B, HTTP 403."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from flyway_socks5 import Socks5Listener
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from flyway_core import Address, Settings
from flyway_core.policy import Policy
from flyway_core.testing import joined_tunnel, listening

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def _proxy_with(policy: Policy) -> AsyncIterator[Address]:
    async with joined_tunnel(Settings(password="pw", policy=policy)) as tunnel:
        async with listening(Socks5Listener(Address("127.0.0.1", 0)), tunnel) as proxy:
            yield proxy


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param({"deny": ["127.0.0.1"]}, id="deny-address"),
        pytest.param({"deny_private": True}, id="deny-private"),
        pytest.param({"allow": ["*.example.com"]}, id="allow-elsewhere"),
    ],
)
@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
async def test_a_refused_target_is_0x02_to_a_socks5_client(
    echo_server: Address, rules: dict[str, object], target: str
) -> None:
    async with _proxy_with(Policy.parse(**rules)) as proxy:  # type: ignore[arg-type]
        url = f"socks5://127.0.0.1:{proxy.port}"
        with pytest.raises(ProxyError) as refused:
            await Proxy.from_url(url, rdns=True).connect(target, echo_server.port, timeout=5)
        assert refused.value.error_code == 0x02


async def test_an_allowed_target_still_works_beside_a_denied_one(echo_server: Address) -> None:
    policy = Policy.parse(deny=["localhost"])  # the name is refused, the address is not
    async with _proxy_with(policy) as proxy:
        url = f"socks5://127.0.0.1:{proxy.port}"
        with pytest.raises(ProxyError):
            await Proxy.from_url(url, rdns=True).connect("localhost", echo_server.port, timeout=5)
        sock = await Proxy.from_url(url).connect("127.0.0.1", echo_server.port, timeout=5)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"allowed")
        writer.write_eof()
        assert await reader.read(-1) == b"allowed"
        writer.close()


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_a_refused_target_is_403_to_an_http_proxy_client(
    echo_server: Address, method: str
) -> None:
    async with _proxy_with(Policy.parse(deny=["127.0.0.0/8"])) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        target = f"127.0.0.1:{echo_server.port}"
        line = (
            f"CONNECT {target} HTTP/1.1"
            if method == "CONNECT"
            else f"GET http://{target}/ HTTP/1.1"
        )
        writer.write(f"{line}\r\nHost: {target}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
    assert status.startswith(b"HTTP/1.1 403 ")

"""flyway-fallback's two plugins: found by entry point, each blockable alone, run from the CLI."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest
from fallback_compare import comparable, same_answers
from fallback_site import PASSWORD
from flyway_fallback.reverse_proxy import ReverseProxyFallback
from flyway_fallback.static_files import StaticFallback
from flyway_procs import flyway

from flyway_core import ConfigError, Settings
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.testing import free_port, wait_port
from flyway_core.testing.probes import Probe


def test_both_plugins_are_found_by_their_entry_points(tmp_path: Path) -> None:
    plugins = Plugins(make_plugin_manager())
    info = plugins.describe(Settings())
    for name in ("reverse_proxy", "static_files"):
        assert info[name].distribution == "flyway-fallback"
        assert "fallback_for" in info[name].hooks
    assert isinstance(plugins.fallback("http://127.0.0.1:1", Settings()), ReverseProxyFallback)
    assert isinstance(plugins.fallback(str(tmp_path), Settings()), StaticFallback)


@pytest.mark.parametrize("blocked", ["reverse_proxy", "static_files"])
def test_each_can_be_disabled_alone(blocked: str, tmp_path: Path) -> None:
    plugins = Plugins(make_plugin_manager(blocked=[blocked]))
    specs = {"reverse_proxy": "http://127.0.0.1:1", "static_files": str(tmp_path)}
    with pytest.raises(ConfigError, match="pip install flyway-fallback"):
        plugins.fallback(specs[blocked], Settings())
    (other,) = set(specs) - {blocked}
    assert plugins.fallback(specs[other], Settings()) is not None
    assert type(plugins.fallback(None, Settings())).__name__ == "NotFoundFallback"


async def test_the_flyway_command_serves_the_site_and_stops_cleanly(
    nginx_site: int, site_root: Path
) -> None:
    """The real command (uvloop when installed, as users run it), pages and hand-overs."""
    probes = [
        Probe("GET /", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Probe("unparsable", b"GET / HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n"),
        Probe("garbage", b"\x16\x03\x01 not http\r\n\r\n"),
        Probe("upgrade", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n"),
    ]  # fmt: skip
    for spec in (f"http://127.0.0.1:{nginx_site}", str(site_root)):
        port = free_port()
        with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q", "-P", spec]) as server:
            await asyncio.to_thread(wait_port, port)
            for probe in probes if spec.startswith("http") else probes[:1]:
                ours, theirs = await same_answers(probe, port, nginx_site)
                assert comparable(ours, port) == comparable(theirs, nginx_site), probe.name
                assert ours.ending == theirs.ending, probe.name
            async with aiohttp.ClientSession() as http:  # over 64 KiB: sendfile, or its stand-in
                async with http.get(f"http://127.0.0.1:{port}/big.bin") as response:
                    assert await response.read() == (site_root / "big.bin").read_bytes()
            server.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(server.communicate, timeout=10)
        assert server.returncode == 0 and err == ""

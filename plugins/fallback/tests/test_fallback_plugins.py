"""flyway-fallback's two plugins: found by entry point, each blockable alone, run from the CLI."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from fallback_site import PASSWORD
from flyway_fallback.reverse_proxy import ReverseProxyFallback
from flyway_fallback.static_files import StaticFallback
from flyway_procs import flyway

from flyway_core import ConfigError, Settings
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.testing import free_port, wait_port
from flyway_core.testing.probes import Probe, answer


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
    probe = Probe("GET /", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    theirs = await answer(nginx_site, probe)
    for spec in (f"http://127.0.0.1:{nginx_site}", str(site_root)):
        port = free_port()
        with flyway([f"127.0.0.1:{port}", "-p", PASSWORD, "-q", "-P", spec]) as server:
            await asyncio.to_thread(wait_port, port)
            ours = await answer(port, probe)
            server.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(server.communicate, timeout=10)
        assert ours.responses[0].body == theirs.responses[0].body
        assert server.returncode == 0 and err == ""

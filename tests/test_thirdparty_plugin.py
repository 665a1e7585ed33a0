"""A third-party transport package, pip-installed: discovered, listed, and carrying real bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flyway_procs import flyway
from test_cli import EchoThread, echo_through, run

from flyway_core.testing import free_port, wait_port

PACKAGE = Path(__file__).parent / "thirdparty" / "flyway-tcp"


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", str(PACKAGE)],
        check=True,
        timeout=120,
    )
    try:
        yield
    finally:
        subprocess.run([*pip, "uninstall", "-y", "flyway-tcp"], check=True, timeout=120)


def test_the_installed_plugin_is_listed(installed: None) -> None:
    listed = {p["name"]: p for p in json.loads(run("plugins", "--json").stdout)}
    assert listed["tcp"]["distribution"] == "flyway-tcp"
    assert listed["tcp"]["version"] == "0.3.0"
    assert listed["tcp"]["provides"] == ["transports: tcp", "options"]
    assert "--tcp-port" in run("-h").stdout


def test_the_installed_plugin_carries_a_tunnel(installed: None) -> None:
    echo = EchoThread()
    port, tcp_port, local = free_port(), free_port(), free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "pw", "--tcp-port", str(tcp_port)]):
        wait_port(tcp_port)
        client_args = ["--transport", "tcp", "--tcp-port", str(tcp_port), "-v"]
        with flyway(
            [*client_args, "-L", f"{local}:127.0.0.1:{echo.port}", f"127.0.0.1:{port}", "-p", "pw"]
        ) as client:
            wait_port(local)
            time.sleep(0.3)
            assert echo_through(local, 2 << 20)
            client.terminate()
            _, err = client.communicate(timeout=5)
    assert "over tcp" in err

"""Real clients: curl through a -D port in every mode it has, in-process and as real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flyway_core import Address
from flyway_core.testing import free_port
from flyway_core.testing.processes import flyway_processes

StartProxy = Callable[..., Any]  # the start_proxy fixture (conftest.py)

BODY = b"hello from the target"


@pytest.fixture(autouse=True)
def _curl_installed() -> None:
    """Skip without curl, except under CI (``CI`` set): there a missing curl fails."""
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is not installed; CI must run these tests", pytrace=False)
        pytest.skip("curl is not installed")


async def _curl(*args: str) -> tuple[int, bytes]:
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "5", "--noproxy", "", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await curl.communicate()
    assert curl.returncode is not None
    return curl.returncode, out


@pytest.mark.parametrize(
    "mode",
    [
        ["--socks5-hostname", "{proxy}"],
        ["--socks5", "{proxy}"],
        ["--socks4a", "{proxy}"],
        ["--socks4", "{proxy}"],
        ["-x", "http://{proxy}"],  # absolute-form GET
        ["-p", "-x", "http://{proxy}"],  # CONNECT
    ],
    ids=["socks5-hostname", "socks5", "socks4a", "socks4", "http-absolute", "http-connect"],
)
async def test_curl_fetches_a_page_through_each_protocol(
    proxy: Address, web_target: Address, mode: list[str], server_only_name: str, server_only: Any
) -> None:
    args = [arg.format(proxy=proxy) for arg in mode]
    # --socks5 and --socks4 send an address: curl resolves the name itself, so it must be
    # one it can resolve. Every other mode sends the name, here one that only the
    # server side resolves: the page can only have come through flyway, named.
    local = mode[0] in ("--socks5", "--socks4")
    host = "localhost" if local else server_only_name
    async with asyncio.timeout(10):
        code, out = await _curl(*args, f"http://{host}:{web_target.port}/")
    assert (code, out) == (0, BODY)
    assert server_only.dials == (0 if local else 1)


@pytest.mark.parametrize(
    "mode",
    [["-x", "socks5h://alice:s3cret@{proxy}"], ["-p", "-x", "http://alice:s3cret@{proxy}"]],
    ids=["socks5-user-pass", "http-basic"],
)
async def test_curl_with_credentials(
    start_proxy: StartProxy,
    web_target: Address,
    mode: list[str],
    server_only_name: str,
    server_only: Any,
) -> None:
    proxy = await start_proxy((b"alice", b"s3cret"))
    args = [arg.format(proxy=proxy) for arg in mode]
    wrong = [arg.replace("s3cret", "wrong") for arg in args]
    url = f"http://{server_only_name}:{web_target.port}/"
    async with asyncio.timeout(10):
        assert await _curl(*args, url) == (0, BODY)
        code, _ = await _curl(*wrong, url)
    assert code != 0
    assert server_only.dials == 1  # the wrong credentials reached nothing


async def test_real_flyway_processes_serve_dash_d_with_credentials_from_the_environment(
    web_target: Address,
) -> None:
    server_port, socks_port = free_port(), free_port()
    client = ["-D", str(socks_port), f"127.0.0.1:{server_port}"]
    async with flyway_processes({"FLYWAY_PASSWORD": "a long test password"}) as start:
        await start(f"127.0.0.1:{server_port}", port=server_port)
        proc = await start(*client, env={"FLYWAY_SOCKS_AUTH": "alice:s3cret"}, port=socks_port)
        url = f"http://localhost:{web_target.port}/"
        proxy = f"socks5h://alice:s3cret@127.0.0.1:{socks_port}"
        async with asyncio.timeout(15):
            while (got := await _curl("-x", proxy, url))[0]:
                await asyncio.sleep(0.1)  # until the session is up
            assert got == (0, BODY)
            assert (await _curl("--socks5-hostname", f"127.0.0.1:{socks_port}", url))[0] != 0
        # What `ps` shows of the running client: its -D port, and not the password.
        cmdline = (await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)).split(
            b"\0"
        )
        assert b"-D" in cmdline and str(socks_port).encode() in cmdline, cmdline
        assert not any(b"s3cret" in arg for arg in cmdline), cmdline

"""flyway doctor against real servers on 127.0.0.1: what passes, what is refused, what is
recommended, and one clear line when the server cannot be asked."""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import flyway_http_post
import flyway_websocket
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from flyway_doctor.advice import advise
from flyway_doctor.probes import BodyCheck, Findings, IdleCheck, StreamingCheck, WebSocketCheck
from flyway_http_post import HttpPostTransport
from flyway_http_post.envelope import EnvelopeKeys, Kind, PingInfo, Request

from flyway_core import Settings
from flyway_core.cli import build_cli
from flyway_core.plugins import Plugins, make_plugin_manager
from flyway_core.protocol import derive_master_key
from flyway_core.testing import serving

if TYPE_CHECKING:
    from intermediaries import NginxFactory

    from flyway_core.interfaces import Transport

pytest_plugins = ["intermediaries"]

CAP = (1 << 20) + 4096  # the largest body a default server reads: --http-max-body + 4 KiB


# --- servers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def flyway_server(
    transports: Callable[[Settings], dict[str, Transport]] | None = None,
) -> AsyncIterator[int]:
    """A flyway server (every installed transport, or ``transports(settings)``): its port."""
    async with serving(Settings(password="pw"), [], transports=transports) as (_, address):
        yield address.port


@contextlib.asynccontextmanager
async def plain_site() -> AsyncIterator[int]:
    """An ordinary web site that answers every request with a page: not flyway."""

    async def page(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def in_thread(serving: Callable[[], AbstractAsyncContextManager[int]]) -> Iterator[int]:
    """Run a server on its own loop in a thread, so a synchronous CLI run can reach it."""
    port: concurrent.futures.Future[int] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with serving() as bound:
                port.set_result(bound)
                await stop.wait()
        except Exception as exc:
            if not port.done():
                port.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield port.result(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def doctor(*args: str, env: dict[str, str] | None = None) -> Result:
    plugins = Plugins(make_plugin_manager(blocked=["console"]))
    cli = build_cli(plugins)
    return CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(cli, ["doctor", *args])


def only_http(settings: Settings) -> dict[str, Transport]:
    return {"http": HttpPostTransport.from_settings(settings)}


def only_ws(settings: Settings) -> dict[str, Transport]:
    return {"ws": flyway_websocket.WebSocketTransport()}


# --- the plugin -------------------------------------------------------------------------


def test_the_doctor_is_a_plugin_of_its_own_that_adds_one_command() -> None:
    listed = Plugins(make_plugin_manager(blocked=["console"])).describe(Settings())
    assert (listed["doctor"].distribution, listed["doctor"].hooks) == (
        "flyway-doctor",
        ["register_commands"],
    )
    assert "register_commands" not in listed["http_post"].hooks


def test_http_post_does_not_import_the_doctor() -> None:
    package = Path(flyway_http_post.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("flyway_doctor") for name in names), module.name


# --- the doctor -------------------------------------------------------------------------


def test_a_direct_path_passes_everything_and_websocket_is_recommended() -> None:
    with in_thread(flyway_server) as port:
        result = doctor(f"127.0.0.1:{port}", "-p", "pw", "--max-idle", "2", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["http_post"] is True
    assert found["websocket"]["passes"] is True
    assert found["streaming"]["prompt"] is True
    assert found["round_trip"]["samples"] == 20
    assert found["round_trip"]["plain_get_status"] == 404  # the fallback answers it
    body = found["post_body"]
    assert body["limit"] == "server"
    assert (body["largest_passing"], body["first_failing"]) == (CAP, None)
    assert body["server_max_body"] == 1 << 20
    assert found["idle"]["survived_s"] == [2.0]
    assert found["idle"]["cut_after_s"] is None
    advice = found["recommendation"]
    assert advice["transport"] == "ws"
    assert advice["client"] == f"flyway -w -L LPORT:HOST:HPORT 127.0.0.1:{port} -p PASSWORD"
    assert advice["auto"] == f"flyway --auto -L LPORT:HOST:HPORT 127.0.0.1:{port} -p PASSWORD"
    assert (advice["http_max_body"], advice["http_poll_timeout"]) == (1 << 20, 30.0)
    assert advice["server"] is None


def test_the_table_names_each_check_and_the_command_to_use() -> None:
    with in_thread(lambda: flyway_server(only_http)) as port:
        result = doctor(f"http://127.0.0.1:{port}/", "-p", "pw", "--max-idle", "1")
    assert result.exit_code == 0, result.output
    for row in ("round trip", "WebSocket", "streamed responses", "largest POST body", "idle"):
        assert row in result.stdout
    assert "fails: refused: HTTP 404" in result.stdout  # no ws on this server
    assert "the server's own cap" in result.stdout
    assert f"use (HTTP POST):  flyway -L LPORT:HOST:HPORT http://127.0.0.1:{port}/ -p" in (
        result.stdout
    )


def test_limits_of_a_cdn_are_found_and_blamed_on_the_path(nginx_cdn: NginxFactory) -> None:
    tight = (
        "client_max_body_size 300k; proxy_ignore_headers X-Accel-Buffering; "
        "location ~ .* { proxy_pass http://origin; proxy_http_version 1.1; "
        "proxy_read_timeout 3s; }"
    )
    with in_thread(flyway_server) as port:
        url = nginx_cdn(port, location_extra=tight)
        result = doctor(url, "-p", "pw", "--max-idle", "4", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["websocket"]["passes"] is False  # nginx does not pass the upgrade
    assert found["streaming"]["prompt"] is False  # and buffers the streamed answer
    body = found["post_body"]
    assert (body["limit"], body["failure"]) == ("path", "HTTP 413")
    assert 256 << 10 <= body["largest_passing"] < body["first_failing"] <= 320 << 10
    idle = found["idle"]
    assert (idle["survived_s"], idle["cut_reason"]) == ([2.0], "HTTP 504")
    assert 2.9 <= idle["cut_after_s"] <= 3.5
    advice = found["recommendation"]
    assert (advice["transport"], advice["http_max_body"], advice["http_poll_timeout"]) == (
        "http",
        128 << 10,
        2.0,
    )
    assert advice["server"] == "--http-poll-timeout 2 --http-max-body 131072"


def test_a_server_with_only_websocket_is_still_diagnosed() -> None:
    with in_thread(lambda: flyway_server(only_ws)) as port:
        result = doctor(f"127.0.0.1:{port}", "-p", "pw", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["http_post"], found["websocket"]["passes"]) == (False, True)
    assert found["recommendation"]["transport"] == "ws"


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        (flyway_server, "wrong password, or not a flyway server at http://127.0.0.1:"),
        (plain_site, "HTTP 200, but not a flyway answer"),
    ],
    ids=["wrong password", "not flyway"],
)
def test_a_server_that_does_not_answer_as_flyway_is_one_line(
    serving: Callable[[], AbstractAsyncContextManager[int]], expected: str
) -> None:
    with in_thread(serving) as port:
        result = doctor(f"127.0.0.1:{port}", "-p", "wrong", "--max-idle", "1")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flyway: the server did not accept")
    assert expected in lines[0]


def test_an_unreachable_server_and_a_missing_password_are_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        result = doctor(f"127.0.0.1:{port}", "-p", "pw")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"flyway: cannot reach http://127.0.0.1:{port}/: connection refused"
    )
    result = doctor("127.0.0.1:1", env={"FLYWAY_PASSWORD": ""})
    assert result.exit_code == 2
    assert "a password is needed" in result.stderr


def _found(**changes: Any) -> Findings:
    base = Findings(
        "http://cdn.example/",
        True,
        None,
        WebSocketCheck(False, "refused: HTTP 404", None),
        StreamingCheck(False, 2.0, "buffered"),
        BodyCheck(256 << 10, 304 << 10, "path", "HTTP 413", 1 << 20, CAP, 3 << 20),
        IdleCheck((2.0, 5.0, 15.0), (2.0,), 2.0, 4.01, "HTTP 504", 30.0),
    )
    return Findings(**{**{k: getattr(base, k) for k in Findings.__slots__}, **changes})


def test_path_limits_become_client_and_server_options() -> None:
    advice = advise(_found(), "cdn.example:80", ["--proxy", "http://proxy:3128"], [])
    assert advice.transport == "http"
    assert advice.http_max_body == 128 << 10  # half the largest body that passed
    assert advice.http_poll_timeout == 3  # a quarter clear of the 4 s cut
    assert advice.client == (
        "flyway --http-max-body 131072 --http-poll-timeout 3 --proxy http://proxy:3128 "
        "-L LPORT:HOST:HPORT cdn.example:80 -p PASSWORD"
    )
    assert advice.server == "--http-poll-timeout 3 --http-max-body 131072"
    assert advice.streaming is False


def test_a_short_idle_limit_makes_websocket_keepalives_come_sooner() -> None:
    found = _found(websocket=WebSocketCheck(True, "upgraded", 1.0))
    advice = advise(found, "server:8100", [], ["--insecure"])
    assert advice.idle_timeout == 9  # keepalives every 3 s, under the 4 s cut
    assert advice.client == "flyway -w -t 9 --insecure -L LPORT:HOST:HPORT server:8100 -p PASSWORD"


# --- the PING envelope ------------------------------------------------------------------


async def test_a_ping_touches_no_session_and_reports_the_server_limits() -> None:
    transports: dict[str, Transport] = {}

    def keep(settings: Settings) -> dict[str, Transport]:
        transports.update(only_http(settings))
        return transports

    async with flyway_server(keep) as port, aiohttp.ClientSession() as http:
        keys = EnvelopeKeys(derive_master_key("pw"))
        url = f"http://127.0.0.1:{port}/"
        fresh = Request(Kind.PING, os.urandom(16), up_offset=150, time_ms=round(time.time() * 1000))
        ping = keys.seal_request(fresh, b"x" * 1000)
        async with asyncio.timeout(5), http.post(url, data=ping) as response:
            ((answer, info),) = keys.reader().feed(await response.read())
        assert (answer.up_ack, answer.down_offset) == (1000, 150)
        assert PingInfo.unpack(info) == PingInfo(1 << 20, CAP, 30.0)
        server = transports["http"].server  # type: ignore[attr-defined]
        assert (server.sessions, server.requests) == ({}, 0)
        wrong = EnvelopeKeys(derive_master_key("wrong")).seal_request(
            Request(Kind.PING, os.urandom(16))
        )
        async with asyncio.timeout(5), http.post(url, data=wrong) as response:
            assert response.status == 404  # not ours: the fallback answers

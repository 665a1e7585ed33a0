"""The client's tunnel outlives a failing session, and waits for one a connection needs."""

from __future__ import annotations

import contextlib

import pytest

from flyway_core import Address, FlywayError, Settings
from flyway_core.protocol import DataReceived
from flyway_core.session import Session
from flyway_core.testing import joined_tunnel
from flyway_core.testing.pairs import wait_for

pytestmark = pytest.mark.asyncio


async def test_a_bug_in_one_session_does_not_stop_the_tunnel(
    monkeypatch: pytest.MonkeyPatch, echo_server: Address, caplog: pytest.LogCaptureFixture
) -> None:
    async with joined_tunnel(Settings(password="pw")) as tunnel:
        first = await tunnel.wait_ready()
        dispatch = Session._dispatch

        def broken(self: Session, event: object) -> None:
            if self is first and isinstance(event, DataReceived):
                raise RuntimeError("a bug in the session")
            dispatch(self, event)

        monkeypatch.setattr(Session, "_dispatch", broken)
        with contextlib.suppress(FlywayError):
            async with tunnel.open_stream(echo_server) as stream:
                await stream.write(b"trips the bug")
                await stream.read()
        await wait_for(lambda: tunnel.session not in (None, first), timeout=10)
        async with tunnel.open_stream(echo_server) as stream:  # the next session works
            await stream.write(b"after")
            stream.end()
            assert await stream.read() == b"after"
    assert "failed: RuntimeError: a bug in the session" in caplog.text


async def test_a_connection_made_before_the_session_is_up_waits_for_it(
    echo_server: Address,
) -> None:
    async with joined_tunnel(Settings(password="pw"), wait_ready=False) as tunnel:
        assert tunnel.session is None  # the dial has not even begun
        async with tunnel.open_stream(echo_server) as stream:
            await stream.write(b"early")
            stream.end()
            assert await stream.read() == b"early"

"""TLS on the server port (--cert, --key); certificate checks on the client (--ca, --insecure)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flyway_core import Address, ConfigError, Settings
from flyway_core.events import DialFailed
from flyway_core.testing import hashed_exchange, run_pair, wait_for
from flyway_core.testing.certs import self_signed
from flyway_core.tls import client_ssl, server_ssl


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as PEM files (cert, key)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def _server(certificate: tuple[Path, Path]) -> object:
    cert, key = certificate
    return server_ssl(Settings(options={"cert": str(cert), "key": str(key)}))


@pytest.mark.parametrize("transport", ["ws", "http"])
@pytest.mark.parametrize("check", ["--ca", "--insecure"])
async def test_a_client_that_trusts_the_ca_or_skips_the_check_tunnels_over_tls(
    certificate: tuple[Path, Path], echo_server: Address, transport: str, check: str
) -> None:
    trust = {"ca": str(certificate[0])} if check == "--ca" else {"insecure": True}
    async with (
        run_pair(
            [echo_server],
            transport=transport,
            server_settings=Settings(password="pw"),
            client_settings=Settings(password="pw", options=trust),
            server_ssl=_server(certificate),  # type: ignore[arg-type]
        ) as pair,
        asyncio.timeout(20),
    ):
        sent, echoed, *_ = await hashed_exchange(pair.local(echo_server), 2 << 20)
        assert sent == echoed


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_an_unknown_certificate_is_refused_with_a_clear_line(
    certificate: tuple[Path, Path], echo_server: Address, transport: str
) -> None:
    async with run_pair(
        [echo_server],
        transport=transport,
        server_settings=Settings(password="pw"),
        server_ssl=_server(certificate),  # type: ignore[arg-type]
        wait_ready=False,
    ) as pair:
        await wait_for(lambda: any(isinstance(e, DialFailed) for e in pair.client_events))
        (failure, *_) = [e for e in pair.client_events if isinstance(e, DialFailed)]
        assert "certificate verify failed" in failure.reason
        assert pair.tunnel.session is None


def test_a_missing_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--cert"):
        server_ssl(Settings(options={"cert": str(tmp_path / "nope.pem")}))
    with pytest.raises(ConfigError, match="--key needs --cert"):
        server_ssl(Settings(options={"key": "k.pem"}))
    with pytest.raises(ConfigError, match="--ca"):
        client_ssl(Settings(options={"ca": str(tmp_path / "nope.pem")}))

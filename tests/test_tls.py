"""TLS on the server port (--cert, --key); certificate checks on the client (--ca, --insecure)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flyway_core import Address, ConfigError, Settings
from flyway_core.events import DialFailed
from flyway_core.testing import hashed_exchange, run_pair, wait_for
from flyway_core.tls import client_ssl, server_ssl


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flyway test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


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

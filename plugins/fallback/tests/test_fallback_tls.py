"""With ``--cert``, the site behind -P answers inside TLS, unparsable requests included."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from fallback_site import door
from intermediaries.site import run_nginx_site

from flyway_core import Settings
from flyway_core.testing import free_port
from flyway_core.testing.certs import self_signed
from flyway_core.testing.probes import Answer, Probe, answer
from flyway_core.tls import server_ssl


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "flyway fallback test")


async def _over_tls(port: int, data: bytes) -> Answer:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    writer.write(data)
    raw = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(1 << 16):
                raw += chunk
                if raw.endswith((b"</html>\n", b"</html>\r\n")):
                    break
    finally:
        writer.close()
    return Answer.parse(raw, False)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n",  # aiohttp cannot parse it
    ],
    ids=["parsed", "handed over"],
)
async def test_the_site_answers_inside_tls(
    certificate: tuple[Path, Path], nginx_site: int, data: bytes
) -> None:
    cert, key = certificate
    context = server_ssl(Settings(options={"cert": str(cert), "key": str(key)}))
    async with door(f"http://127.0.0.1:{nginx_site}", ssl_context=context) as (_, bound):
        got = await _over_tls(bound.port, data)
    (response,) = got.responses
    assert response.status == 200 and b"Welcome" in response.body


async def test_a_directorys_301_names_https(
    certificate: tuple[Path, Path], site_root: Path
) -> None:
    cert, key = certificate
    context = server_ssl(Settings(options={"cert": str(cert), "key": str(key)}))
    async with door(str(site_root), ssl_context=context) as (_, bound):
        got = await _over_tls(bound.port, b"GET /docs HTTP/1.1\r\nHost: x:8443\r\n\r\n")
    (response,) = got.responses
    assert response.status == 301
    assert dict(response.headers)["Location"] == f"https://x:{bound.port}/docs/"


@pytest.mark.parametrize("verify", [False, True], ids=["as nginx", "--reverse-proxy-verify"])
async def test_a_self_signed_https_site_is_proxied_unless_verification_is_asked(
    certificate: tuple[Path, Path], site_root: Path, verify: bool
) -> None:
    """nginx does not verify the site's certificate (proxy_ssl_verify off); flyway did,
    and gave 502 for every page of a self-signed site."""
    cert, key = certificate
    tls_port = free_port()
    extra = f"listen 127.0.0.1:{tls_port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};"
    probe = Probe("get", b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    with run_nginx_site(site_root, server_extra=extra):
        spec = f"https://127.0.0.1:{tls_port}"
        async with door(spec, reverse_proxy_verify=verify) as (_, bound):
            got = await answer(bound.port, probe)
    (response,) = got.responses
    if verify:
        assert response.status == 502
    else:
        assert response.status == 200 and response.body == b"hello, world\n"

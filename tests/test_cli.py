"""The command line as users run it: real processes, goflyway's forms, one line per error."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest
from flyway_procs import FLYWAY, flyway

from flyway_core.testing import free_port, wait_port, wait_port_on


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLYWAY, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


class EchoThread:
    """A blocking echo server for process tests (the test itself is synchronous)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)


def echo_through(port: int, size: int = 1 << 20, host: str = "127.0.0.1") -> bool:
    payload = os.urandom(size)
    with socket.create_connection((host, port), timeout=10) as sock:
        sender = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        sender.join()
    return hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_help_shows_the_goflyway_forms() -> None:
    result = run("-h")
    assert result.returncode == 0
    assert "Examples:" in result.stdout
    assert "flyway -L 2222:127.0.0.1:22 server:8100 -p PASSWORD" in result.stdout


def test_version() -> None:
    assert run("--version").stdout.strip() == "flyway 0.1.0"


def test_a_missing_transport_plugin_names_the_package() -> None:
    result = run(
        "-w",
        "-L",
        "1080::22",
        "127.0.0.1:1",
        "-p",
        "x",
        env={"FLYWAY_DISABLE_PLUGINS": "websocket"},
    )
    assert result.returncode == 2
    assert "-w needs the 'ws' transport: pip install flyway-websocket" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["-K", "-L", "1080::22", "127.0.0.1:1"],
            "-K needs the 'kcp' transport: pip install flyway-kcp",
        ),
        (["-D", "1080", "127.0.0.1:1"], "-D needs the 'socks5' plugin: pip install flyway-socks5"),
        (["-P", "/var/www"], "pip install flyway-fallback"),
    ],
)
def test_a_goflyway_flag_without_its_plugin_names_the_package(
    args: list[str], expected: str
) -> None:
    # flyway-socks5, flyway-kcp and flyway-fallback live in this repository: disabled,
    # -D, -K and -P are the placeholders again
    disabled = "socks5,kcp,reverse_proxy,static_files"
    result = run(*args, "-p", "x", env={"FLYWAY_DISABLE_PLUGINS": disabled})
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_forward_rule_is_one_line() -> None:
    result = run("-L", "nope", "127.0.0.1:1", "-p", "x")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["flyway: -L nope: 'nope' is not a port (1-65535)"]


def test_a_client_without_password_is_told() -> None:
    result = run("-L", "1080::22", "127.0.0.1:1", env={"FLYWAY_PASSWORD": ""})
    assert result.returncode == 2
    assert "a password is needed" in result.stderr


def test_a_server_without_password_prints_one_and_the_client_command() -> None:
    port = free_port()
    with flyway([f"127.0.0.1:{port}"], env={"FLYWAY_PASSWORD": ""}) as server:
        wait_port(port)
        assert server.stderr is not None
        fd, raw = server.stderr.fileno(), b""
        deadline = time.monotonic() + 10  # the panel follows the bind; under load, later
        while f"127.0.0.1:{port} -p ".encode() not in raw and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                raw += os.read(fd, 65536)
        server.send_signal(signal.SIGTERM)
        err = raw.decode(errors="replace") + server.communicate(timeout=5)[1]
    assert "(generated)" in err
    assert f"127.0.0.1:{port} -p " in err


def test_sigterm_and_ctrl_c_exit_zero_within_a_second() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_port()
        with flyway([f"127.0.0.1:{port}", "-p", "pw"]) as server:
            wait_port(port)
            started = time.monotonic()
            server.send_signal(sig)
            assert server.wait(timeout=5) == 0
            assert time.monotonic() - started < 1.0


def test_server_and_client_processes_forward_bytes_with_bundled_flags() -> None:
    echo = EchoThread()
    port, local = free_port(), free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "pw"]) as server:
        wait_port(port)
        with flyway(
            ["-wvL", f"{local}:127.0.0.1:{echo.port}", f"127.0.0.1:{port}", "-p", "pw"]
        ) as client:
            wait_port(local)
            time.sleep(0.3)
            assert echo_through(local)
            client.send_signal(signal.SIGTERM)
            _, client_err = client.communicate(timeout=5)
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=5)
    assert "Traceback" not in client_err + server_err
    assert f"127.0.0.1:{echo.port} closed" in client_err  # -v: a line per connection
    assert client.returncode == 0 == server.returncode


def test_a_wrong_password_is_one_readable_line() -> None:
    port, local = free_port(), free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "right"]) as server:
        wait_port(port)
        with flyway(
            ["-w", "-L", f"{local}:127.0.0.1:9", f"127.0.0.1:{port}", "-p", "wrong"]
        ) as client:
            wait_port(local)
            time.sleep(1.0)
            client.send_signal(signal.SIGTERM)
            _, err = client.communicate(timeout=5)
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=5)
    lines = [line for line in err.splitlines() if "did not accept the tunnel" in line]
    assert lines and "wrong password, or not a flyway server" in lines[0]
    assert "Traceback" not in err
    # counted, not printed one by one: one summary line when the server stops
    (summary,) = [line for line in server_err.splitlines() if "not tunnel traffic" in line]
    assert "with a bad hello" in summary


@pytest.mark.parametrize(
    ("rule", "bind", "target"),
    [
        ("{local}:127.0.0.1:{echo}", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:{local}:127.0.0.1:{echo}", "127.0.0.1", "127.0.0.1"),
        ("[::1]:{local}:[::1]:{echo}", "::1", "::1"),
        ("{local}:[::1]:{echo}", "127.0.0.1", "::1"),
    ],
)
def test_forward_forms(rule: str, bind: str, target: str) -> None:
    echo = EchoThread(target)
    port, local = free_port(), free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "pw"]) as server:
        wait_port(port)
        with flyway(
            ["-w", "-L", rule.format(local=local, echo=echo.port), f"127.0.0.1:{port}", "-p", "pw"]
        ):
            wait_port_on(bind, local)
            time.sleep(0.3)
            assert echo_through(local, 4096, host=bind)
        server.terminate()


def test_forward_to_the_servers_own_port() -> None:
    echo = EchoThread()
    port, local = free_port(), free_port()
    with flyway([f"127.0.0.1:{port}", "-p", "pw"]):
        wait_port(port)
        with flyway(["-w", "-L", f"{local}::{echo.port}", f"127.0.0.1:{port}", "-p", "pw"]):
            wait_port(local)
            time.sleep(0.3)
            assert echo_through(local, 4096)

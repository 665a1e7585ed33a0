"""Run a flyway server and client on loopback and push real data through the forwarded port."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flyway_core.testing.ports import free_port, wait_port

FLYWAY = [sys.executable, "-m", "flyway_core"]
PASSWORD = "demo-" + os.urandom(6).hex()


def wait_listening(port: int) -> None:
    try:
        wait_port(port, timeout=15.0)
    except TimeoutError as exc:
        raise SystemExit(str(exc)) from None


def say(text: str) -> None:
    print(f"\033[1;36m==>\033[0m {text}", flush=True)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="flyway-demo-"))
    payload = os.urandom(20 * 1024 * 1024)
    (root / "index.html").write_text("<h1>hello through the flyway tunnel</h1>\n")
    (root / "blob.bin").write_bytes(payload)
    web_port, server_port, local_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        say(f"target: a web server on 127.0.0.1:{web_port}")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(web_port),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(root),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        say(f"server: flyway 127.0.0.1:{server_port} -p {PASSWORD}")
        procs.append(subprocess.Popen([*FLYWAY, f"127.0.0.1:{server_port}", "-p", PASSWORD]))
        wait_listening(server_port)
        say(
            f"client: flyway -v -L {local_port}:127.0.0.1:{web_port} 127.0.0.1:{server_port} -p ..."
        )
        procs.append(
            subprocess.Popen(
                [
                    *FLYWAY,
                    "-v",
                    "-L",
                    f"{local_port}:127.0.0.1:{web_port}",
                    f"127.0.0.1:{server_port}",
                    "-p",
                    PASSWORD,
                ]
            )
        )
        wait_listening(local_port)
        time.sleep(0.5)
        say(f"GET http://127.0.0.1:{local_port}/ through the tunnel:")
        with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/", timeout=10) as response:
            print("    " + response.read().decode().strip(), flush=True)
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/blob.bin", timeout=30) as r:
            tunnelled = r.read()
        seconds = time.perf_counter() - start
        same = hashlib.sha256(tunnelled).hexdigest() == hashlib.sha256(payload).hexdigest()
        say(
            f"20 MB through the tunnel in {seconds:.2f}s "
            f"({len(tunnelled) / seconds / 1e6:.0f} MB/s), sha256 "
            + ("matches the original" if same else "DIFFERS")
        )
        time.sleep(0.3)
        if not same:
            raise SystemExit(1)
        say("done: stopping client, server and target")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()

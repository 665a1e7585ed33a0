"""``-K`` between real ``flyway`` processes: a round trip over the lossy link, a killed server.

The in-process tests (``kcp_pairs``) share one event loop between both ends; these run the
command as users do, a server process and a ``-K -L`` client process, and watch what the
client's local connections and its stderr show.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator

from intermediaries.lossy_udp import LossyUdpRelay
from kcp_pairs import LOSSY

from flyway_core import Address
from flyway_core.testing import EchoServer
from flyway_core.testing.pairs import hashed_exchange
from flyway_core.testing.ports import free_port, udp_port_free, wait_port
from flyway_core.testing.processes import FLYWAY

PASSWORD = "a long test password"
IDLE = 3.0  # -t: the session pings after a third of it and gives up after all of it
SLACK = 1.0  # the session's timer and two processes' scheduling, on a busy machine


class _Flyway:
    """A ``flyway`` process whose stderr is kept, line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reading, 1)


@contextlib.asynccontextmanager
async def _flyways() -> AsyncIterator[list[_Flyway]]:
    """Yield a list to append started processes to; stop them all at the end, last first."""
    started: list[_Flyway] = []
    try:
        yield started
    finally:
        for flyway in reversed(started):
            await flyway.stop()


async def _start(started: list[_Flyway], *args: str, port: int | None = None) -> _Flyway:
    proc = await asyncio.create_subprocess_exec(
        *FLYWAY,
        *args,
        "-p",
        PASSWORD,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    flyway = _Flyway(proc)
    started.append(flyway)
    if port is not None:
        await asyncio.to_thread(wait_port, port)
    return flyway


async def _echoed(local: Address, size: int) -> bool:
    """Send ``size`` random bytes through ``local`` to the echo target; True if all came back."""
    reader, writer = await asyncio.open_connection(local.host, local.port)
    data = os.urandom(size)
    try:
        writer.write(data)
        writer.write_eof()
        back = await reader.read()
    except ConnectionError:
        return False
    finally:
        writer.close()
    return hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


async def _until_echoed(local: Address, size: int, timeout: float) -> None:
    """Retry an echo of ``size`` bytes through ``local`` until one comes back whole."""
    async with asyncio.timeout(timeout):
        while not await _echoed(local, size):
            await asyncio.sleep(0.2)  # no session yet: the client is still dialing


def _server_port() -> int:
    while not udp_port_free(port := free_port()):  # the server takes UDP on the same number
        pass
    return port


async def test_real_processes_move_hashed_data_both_ways_over_the_lossy_link() -> None:
    server_port, local_port = _server_port(), free_port()
    async with EchoServer() as echo, _flyways() as started:
        await _start(started, f"127.0.0.1:{server_port}", port=server_port)
        relay = LossyUdpRelay(("127.0.0.1", server_port), up=LOSSY, down=LOSSY, seed=13)
        async with relay:
            forward = f"{local_port}:{echo.host}:{echo.port}"
            client = await _start(
                started, "-K", "-L", forward, f"127.0.0.1:{relay.port}", port=local_port
            )
            local = Address("127.0.0.1", local_port)
            await _until_echoed(local, 1024, timeout=15)  # the session is up
            async with asyncio.timeout(60):
                sent, echoed, size, received = await hashed_exchange(local, 4 << 20)
        assert (sent, size) == (echoed, received)  # 4 MiB each way at once, hash-checked
        assert relay.up.tally.lost and relay.down.tally.lost  # the link did lose datagrams
        assert client.proc.returncode is None
    assert "Traceback" not in client.stderr


async def test_a_killed_server_fails_the_clients_connection_within_t_and_a_new_one_works() -> None:
    server_port, local_port = _server_port(), free_port()
    server_args = [f"127.0.0.1:{server_port}", "-t", str(IDLE)]
    async with EchoServer() as echo, _flyways() as started:
        server = await _start(started, *server_args, port=server_port)
        forward = f"{local_port}:{echo.host}:{echo.port}"
        client = await _start(
            started,
            "-K",
            "-t",
            str(IDLE),
            "-L",
            forward,
            f"127.0.0.1:{server_port}",
            port=local_port,
        )
        local = Address("127.0.0.1", local_port)
        await _until_echoed(local, 1024, timeout=15)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(local.host, local.port)
        sent, echoed = bytearray(), hashlib.sha256()

        async def pump() -> None:  # keeps data moving until the connection fails
            with contextlib.suppress(ConnectionError):
                while True:
                    data = os.urandom(1 << 14)
                    sent.extend(data)
                    writer.write(data)
                    await writer.drain()
                    await asyncio.sleep(0.01)

        pumping = asyncio.create_task(pump())
        received = 0
        async with asyncio.timeout(10):
            while received < 1 << 20:  # the stream is open and moving
                data = await reader.read(1 << 16)
                assert data
                echoed.update(data)
                received += len(data)
        lines_before = len(client.lines)
        server.proc.kill()  # SIGKILL: no Close, no goodbye, the UDP port just goes away
        killed = loop.time()
        async with asyncio.timeout(IDLE * 4):
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(1 << 16):
                    echoed.update(data)
                    received += len(data)
        failed_after = loop.time() - killed
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        writer.close()
        assert failed_after <= IDLE + SLACK
        assert echoed.hexdigest() == hashlib.sha256(sent[:received]).hexdigest()
        assert client.proc.returncode is None  # the client stays up

        await server.proc.wait()
        # The client dials again as soon as its session ends, while no server listens yet.
        await _start(started, *server_args, port=server_port)  # a new server, the same port
        await _until_echoed(local, 1 << 20, timeout=IDLE * 5)
        assert client.proc.returncode is None
        after = client.lines[lines_before:]
    assert "Traceback" not in client.stderr
    # One line says the session ended and why (and one the stream it failed); the dial
    # begun while no server listened succeeded once one did, without failing first.
    ended = [line for line in after if "ended" in line]
    assert len(ended) == 1
    assert f"nothing received for {IDLE:g} s" in ended[0]
    assert not [line for line in after if "no answer" in line]


async def test_a_target_that_ends_its_side_first_still_hears_the_client_out() -> None:
    """Server-side half-close: the target sends, ends its side, then reads the client's."""
    heard: asyncio.Queue[str] = asyncio.Queue()  # per connection: the hash of what it read
    told = os.urandom(300_000)

    async def speak_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(told)
        writer.write_eof()  # the target's side ends; the client's stays open
        heard.put_nowait(hashlib.sha256(await reader.read()).hexdigest())
        writer.close()

    target = await asyncio.start_server(speak_first, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    server_port, local_port = _server_port(), free_port()
    try:
        async with _flyways() as started:
            await _start(started, f"127.0.0.1:{server_port}", port=server_port)
            relay = LossyUdpRelay(("127.0.0.1", server_port), up=LOSSY, down=LOSSY, seed=13)
            async with relay:
                forward = f"{local_port}:127.0.0.1:{target_port}"
                await _start(
                    started, "-K", "-L", forward, f"127.0.0.1:{relay.port}", port=local_port
                )
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
                answer = os.urandom(300_000)
                async with asyncio.timeout(30):
                    assert await reader.read() == told  # all of it, then EOF
                    writer.write(answer)  # after the target's EOF: still carried
                    writer.write_eof()
                    digest = hashlib.sha256(answer).hexdigest()
                    while await heard.get() != digest:  # -L's readiness probe came first
                        pass
                writer.close()
    finally:
        target.close()

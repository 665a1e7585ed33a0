"""A seeded lossy UDP relay: loss, delay, jitter, reordering and duplication, both ways.

The kernel here has no netem, so KCP's tests and its bench column put this between client
and server. It relays one client (answers go to the address that sent last) to one target; each
direction has its own ``Impairment``, and its own ``random.Random`` seeded by ``seed`` and
the direction, so a seeded run repeats. It is bounded: each direction holds at most ``queue``
datagrams in its delay line (more are dropped, as a router's full queue drops them), and it
stops relaying ``lifetime`` seconds after it started. ``rebind()`` moves its side toward the
target to a new source port, as a NAT whose mapping expired would; ``blocked = True`` drops
everything (a vanished path); ``record=N`` keeps the first N datagrams each way in ``recorded`` and
``recorded_down`` (what an attacker on the path would capture). Sockets are asyncio-dgram's.

Run on its own (the bench does): ``python -m intermediaries.lossy_udp --target PORT
--loss 0.05 --delay 0.03`` prints the port it listens on, then relays until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import os
import random
import signal
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncio_dgram

__all__ = ["Impairment", "LossyUdpRelay", "Tally"]

HOST = "127.0.0.1"
BUFFER = 4 << 20  # socket buffers: a burst of a KCP window must not overflow the kernel's


def _big_buffers(stream: asyncio_dgram.DatagramStream) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            stream.socket.setsockopt(socket.SOL_SOCKET, option, BUFFER)


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction suffers: probabilities per datagram, times in seconds."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0  # each datagram waits delay + uniform(0, jitter)
    reorder: float = 0.0  # this share waits 2 * jitter + 5 ms more, so later ones pass it
    duplicate: float = 0.0  # this share is sent twice


@dataclass(slots=True)
class Tally:
    """What one direction saw."""

    datagrams: int = 0
    bytes: int = 0
    lost: int = 0
    duplicated: int = 0
    overflowed: int = 0
    sent: int = 0


@dataclass
class _DelayLine:
    impairment: Impairment
    rng: random.Random
    queue: int
    tally: Tally = field(default_factory=Tally)
    heap: list[tuple[float, int, bytes]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    order: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, data: bytes, now: float) -> None:
        im, rng, tally = self.impairment, self.rng, self.tally
        tally.datagrams += 1
        tally.bytes += len(data)
        if rng.random() < im.loss:
            tally.lost += 1
            return
        copies = 1
        if rng.random() < im.duplicate:
            copies = 2
            tally.duplicated += 1
        for _ in range(copies):
            if len(self.heap) >= self.queue:
                tally.overflowed += 1
                return
            wait = im.delay + rng.uniform(0, im.jitter)
            if rng.random() < im.reorder:
                wait += 2 * im.jitter + 0.005
            heapq.heappush(self.heap, (now + wait, next(self.order), data))
        self.wake.set()


class LossyUdpRelay:
    """Relay a client to ``target`` (answers go to its latest address), impairing both ways."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        up: Impairment = Impairment(),
        down: Impairment = Impairment(),
        seed: int = 0,
        queue: int = 4096,
        lifetime: float = 300.0,
        port: int = 0,
        record: int = 0,
    ) -> None:
        self.target = target
        # One generator per direction: what one direction draws does not depend on how many
        # datagrams the other carried, so a seeded run repeats whatever the timing.
        self.up = _DelayLine(up, random.Random(f"{seed} up"), queue)  # client -> target
        self.down = _DelayLine(down, random.Random(f"{seed} down"), queue)  # target -> client
        self.lifetime = lifetime
        self._port = port
        self.client: tuple[str, int] | None = None
        self._front: asyncio_dgram.DatagramServer | None = None
        self._back: asyncio_dgram.DatagramClient | None = None
        self._back_reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.rebinds = 0
        self.blocked = False
        self.record = record
        self.recorded: list[bytes] = []
        self.recorded_down: list[bytes] = []  # the first ``record`` datagrams the target sent

    @property
    def port(self) -> int:
        assert self._front is not None
        return int(self._front.sockname[1])

    @property
    def source_port(self) -> int:
        """The port the target sees the relayed client come from."""
        assert self._back is not None
        return int(self._back.sockname[1])

    async def start(self) -> int:
        """Bind, start relaying, and return the port clients send to."""
        self._front = await asyncio_dgram.bind((HOST, self._port))
        _big_buffers(self._front)
        await self._connect_back()
        loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._read_front()),
            asyncio.create_task(self._deliver(self.up, self._send_up)),
            asyncio.create_task(self._deliver(self.down, self._send_down)),
        ]
        loop.call_later(self.lifetime, self.close)
        return self.port

    async def _connect_back(self) -> None:
        self._back = await asyncio_dgram.connect(self.target)
        _big_buffers(self._back)
        self._back_reader = asyncio.create_task(self._read_back(self._back))

    async def rebind(self) -> None:
        """Relay toward the target from a new source port from now on (a NAT rebinding)."""
        old, reader = self._back, self._back_reader
        await self._connect_back()
        self.rebinds += 1
        if reader is not None:
            reader.cancel()
        if old is not None:
            old.close()

    async def _read_front(self) -> None:
        assert self._front is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, address = await self._front.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:  # an ICMP error from the client's side: go on
                continue
            self.client = address  # answers go to whoever sent last, as a NAT's would
            if self.blocked:
                continue
            if len(self.recorded) < self.record:
                self.recorded.append(data)
            self.up.push(data, loop.time())

    async def _read_back(self, back: asyncio_dgram.DatagramClient) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, _ = await back.recv()
            except asyncio_dgram.TransportClosed:
                return
            except OSError:  # ICMP port unreachable while the target is down: go on
                continue
            if not self.blocked:
                if len(self.recorded_down) < self.record:
                    self.recorded_down.append(data)
                self.down.push(data, loop.time())

    async def _send_up(self, data: bytes) -> None:
        if self._back is not None:
            await self._back.send(data)

    async def _send_down(self, data: bytes) -> None:
        if self._front is not None and self.client is not None:
            await self._front.send(data, self.client)

    async def _deliver(self, line: _DelayLine, send: object) -> None:
        loop = asyncio.get_running_loop()
        heap = line.heap
        while True:
            if not heap:
                line.wake.clear()
                await line.wake.wait()
                continue
            due = heap[0][0]
            now = loop.time()
            if due > now:
                line.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await line.wake.wait()
                continue
            _, _, data = heapq.heappop(heap)
            try:
                await send(data)  # type: ignore[operator]
            except (OSError, asyncio_dgram.TransportClosed):
                continue
            line.tally.sent += 1

    def close(self) -> None:
        """Stop relaying (also what ``lifetime`` does)."""
        for task in self._tasks:
            task.cancel()
        if self._back_reader is not None:
            self._back_reader.cancel()
        for stream in (self._front, self._back):
            if stream is not None:
                stream.close()

    async def __aenter__(self) -> LossyUdpRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await asyncio.sleep(0)


def _write_stats(path: str, relay: LossyUdpRelay, asked: list[int]) -> None:
    tallies = {"up": asdict(relay.up.tally), "down": asdict(relay.down.tally), "asked": asked[0]}
    Path(path + ".new").write_text(json.dumps(tallies))
    os.replace(path + ".new", path)


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, required=True, help="UDP port on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds, each way")
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    parser.add_argument(
        "--stats", help="write each direction's Tally here as JSON, 5 times/s and on SIGUSR1"
    )
    args = parser.parse_args(argv)
    impairment = Impairment(args.loss, args.delay, args.jitter, args.reorder, args.duplicate)
    relay = LossyUdpRelay(
        (HOST, args.target),
        up=impairment,
        down=impairment,
        seed=args.seed,
        lifetime=args.lifetime,
        port=args.port,
    )
    print(await relay.start(), flush=True)
    asked = [0]  # SIGUSR1s answered: a reader that signals waits for this to go up
    if args.stats:

        def on_signal() -> None:
            asked[0] += 1
            _write_stats(args.stats, relay, asked)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
    try:
        async with asyncio.timeout(args.lifetime):
            while True:
                if args.stats:
                    _write_stats(args.stats, relay, asked)
                await asyncio.sleep(0.2)
    except TimeoutError:
        pass
    finally:
        relay.close()
        up, down = relay.up.tally, relay.down.tally
        print(f"up {up}\ndown {down}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1:]))

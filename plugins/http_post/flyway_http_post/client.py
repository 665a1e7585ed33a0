"""The client side: a Carrier made of POST requests, resuming both ways after any failure.

Theory of operation. Uplink bytes get offsets; up to ``MAX_INFLIGHT`` SEND
requests carry consecutive slices, and a slice whose request fails is sent
again with the same offset until the server has it (its acknowledgement
arrives with every response). Downlink bytes come back on POLL requests the
client keeps outstanding: one always, a second while data is flowing, so the
next burst never waits a round trip for a poll to arrive. Every POLL carries
the offset received so far; after a lost response the next one says REWIND
and the server sends everything unacknowledged again; duplicates are cut by
offset. Whether the path streams responses promptly is probed at the start
and every ``REPROBE_SECONDS``: when it does, polls ask for streamed responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine

import aiohttp

from flyway_core import CarrierClosed, DialError, ServerURL, Settings, TunnelRefused, describe_error
from flyway_core.interfaces import Carrier
from flyway_core.tls import client_ssl
from flyway_http_post.envelope import (
    EnvelopeKeys,
    Kind,
    Request,
    RequestFlags,
    Status,
    new_session_id,
)
from flyway_http_post.limits import PROBE_SECONDS, Limits
from flyway_http_post.offsets import Outbox, Reassembly

__all__ = ["HttpPostCarrier", "http_client", "open_carrier"]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 4  # concurrent SEND requests
ACK_EVERY = 1 << 20  # downlink bytes between acknowledgements while an answer streams
EARLY_LIMIT = 16 << 20  # how far past a gap downlink envelopes are kept
UP_LIMIT = 8 << 20  # unacknowledged uplink bytes before send() waits
REPROBE_SECONDS = 300.0
ACTIVE_SECONDS = 2.0  # a second poll is kept outstanding this long after data arrived
RETRY_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)

Post = Callable[[bytes, float], "contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]"]


def http_client(
    server: ServerURL,
    settings: Settings,
    *,
    proxy: str | None,
    connections: int = MAX_INFLIGHT + 4,
    cookies: bool = True,
) -> aiohttp.ClientSession:
    """Return an aiohttp client that reaches ``server`` the way the ``http`` transport does.

    TLS for ``https://`` servers comes from ``settings`` (``--ca``, ``--insecure``);
    without an explicit ``proxy`` the environment's ``http_proxy`` / ``NO_PROXY``
    apply; bodies are left as they come. With ``cookies`` the client keeps a jar of
    its own, so a load balancer's sticky cookie keeps one session's requests on
    one server process and dies with the session.
    """
    ssl_context = client_ssl(settings) if server.scheme == "https" else True
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=ssl_context),
        cookie_jar=aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar(),
        trust_env=proxy is None,
        auto_decompress=False,
    )


async def open_carrier(
    post: Post, keys: EnvelopeKeys, limits: Limits, hello: bytes, server: str
) -> HttpPostCarrier:
    """Start a session with an OPEN request; TunnelRefused unless the server takes it."""
    session_id = new_session_id()
    body = keys.seal_request(Request(Kind.OPEN, session_id), hello, padding=random.randrange(256))
    try:
        async with post(body, 15.0) as response:
            data = await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DialError(f"cannot reach {server}: {describe_error(exc).lower()}") from None
    if status != 200:
        raise TunnelRefused(server, f"HTTP {status}")
    try:
        envelopes = keys.reader().feed(data)
    except ValueError:
        raise TunnelRefused(server, "the answer is not flyway's") from None
    if not envelopes or envelopes[0][0].status is not Status.OK:
        raise TunnelRefused(server, "the answer is not flyway's")
    carrier = HttpPostCarrier(post, keys, limits, session_id, server)
    carrier.start()
    return carrier


class HttpPostCarrier(Carrier):
    """A reliable duplex pipe over POST requests (see the module docstring)."""

    keepalive = False  # answers to long polls show the server is alive; idle means quiet

    def __init__(
        self, post: Post, keys: EnvelopeKeys, limits: Limits, session_id: bytes, server: str
    ) -> None:
        self._post = post
        self._keys = keys
        self._limits = limits
        self._id = session_id
        self._server = server
        # uplink: kept until acknowledged; _up_next is the next offset not yet in a request
        self._up = Outbox(UP_LIMIT)
        self._up_next = 0
        self._inflight = 0
        # downlink
        self._down = Reassembly(EARLY_LIMIT)  # envelopes in any order, in order out
        self._down_acked = 0  # what the server has been told arrived
        self._acking = False
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._rewind = False
        self._last_data = 0.0
        self._polls = 0
        self._poll_failures = 0
        self.streaming = False
        self._last_probe = 0.0
        # liveness
        self._last_ok = time.monotonic()
        self._error: str | None = None
        self._closed = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._poll_wanted = asyncio.Event()
        self.cleanup: Callable[[], Awaitable[None]] | None = None  # e.g. close the HTTP client

    def start(self) -> None:
        self._spawn(self._poll_keeper())
        self._spawn(self._watchdog())

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Carrier ------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise CarrierClosed(self._error or "the HTTP session is closed")
        self._up.append(data)
        self._pump_up()
        await self._up.wait_room()

    async def receive(self) -> bytes:
        data = b"" if self._closed and self._inbox.empty() else await self._inbox.get()
        if not data and self._error:
            raise CarrierClosed(self._error)
        return data

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        still_open = not self._closed
        self._fail(None)
        try:
            if still_open:  # tell the server, so it frees the session at once
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    body = self._keys.seal_request(Request(Kind.CLOSE, self._id))
                    async with self._post(body, 1.0) as response:
                        await response.read()
        finally:
            if self.cleanup is not None:
                await self.cleanup()

    def _fail(self, error: str | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        if error:
            log.info("http carrier to %s: %s", self._server, error)
        self._inbox.put_nowait(b"")
        self._up.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    # --- uplink -------------------------------------------------------------------------

    def _pump_up(self) -> None:
        """Start SEND requests for unsent slices, up to MAX_INFLIGHT (each retries its own)."""
        while self._inflight < MAX_INFLIGHT and not self._closed:
            if self._up_next < self._up.end:
                start = self._up_next
                end = min(start + self._limits.max_body, self._up.end)
                self._up_next = end
            else:
                return
            self._inflight += 1
            self._spawn(self._send_slice(start, end))

    async def _send_slice(self, start: int, end: int) -> None:
        try:
            delays = itertools.chain(RETRY_DELAYS, itertools.repeat(RETRY_DELAYS[-1]))
            for attempt, delay in enumerate(delays):
                if delay:
                    await asyncio.sleep(delay)
                if start < self._up.base:  # acknowledged meanwhile (a response crossed)
                    start = self._up.base
                    if start >= end:
                        return
                payload = self._up.slice(start, end)
                request = Request(Kind.SEND, self._id, up_offset=start, down_ack=self._down.next)
                body = self._keys.seal_request(request, payload, padding=random.randrange(64))
                if await self._exchange(body, 30.0, lambda _: None):
                    return
                log.debug("SEND %d-%d failed (attempt %d), retrying", start, end, attempt + 1)
        finally:
            self._inflight -= 1
            self._pump_up()

    # --- downlink -----------------------------------------------------------------------

    async def _poll_keeper(self) -> None:
        """Keep one poll outstanding, and a second while data is flowing."""
        self._start_probe()
        while True:
            active = time.monotonic() - self._last_data < ACTIVE_SECONDS
            if active and time.monotonic() - self._last_probe > REPROBE_SECONDS:
                self._start_probe()  # only while busy: an idle tunnel stays quiet
            if self._polls < (2 if active else 1):
                self._start_poll()
                continue
            self._poll_wanted.clear()
            await self._poll_wanted.wait()

    def _start_poll(self) -> None:
        self._polls += 1  # counted now, so the keeper does not start another meanwhile
        self._spawn(self._poll_once())

    def _start_probe(self) -> None:
        self._last_probe = time.monotonic()
        self._spawn(self._probe())

    async def _probe(self) -> None:
        """Ask for two envelopes PROBE_SECONDS apart; they arrive apart if the path streams."""
        request = Request(Kind.POLL, self._id, down_ack=self._down.next, flags=RequestFlags.PROBE)
        body = self._keys.seal_request(request, padding=random.randrange(64))
        arrivals: list[float] = []
        if await self._exchange(body, PROBE_SECONDS + 15.0, arrivals.append):
            self._judge_probe(arrivals)

    async def _poll_once(self) -> None:
        try:
            flags = RequestFlags.NONE
            if self.streaming:
                flags |= RequestFlags.STREAM
            if self._rewind:
                flags |= RequestFlags.REWIND
                self._rewind = False
            request = Request(Kind.POLL, self._id, down_ack=self._down.next, flags=flags)
            body = self._keys.seal_request(request, padding=random.randrange(64))
            timeout = self._limits.poll_timeout + 15.0
            if not await self._exchange(body, timeout, lambda _: None):
                self._rewind = True
                self._poll_failures += 1
                await asyncio.sleep(min(0.05 * 2**self._poll_failures, 2.0))
                return
            self._poll_failures = 0
        finally:
            self._polls -= 1
            self._poll_wanted.set()

    def _judge_probe(self, arrivals: list[float]) -> None:
        """Streaming works when the first envelope came well before the response ended."""
        spread = arrivals[-1] - arrivals[0]
        streaming = len(arrivals) > 1 and spread >= PROBE_SECONDS / 2
        if streaming != self.streaming:
            log.info("http carrier: streamed responses %s", "pass" if streaming else "are buffered")
        self.streaming = streaming

    def _deliver(self, offset: int, payload: bytes) -> None:
        """Take downlink bytes at ``offset``: in order, early ones kept, duplicates cut.

        Two answers in flight may arrive in either order, so an early envelope
        waits for the gap before it; a gap whose answer failed is filled by the
        rewind that failure asks for.
        """
        ready = self._down.add(offset, payload)
        if ready is None:  # too far ahead to keep: it comes again after a rewind
            self._rewind = True
            return
        if not ready:
            return
        for chunk in ready:
            self._inbox.put_nowait(chunk)
        self._last_data = time.monotonic()
        self._poll_wanted.set()
        if self._down.next - self._down_acked >= ACK_EVERY and not self._acking:
            self._acking = True  # a streamed answer can run long: free the server's buffer
            self._spawn(self._acknowledge())

    async def _acknowledge(self) -> None:
        """Tell the server what arrived, with an empty SEND (it carries down_ack)."""
        try:
            while self._down.next - self._down_acked >= ACK_EVERY and not self._closed:
                acked = self._down.next
                request = Request(Kind.SEND, self._id, up_offset=self._up.base, down_ack=acked)
                body = self._keys.seal_request(request, padding=random.randrange(64))
                if not await self._exchange(body, 30.0, lambda _: None):
                    return
                self._down_acked = max(self._down_acked, acked)
        finally:
            self._acking = False

    # --- one request --------------------------------------------------------------------

    async def _exchange(self, body: bytes, limit: float, arrived: Callable[[float], None]) -> bool:
        """POST ``body`` and apply every envelope of the answer; False when it failed."""
        reader = self._keys.reader()
        try:
            async with self._post(body, limit) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                async for chunk in response.content.iter_any():
                    for envelope, payload in reader.feed(chunk):
                        arrived(time.monotonic())
                        if envelope.status is Status.GONE:
                            self._fail("the server ended the session (did it restart?)")
                            return True
                        self._last_ok = time.monotonic()
                        self._up.acknowledge(envelope.up_ack)
                        self._deliver(envelope.down_offset, payload)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.debug("request failed: %s", describe_error(exc).lower())
            return False
        if reader.pending:
            return False  # cut short mid-envelope
        self._last_ok = time.monotonic()
        return True

    async def _watchdog(self) -> None:
        """End the carrier when nothing has worked for a while (the path is dead)."""
        while True:
            await asyncio.sleep(1.0)
            silent = time.monotonic() - self._last_ok
            if silent > self._limits.dead_after:
                self._fail(f"no answer from {self._server} for {silent:.0f}s")
                return

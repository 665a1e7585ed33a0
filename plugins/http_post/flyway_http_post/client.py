"""The client side: a Carrier made of POST requests, resuming both ways after any failure.

Theory of operation. Uplink bytes get offsets; up to ``MAX_INFLIGHT`` SEND
requests carry consecutive slices, and a slice whose request fails is sent
again with the same offset until the server has it (its acknowledgement
arrives with every response). Downlink bytes come back on POLL requests the
client keeps outstanding: one always, a second while data is flowing, so the
next burst never waits a round trip for a poll to arrive. Every POLL carries
the offset received so far; after a lost response the next one says REWIND
and the server sends everything unacknowledged again; duplicates are cut by
offset; a gap that persists (the server says it holds bytes that never came, and
nothing arrives) asks for a REWIND within ``GAP_SECONDS``. Whether the path
streams responses promptly is probed at the start and every ``REPROBE_SECONDS``:
when it does, polls ask for streamed responses. The probe's verdict does not rest
on timing alone: the client acknowledges the probe's first envelope, and the
server's second says whether that came in; an unclear result is probed again.

Every request is sealed whole and numbered (``envelope.py``, ``freshness.py``): a
retry is a new request with a new number. A body the path refuses (HTTP 413, or
resets while a large body goes up) halves the body size, down to ``MIN_BODY``. An
answer that is not flyway's (a server that forgot the session answers as its
fallback does) makes the client ask, with a fresh PING naming the session,
whether the session still lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
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
    ENVELOPE_OVERHEAD,
    EnvelopeKeys,
    Kind,
    PingInfo,
    Request,
    RequestFlags,
    Response,
    ResponseFlags,
    Status,
    new_session_id,
)
from flyway_http_post.limits import MIN_BODY, PROBE_SECONDS, PROBE_WAIT, Limits
from flyway_http_post.offsets import Outbox, Reassembly

__all__ = ["HttpPostCarrier", "http_client", "open_carrier"]

log = logging.getLogger(__name__)

MAX_INFLIGHT = 4  # concurrent SEND requests
ACK_EVERY = 1 << 20  # downlink bytes between acknowledgements while an answer streams
EARLY_LIMIT = 16 << 20  # how far past a gap downlink envelopes are kept...
EARLY_HELD = 16 << 20  # ...and how many early bytes are kept in all
UP_LIMIT = 8 << 20  # unacknowledged uplink bytes before send() waits
REPROBE_SECONDS = 300.0
ACTIVE_SECONDS = 2.0  # a second poll is kept outstanding this long after data arrived
RETRY_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
GAP_SECONDS = 2.0  # a downlink gap with nothing arriving this long asks for a rewind
LARGE_BODY = 64 << 10  # a body at least this large that resets...
RESETS_TO_SHRINK = 3  # ...this many times in a row halves the body size
PROBE_ATTEMPTS = 5  # probes in a row that may come back unclear before giving up till later
PROBE_LAG = 0.5  # seconds our own loop may stall during a probe and still have it judged
CHECK_SECONDS = 1.0  # at most one "is my session alive?" PING this often

Post = Callable[[bytes, float], "contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]"]


def http_client(
    server: ServerURL,
    settings: Settings,
    *,
    proxy: str | None,
    connections: int = MAX_INFLIGHT + 6,
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
    if len(body) > limits.max_body:
        raise DialError(f"--http-max-body {limits.max_body} cannot carry a hello")
    try:
        async with post(body, 15.0) as response:
            data = await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DialError(f"cannot reach {server}: {describe_error(exc).lower()}") from None
    if status != 200:
        raise TunnelRefused(server, f"HTTP {status}")
    try:
        envelopes = keys.reader(0).feed(data)
    except ValueError:
        raise TunnelRefused(server, "the answer is not flyway's") from None
    if not envelopes or envelopes[0][0].status is not Status.OK:
        raise TunnelRefused(server, "the answer is not flyway's")
    carrier = HttpPostCarrier(post, keys, limits, session_id, server)
    carrier.start()
    return carrier


class Outcome(enum.Enum):
    """How one request went."""

    DONE = "done"  # answered by flyway, every envelope applied
    FAILED = "failed"  # timed out, or the answer was cut short
    RESET = "reset"  # the connection broke (reset, closed) before an answer came
    REFUSED = "refused"  # an answer, but not flyway's (the fallback, or a proxy's error)
    TOO_LARGE = "too large"  # HTTP 413: something on the path refuses bodies this large
    RETRY = "retry"  # the server did not take a SEND's bytes yet


class _LagMeter:
    """How long the event loop stalled at worst while it ran (for the probe's verdict)."""

    TICK = 0.05

    def __init__(self) -> None:
        self._worst = 0.0
        self._tick = time.monotonic()

    async def run(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.TICK)
            self._worst = max(self._worst, time.monotonic() - self._tick - self.TICK)

    @property
    def worst(self) -> float:
        """The longest stall so far, counting one still going on (its tick not yet run)."""
        return max(self._worst, time.monotonic() - self._tick - self.TICK)


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
        self._numbers = itertools.count(1)  # the OPEN was 0
        self.body_limit = limits.max_body  # the largest body sent; halves when refused
        self._shrunk_logged = False
        # uplink: kept until acknowledged; _up_next is the next offset not yet in a request
        self._up = Outbox(UP_LIMIT)
        self._up_next = 0
        self._inflight = 0
        # downlink
        self._down = Reassembly(EARLY_LIMIT, EARLY_HELD)  # envelopes in any order, in order out
        self._down_acked = 0  # what the server has been told arrived
        self._down_end = 0  # the most the server said it holds
        self._acking = False
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._rewind = False
        self._last_data = 0.0
        self._last_progress = time.monotonic()  # when _down.next last moved
        self._last_down_bytes = time.monotonic()  # when any poll's answer last brought bytes
        self._last_rewind = 0.0
        self._polls = 0
        self._poll_failures = 0
        self.streaming = False
        self.probes_decided = 0  # probes that gave a clear verdict
        self._probing = False
        self._last_probe = 0.0
        self._checking = False
        self._last_check = 0.0
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

    def _request(
        self, kind: Kind, flags: RequestFlags = RequestFlags.NONE, **fields: int
    ) -> Request:
        """A new request of this session: the next number, and what arrived so far."""
        fields.setdefault("down_ack", self._down.next)
        return Request(kind, self._id, flags=flags, number=next(self._numbers), **fields)

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
                    body = self._keys.seal_request(self._request(Kind.CLOSE))
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

    # --- body size ------------------------------------------------------------------------

    @property
    def _payload_limit(self) -> int:
        return self.body_limit - ENVELOPE_OVERHEAD

    def _shrink(self, body: int, why: str) -> None:
        """The path refused a body of ``body`` bytes: send at most half of that from now on."""
        self._shrink_to(max(MIN_BODY, body // 2), f"{why} to a body of {body} bytes")

    def _shrink_to(self, limit: int, why: str) -> None:
        if limit >= self.body_limit:
            return
        old, self.body_limit = self.body_limit, limit
        level = logging.DEBUG if self._shrunk_logged else logging.WARNING
        self._shrunk_logged = True
        log.log(
            level,
            "http carrier to %s: %s; bodies are now at most %d bytes (were %d; a smaller "
            "--http-max-body saves the retries)",
            self._server,
            why,
            limit,
            old,
        )

    # --- uplink -------------------------------------------------------------------------

    def _pump_up(self) -> None:
        """Start SEND requests for unsent slices, up to MAX_INFLIGHT (each retries its own)."""
        while self._inflight < MAX_INFLIGHT and not self._closed:
            if self._up_next < self._up.end:
                start = self._up_next
                end = min(start + self._payload_limit, self._up.end)
                self._up_next = end
            else:
                return
            self._inflight += 1
            self._spawn(self._send_slice(start, end))

    async def _send_slice(self, start: int, end: int) -> None:
        """Send the bytes between two offsets, in bodies the path takes, until all arrived."""
        try:
            failures = resets = 0
            while not self._closed:
                start = max(start, self._up.base)  # acknowledged meanwhile (a response crossed)
                if start >= end:
                    return
                stop = min(end, start + self._payload_limit)
                payload = self._up.slice(start, stop)
                request = self._request(Kind.SEND, up_offset=start)
                body = self._keys.seal_request(request, payload, padding=random.randrange(64))
                outcome = await self._exchange(request, body, 30.0)
                if outcome is Outcome.DONE:
                    start, failures, resets = stop, 0, 0
                    continue
                if outcome is Outcome.TOO_LARGE:
                    self._shrink(len(body), "the path answered HTTP 413")
                elif outcome is Outcome.RESET and len(body) >= LARGE_BODY:
                    resets += 1
                    if resets >= RESETS_TO_SHRINK:
                        self._shrink(len(body), f"the connection was reset {resets} times")
                        resets = 0
                log.debug("SEND %d-%d: %s (attempt %d)", start, stop, outcome.value, failures + 1)
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
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
        if not self._probing:
            self._probing = True
            self._spawn(self._probe())

    async def _probe(self) -> None:
        """Probe until a verdict is clear (at most PROBE_ATTEMPTS times), then apply it."""
        try:
            for _ in range(PROBE_ATTEMPTS):
                verdict = await self._probe_once()
                if verdict is not None:
                    if verdict != self.streaming:
                        log.info(
                            "http carrier: streamed responses %s",
                            "pass" if verdict else "are buffered",
                        )
                    self.streaming = verdict
                    self.probes_decided += 1
                    return
                await asyncio.sleep(1.0)
            log.debug("http carrier: the streaming probe stayed unclear; trying again later")
        finally:
            self._probing = False

    async def _probe_once(self) -> bool | None:
        """One probe: True if the path streams, False if it buffers, None if unclear.

        The server holds the probe's second envelope until we acknowledge the first
        (PROBE_WAIT at most) and says whether we did: acknowledged means streamed,
        whatever the timing. Not acknowledged means buffered only when our own loop
        kept up meanwhile and the first envelope did not come well before the second
        (then our acknowledgement was merely slow): otherwise nobody can tell.
        """
        arrivals: list[tuple[float, Response]] = []

        def arrived(response: Response) -> None:
            arrivals.append((time.monotonic(), response))
            if len(arrivals) == 1:
                self._spawn(self._acknowledge_probe())

        lag = _LagMeter()
        meter = asyncio.get_running_loop().create_task(lag.run())
        try:
            request = self._request(Kind.POLL, RequestFlags.PROBE)
            body = self._keys.seal_request(request, padding=random.randrange(64))
            outcome = await self._exchange(request, body, PROBE_WAIT + 15.0, arrived)
        finally:
            meter.cancel()
        if outcome is not Outcome.DONE or len(arrivals) < 2:
            return None
        (first, _), (last, second) = arrivals[0], arrivals[-1]
        if ResponseFlags.ACKED in second.flags:
            return True
        if lag.worst > PROBE_LAG or last - first >= PROBE_SECONDS / 2:
            return None
        return False

    async def _acknowledge_probe(self) -> None:
        """Tell the server the probe's first envelope is here (an empty SEND flagged PROBE)."""
        request = self._request(Kind.SEND, RequestFlags.PROBE, up_offset=self._up.base)
        body = self._keys.seal_request(request, padding=random.randrange(64))
        await self._exchange(request, body, PROBE_WAIT + 15.0)

    async def _poll_once(self) -> None:
        try:
            flags = RequestFlags.NONE
            if self.streaming:
                flags |= RequestFlags.STREAM
            if self._rewind:
                flags |= RequestFlags.REWIND
                self._rewind = False
            request = self._request(Kind.POLL, flags)
            body = self._keys.seal_request(request, padding=random.randrange(64))
            timeout = self._limits.poll_timeout + 15.0
            if await self._exchange(request, body, timeout) is not Outcome.DONE:
                self._rewind = True
                self._poll_failures += 1
                await asyncio.sleep(min(0.05 * 2**self._poll_failures, 2.0))
                return
            self._poll_failures = 0
        finally:
            self._polls -= 1
            self._poll_wanted.set()

    def _deliver(self, offset: int, payload: bytes) -> None:
        """Take downlink bytes at ``offset``: in order, early ones kept, duplicates cut.

        Two answers in flight may arrive in either order, so an early envelope
        waits for the gap before it; a gap whose answer failed is filled by the
        rewind that failure asks for, one that persists by the watchdog's.
        """
        ready = self._down.add(offset, payload)
        if ready is None:  # too far ahead, or too much held: it comes again after a rewind
            self._rewind = True
            return
        if not ready:
            return
        for chunk in ready:
            self._inbox.put_nowait(chunk)
        self._last_data = self._last_progress = time.monotonic()
        self._poll_wanted.set()
        if self._down.next - self._down_acked >= ACK_EVERY and not self._acking:
            self._acking = True  # a streamed answer can run long: free the server's buffer
            self._spawn(self._acknowledge())

    async def _acknowledge(self) -> None:
        """Tell the server what arrived, with an empty SEND (it carries down_ack)."""
        try:
            while self._down.next - self._down_acked >= ACK_EVERY and not self._closed:
                acked = self._down.next
                request = self._request(Kind.SEND, up_offset=self._up.base, down_ack=acked)
                body = self._keys.seal_request(request, padding=random.randrange(64))
                if await self._exchange(request, body, 30.0) is not Outcome.DONE:
                    return
                self._down_acked = max(self._down_acked, acked)
        finally:
            self._acking = False

    # --- is the session alive? ----------------------------------------------------------

    def _check_session(self) -> None:
        """After an answer that was not flyway's, ask (once a second at most) if we live."""
        now = time.monotonic()
        if self._checking or self._closed or now - self._last_check < CHECK_SECONDS:
            return
        self._checking, self._last_check = True, now
        self._spawn(self._ask_session())

    async def _ask_session(self) -> None:
        """A fresh PING naming the session: GONE ends the carrier; OK brings the limits."""
        try:
            request = Request(
                Kind.PING, self._id, flags=RequestFlags.SESSION, time_ms=round(time.time() * 1000)
            )
            answers: list[tuple[Response, bytes]] = []
            body = self._keys.seal_request(request, padding=random.randrange(64))
            outcome = await self._post_envelopes(body, 0, 15.0, lambda r, p: answers.append((r, p)))
            if outcome is not Outcome.DONE or not answers:
                return
            (answer, payload), *_ = answers
            if answer.status is Status.GONE:
                self._fail("the server ended the session (did it restart?)")
                return
            info = PingInfo.unpack(payload)
            if info is not None:  # a body the server itself would not read: use its limit
                self._shrink_to(max(MIN_BODY, info.max_body), "the server reads less")
        finally:
            self._checking = False

    # --- one request --------------------------------------------------------------------

    async def _exchange(
        self,
        request: Request,
        body: bytes,
        limit: float,
        arrived: Callable[[Response], None] = lambda _: None,
    ) -> Outcome:
        """POST one request of the session and apply every envelope of the answer."""
        downlink = request.kind is Kind.POLL
        retry = False

        def apply(envelope: Response, payload: bytes) -> None:
            nonlocal retry
            arrived(envelope)
            if envelope.status is Status.GONE:
                self._fail("the server ended the session (did it restart?)")
                return
            self._last_ok = time.monotonic()
            self._up.acknowledge(envelope.up_ack)
            self._down_end = max(self._down_end, envelope.down_end)
            retry = retry or envelope.status is Status.RETRY
            if payload or envelope.status is Status.OK:
                self._deliver(envelope.down_offset, payload)

        outcome = await self._post_envelopes(body, request.number, limit, apply, downlink)
        if outcome is Outcome.REFUSED:
            self._check_session()
        if outcome is Outcome.DONE and retry:
            return Outcome.RETRY
        return outcome

    async def _post_envelopes(
        self,
        body: bytes,
        number: int,
        limit: float,
        apply: Callable[[Response, bytes], None],
        downlink: bool = False,
    ) -> Outcome:
        """POST ``body``; hand every envelope of the answer to ``apply`` as it completes."""
        reader = self._keys.reader(number)
        try:
            async with self._post(body, limit) as response:
                if response.status == 413:
                    return Outcome.TOO_LARGE
                if response.status != 200:
                    log.debug("request %d: HTTP %d", number, response.status)
                    return Outcome.REFUSED
                async for chunk in response.content.iter_any():
                    if downlink:
                        self._last_down_bytes = time.monotonic()
                    for envelope, payload in reader.feed(chunk):
                        apply(envelope, payload)
                        if self._closed:
                            return Outcome.DONE
        except ValueError as exc:  # an answer, but not sealed by flyway for this request
            log.debug("request %d: %s", number, exc)
            return Outcome.REFUSED
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                return Outcome.FAILED
            log.debug("request %d failed: %s", number, describe_error(exc).lower())
            return Outcome.RESET
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("request %d failed: %s", number, describe_error(exc).lower())
            return Outcome.FAILED
        if reader.pending:
            return Outcome.FAILED  # cut short mid-envelope
        self._last_ok = time.monotonic()
        return Outcome.DONE

    async def _watchdog(self) -> None:
        """End the carrier when nothing has worked for a while; rewind a stuck downlink."""
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            silent = now - self._last_ok
            if silent > self._limits.dead_after:
                self._fail(f"no answer from {self._server} for {silent:.0f}s")
                return
            stuck = min(
                now - self._last_progress, now - self._last_down_bytes, now - self._last_rewind
            )
            if self._down_end > self._down.next and stuck > GAP_SECONDS:
                log.debug(
                    "downlink stuck at %d (the server holds up to %d): rewinding",
                    self._down.next,
                    self._down_end,
                )
                self._rewind, self._last_rewind = True, now
                self._start_poll()

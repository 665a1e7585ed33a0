"""Measurements ``flyway doctor`` makes through the user's proxy or CDN to a server.

Does a WebSocket upgrade pass (and data after it), do streamed responses arrive
as they are written, how large a POST body passes, how long an idle request
survives, and the round trip. PING envelopes (``Kind.PING``) measure without
touching a tunnel session: the server holds one as long as asked, then says
how many bytes arrived and what its own limits are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from flyway_http_post.client import http_client
from flyway_http_post.envelope import (
    EnvelopeKeys,
    Kind,
    PingInfo,
    Request,
    RequestFlags,
    Response,
    Status,
    new_session_id,
)
from flyway_http_post.limits import PROBE_SECONDS, PROBE_WAIT
from flyway_http_post.transport import HttpPostTransport

from flyway_core import CarrierError, DialError, ServerURL, Settings, TunnelRefused
from flyway_core.protocol import ClientConnection, derive_master_key

if TYPE_CHECKING:
    from flyway_core.interfaces import Transport

__all__ = [
    "BodyCheck",
    "Findings",
    "IdleCheck",
    "RoundTrip",
    "StreamingCheck",
    "WebSocketCheck",
    "measure",
]

RTT_SAMPLES = 20
BODY_SIZES = (64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20)
BODY_BUDGET = 40 << 20  # bytes the body probe may upload in all
BISECT_STEPS = 4  # extra sizes tried between the last that passed and the first that failed
IDLE_HOLDS = (2.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0)
WS_SECONDS = 10.0  # the WebSocket check: upgrade, then the first record


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundTrip:
    p50_ms: float | None
    p90_ms: float | None
    samples: int
    lost: int
    plain_get_ms: float | None  # GET of the server's base URL: the fallback answers it
    plain_get_status: int | None


@dataclass(frozen=True, slots=True)
class WebSocketCheck:
    passes: bool
    detail: str
    upgrade_ms: float | None


@dataclass(frozen=True, slots=True)
class StreamingCheck:
    prompt: bool | None  # None: could not be measured
    spread_ms: float | None  # how far apart two envelopes written PROBE_SECONDS apart arrived
    detail: str


@dataclass(frozen=True, slots=True)
class BodyCheck:
    largest_passing: int  # request body bytes
    first_failing: int | None
    limit: str  # "path" (something on the way refused), "server" (its own cap), "untested"
    failure: str  # how the first failing size failed
    server_max_body: int
    server_largest_request: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class IdleCheck:
    tried_s: tuple[float, ...]
    survived_s: tuple[float, ...]
    longest_s: float | None  # the longest hold that came back
    cut_after_s: float | None  # the soonest a longer hold failed, when one did
    cut_reason: str
    server_poll_timeout_s: float


@dataclass(frozen=True, slots=True)
class Findings:
    """Everything ``flyway doctor`` measured (``--json`` prints it, with stable keys)."""

    server: str
    http_post: bool  # the server answers PING envelopes
    round_trip: RoundTrip | None
    websocket: WebSocketCheck
    streaming: StreamingCheck | None
    post_body: BodyCheck | None
    idle: IdleCheck | None


# --- measuring --------------------------------------------------------------------------


class _NoAnswer(Exception):
    """A probe got no flyway answer; ``reached`` is False when nothing answered at all."""

    def __init__(self, reason: str, *, reached: bool, after: float) -> None:
        super().__init__(reason)
        self.reason, self.reached, self.after = reason, reached, after


class _Path:
    """Sends envelopes as the ``http`` transport would: its URL, headers, proxy and TLS."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        transport: HttpPostTransport,
        server: ServerURL,
        keys: EnvelopeKeys,
    ) -> None:
        self.http, self.transport, self.server, self.keys = http, transport, server, keys
        self.overhead = len(keys.seal_request(Request(Kind.PING, bytes(16))))  # envelope bytes

    async def exchange(
        self,
        request: Request,
        payload: bytes,
        limit: float,
        arrived: Callable[[float], object] = lambda _: None,
    ) -> list[tuple[Response, bytes]]:
        """POST one envelope; return the answer's envelopes or raise _NoAnswer."""
        body = self.keys.seal_request(request, payload)
        reader = self.keys.reader(request.number)
        envelopes: list[tuple[Response, bytes]] = []
        start = time.monotonic()
        try:
            async with self.http.post(
                self.transport.request_url(self.server),
                data=body,
                headers=self.transport.headers,
                proxy=self.transport.proxy,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as response:
                if response.status != 200:
                    raise _NoAnswer(f"HTTP {response.status}", reached=True, after=0)
                async for chunk in response.content.iter_any():
                    for envelope in reader.feed(chunk):
                        arrived(time.monotonic())
                        envelopes.append(envelope)
        except _NoAnswer as exc:
            exc.after = time.monotonic() - start
            raise
        except ValueError:
            reason = "HTTP 200, but not a flyway answer"
            raise _NoAnswer(reason, reached=True, after=time.monotonic() - start) from None
        except aiohttp.ClientConnectorError as exc:
            error = exc.os_error
            reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
            raise _NoAnswer(reason, reached=False, after=time.monotonic() - start) from None
        except TimeoutError:
            raise _NoAnswer("timed out", reached=True, after=time.monotonic() - start) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise _NoAnswer(reason, reached=True, after=time.monotonic() - start) from None
        if reader.pending or not envelopes:
            reason = (
                "the answer was cut short" if envelopes else "HTTP 200, but not a flyway answer"
            )
            raise _NoAnswer(reason, reached=True, after=time.monotonic() - start)
        return envelopes

    async def ping(self, *, hold: float = 0.0, size: int = 0, limit: float = 15.0) -> PingAnswer:
        """Send a PING whose body is ``size`` bytes, held ``hold`` seconds by the server."""
        payload = os.urandom(max(0, size - self.overhead))
        request = Request(  # a PING is fresh by its clock (the server refuses replays)
            Kind.PING, new_session_id(), up_offset=round(hold * 1000), time_ms=_now_ms()
        )
        start = time.monotonic()
        ((response, info), *_) = await self.exchange(request, payload, limit)
        if response.status is not Status.OK or response.up_ack != len(payload):
            raise _NoAnswer("the body arrived damaged", reached=True, after=0)
        return PingAnswer(
            time.monotonic() - start, response.down_offset / 1000, PingInfo.unpack(info)
        )


def _now_ms() -> int:
    return round(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class PingAnswer:
    seconds: float
    held: float
    info: PingInfo | None


async def measure(
    server: ServerURL,
    settings: Settings,
    transport: HttpPostTransport,
    websocket: Transport | None,
    *,
    max_idle: float = 60.0,
) -> Findings:
    """Run every check against ``server``; DialError or TunnelRefused when it cannot be asked.

    ``transport`` gives the URL path, headers and proxy; ``websocket`` is the
    ``ws`` transport to check (None when not installed).
    """
    master = derive_master_key(settings.password)
    client = http_client(server, settings, proxy=transport.proxy, connections=32, cookies=False)
    async with client as http:
        path = _Path(http, transport, server, EnvelopeKeys(master))
        contact, ws = await asyncio.gather(
            _first_contact(path), _check_websocket(websocket, server, master, settings)
        )
        if isinstance(contact, _NoAnswer):
            via = f" via {transport.proxy}" if transport.proxy else ""
            if not contact.reached:
                raise DialError(f"cannot reach {server}{via}: {contact.reason}")
            if not ws.passes:
                raise TunnelRefused(str(server), contact.reason)
            return Findings(str(server), False, None, ws, None, None, None)
        async with asyncio.TaskGroup() as tasks:
            idle = tasks.create_task(_check_idle(path, max_idle, contact))
            streaming = tasks.create_task(_check_streaming(path, master))
            round_trip = tasks.create_task(_check_round_trip(path))
            await round_trip  # then the bodies, which would skew the round trip
            body = tasks.create_task(_check_bodies(path, contact))
    return Findings(
        str(server),
        True,
        round_trip.result(),
        ws,
        streaming.result(),
        body.result(),
        idle.result(),
    )


async def _first_contact(path: _Path) -> PingInfo | _NoAnswer:
    try:
        answer = await path.ping()
    except _NoAnswer as exc:
        return exc
    if answer.info is None:
        return _NoAnswer("the PING answer is not flyway's", reached=True, after=0)
    return answer.info


async def _check_websocket(
    ws: Transport | None, server: ServerURL, master: bytes, settings: Settings
) -> WebSocketCheck:
    if ws is None:
        return WebSocketCheck(False, "not installed here (pip install flyway-websocket)", None)
    hello = ClientConnection(master, now=time.time()).hello()
    start = time.monotonic()
    try:
        async with asyncio.timeout(WS_SECONDS):
            carrier = await ws.dial(server, hello, settings)
    except TimeoutError:
        return WebSocketCheck(False, f"no answer in {WS_SECONDS:g} s", None)
    except TunnelRefused as exc:
        return WebSocketCheck(False, "refused: " + str(exc).rpartition("; ")[2], None)
    except (CarrierError, OSError) as exc:
        return WebSocketCheck(False, str(exc), None)
    upgraded = round((time.monotonic() - start) * 1000, 2)
    first = b""
    try:
        async with asyncio.timeout(WS_SECONDS):
            first = await carrier.receive()
    except (TimeoutError, CarrierError, OSError):
        pass
    finally:
        with contextlib.suppress(TimeoutError, CarrierError, OSError):
            async with asyncio.timeout(2.0):
                await carrier.close()
    if not first:
        return WebSocketCheck(False, "upgraded, but no data came through after", upgraded)
    return WebSocketCheck(True, f"upgraded in {upgraded:.0f} ms, data flows", upgraded)


async def _check_round_trip(path: _Path) -> RoundTrip:
    samples: list[float] = []
    lost = 0
    for _ in range(RTT_SAMPLES):
        try:
            samples.append((await path.ping(limit=10.0)).seconds * 1000)
        except _NoAnswer:
            lost += 1
            if lost >= 3 and not samples:
                break  # the path drops them all: do not wait 20 timeouts
    get_ms = status = None
    start = time.monotonic()
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with path.http.get(
            path.server.url(),
            headers=path.transport.headers,
            proxy=path.transport.proxy,
            timeout=aiohttp.ClientTimeout(total=10.0),
        ) as response:
            await response.read()
            get_ms, status = (time.monotonic() - start) * 1000, response.status
    p50 = round(statistics.median(samples), 2) if samples else None
    p90 = round(statistics.quantiles(samples, n=10)[-1], 2) if len(samples) > 1 else p50
    get_ms = None if get_ms is None else round(get_ms, 2)
    return RoundTrip(p50, p90, len(samples), lost, get_ms, status)


async def _check_streaming(path: _Path, master: bytes) -> StreamingCheck:
    """Open a session, ask for a PROBE (two envelopes PROBE_SECONDS apart), close it."""
    session = new_session_id()
    hello = ClientConnection(master, now=time.time()).hello()
    try:
        ((opened, _), *_) = await path.exchange(Request(Kind.OPEN, session), hello, 15.0)
    except _NoAnswer as exc:
        return StreamingCheck(None, None, f"no session opened: {exc.reason}")
    if opened.status is not Status.OK:
        return StreamingCheck(None, None, "no session opened")
    arrivals: list[float] = []
    acks: list[asyncio.Task[object]] = []

    def arrived(when: float) -> None:
        arrivals.append(when)
        if len(arrivals) == 1:  # as the client does: the server sends the second sooner
            ack = Request(Kind.SEND, session, flags=RequestFlags.PROBE, number=2)
            acks.append(asyncio.create_task(path.exchange(ack, b"", 10.0)))

    try:
        probe = Request(Kind.POLL, session, flags=RequestFlags.PROBE, number=1)
        await path.exchange(probe, b"", PROBE_WAIT + 15.0, arrived)
    except _NoAnswer as exc:
        return StreamingCheck(None, None, f"the probe failed: {exc.reason}")
    finally:
        for ack in acks:
            with contextlib.suppress(_NoAnswer):
                await ack
        with contextlib.suppress(_NoAnswer):
            await path.exchange(Request(Kind.CLOSE, session, number=3), b"", 5.0)
    spread = arrivals[-1] - arrivals[0]
    prompt = len(arrivals) > 1 and spread >= PROBE_SECONDS / 2  # as the client judges it
    if prompt:
        detail = f"prompt: written {PROBE_SECONDS:g} s apart, arrived {spread:.2f} s apart"
    else:
        apart = "together" if spread < 0.01 else f"{spread:.2f} s apart"
        detail = f"buffered: written {PROBE_SECONDS:g} s apart, arrived {apart}"
    return StreamingCheck(prompt, round(spread * 1000, 1), detail)


async def _check_bodies(path: _Path, info: PingInfo) -> BodyCheck:
    """Grow the body until something refuses it (or the server's own cap), then narrow down."""
    largest = info.largest_request
    sizes = [size for size in BODY_SIZES if size < largest]
    if largest <= BODY_SIZES[-1]:
        sizes.append(largest)
    passed, failed, failure, sent = path.overhead, None, "", 0

    async def attempt(size: int) -> str | None:
        nonlocal sent
        sent += size
        try:
            await path.ping(size=size, limit=10.0 + size / (512 << 10))
        except _NoAnswer as exc:
            return exc.reason
        return None

    for size in sizes:
        if sent + size > BODY_BUDGET:
            break
        why = await attempt(size)
        if why is not None:
            failed, failure = size, why
            break
        passed = size
    for _ in range(BISECT_STEPS):
        if failed is None or failed - passed <= max(16 << 10, passed // 16):
            break
        middle = (passed + failed) // 2 >> 10 << 10
        if sent + middle > BODY_BUDGET:
            break
        why = await attempt(middle)
        if why is None:
            passed = middle
        else:
            failed, failure = middle, why
    limit = "path" if failed is not None else "server" if passed >= largest else "untested"
    return BodyCheck(passed, failed, limit, failure, info.max_body, largest, sent)


async def _check_idle(path: _Path, max_idle: float, info: PingInfo) -> IdleCheck:
    """Hold requests idle for several durations at once; see which come back."""
    holds = [hold for hold in IDLE_HOLDS if hold < max_idle] + [max_idle]

    async def hold(seconds: float) -> tuple[float, float | None, str]:
        try:
            answer = await path.ping(hold=seconds, limit=seconds + 15.0)
        except _NoAnswer as exc:
            return seconds, exc.after, exc.reason
        if answer.held + 1e-3 < seconds:
            return seconds, answer.seconds, "the server held it shorter"
        return seconds, None, ""

    results = await asyncio.gather(*(hold(seconds) for seconds in holds))
    survived = tuple(seconds for seconds, cut, _ in results if cut is None)
    cuts = sorted((cut, reason) for _, cut, reason in results if cut is not None)
    return IdleCheck(
        tuple(holds),
        survived,
        max(survived) if survived else None,
        round(cuts[0][0], 2) if cuts else None,
        cuts[0][1] if cuts else "",
        info.poll_timeout,
    )

"""The schedule: every workload on direct and then on each column, interleaved, into one dict.

Memory runs first on fresh processes; latency comes in rounds interleaved across the
columns; throughput runs ``plan.repeats`` times, interleaved, and the median is kept.
Errors and timeouts become results (``{"error": ...}``), never a crash or a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from .console import progress
from .processes import Tunnel
from .procfs import rss_kib
from .target_servers import TargetServers
from .udp import UdpEcho, udp_round_trips
from .wire import (
    MB,
    SEED_DOWN,
    SEED_DUPLEX_DOWN,
    SEED_DUPLEX_UP,
    SEED_UP,
    Endpoint,
    KiB,
    ViaSocks5,
    pattern_hash,
)
from .workloads import connects, download, duplex, idle_memory, parallel, round_trips, stats, upload

__all__ = ["FULL", "QUICK", "Plan", "measure_all", "run"]


@dataclass
class Plan:
    max_mb: int
    min_mb: int
    seconds: float
    rtt: int
    rtt_warmup: int
    connects: int
    connect_warmup: int
    parallel: int
    parallel_bytes: int
    idle: int
    repeats: int  # throughput runs per endpoint; the median one is reported
    rounds: int  # latency samples come in this many rounds, interleaved across columns


FULL = Plan(200, 16, 2.5, 2000, 200, 300, 30, 200, 64 * KiB, 1000, 3, 4)
QUICK = Plan(32, 4, 0.8, 500, 100, 100, 10, 200, 64 * KiB, 1000, 1, 2)


async def _guarded(
    label: str,
    name: str,
    tunnel: Tunnel | None,
    coro: Awaitable[dict[str, Any]],
    say: bool = True,
) -> dict[str, Any]:
    """Run one measurement; errors and timeouts become a result, never a crash."""
    if tunnel is not None and (dead := tunnel.alive()):
        with contextlib.suppress(Exception):
            coro.close()  # type: ignore[attr-defined]
        return {"error": f"not run: {dead}"}
    cpu_before = tunnel.cpu() if tunnel else {}
    wire_before = tunnel.wire() if tunnel else {}
    wall = time.perf_counter()
    try:
        result = await coro
    except TimeoutError:
        result = {"error": "timed out"}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if tunnel is not None:
        wall = time.perf_counter() - wall
        result["cpu_seconds"] = {
            k: round(v - cpu_before.get(k, 0.0), 3) for k, v in tunnel.cpu().items()
        }
        result["wall_seconds"] = round(wall, 3)
        if wire := tunnel.wire():
            result["wire"] = {k: v - wire_before.get(k, 0) for k, v in wire.items()}
        if dead := tunnel.alive():
            result.setdefault("error", f"process died: {dead}")
    if say:
        progress.print(f"  [dim]{label:>12}[/] {name:<9} {_brief(name, result)}")
    return result


def _brief(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"[red]{r['error']}[/]"
    mark = "" if r.get("verified", True) else f" [red]NOT VERIFIED {r.get('detail', '')}[/]"
    if name in ("upload", "download"):
        return f"{r['bytes'] / MB:.0f} MB at {r['mbps']:.1f} MB/s{mark}"
    if name == "duplex":
        rates = f"up {r['up_mbps']:.1f} / down {r['down_mbps']:.1f} MB/s"
        return f"{r['bytes'] / MB:.0f} MB each way, {rates}{mark}"
    if name in ("rtt", "connect", "udp_rtt"):
        rounds = "/".join(f"{x:.0f}" for x in r.get("round_p50_us", []))
        rounds = f" (p50 of each round: {rounds})" if rounds else ""
        return f"p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs{rounds}"
    if name == "parallel":
        return (
            f"{r['verified_count']}/{r['connections']} verified in {r['seconds']:.2f} s, "
            f"slowest connect {r['connect_ms_max']:.0f} ms, "
            f"{r['connects_over_900ms']} connects over 900 ms {r['failures'] or ''}"
        )
    if name == "memory":
        per = f"server {r['server_kib_per_conn']:.1f}, client {r['client_kib_per_conn']:.1f}"
        opened = f"opened in {r['open_seconds']:.2f} s (listen overflows {r['listen_overflows']})"
        return f"{per} KiB/conn, {opened}{mark}"
    return ""


async def _size_for(
    label: str, ports: Mapping[str, Endpoint], targets: TargetServers, plan: Plan
) -> tuple[int, float]:
    """A warm-up upload; pick N so one transfer takes about ``plan.seconds``."""
    probe = plan.min_mb * MB
    async with asyncio.timeout(120):
        result = await upload(ports, targets, probe)
    if not result["verified"]:
        raise AssertionError(f"warm-up upload not verified: {result['detail']}")
    rate = result["mbps"]
    mb = int(max(plan.min_mb, min(plan.max_mb, rate * plan.seconds)))
    return mb * MB, rate


async def _udp_latency(plan: Plan, live: list[Tunnel], results: dict[str, Any]) -> None:
    """64-byte UDP round trips: direct, and through each column reached by SOCKS5."""
    columns = [t for t in live if isinstance(t.forwards.get("echo"), ViaSocks5)]
    if not columns:
        return
    progress.rule("udp")
    echo = UdpEcho()
    port = await echo.start()
    try:
        for label, endpoint, t in [
            ("direct", 0, None),
            *((t.label, t.forwards["echo"], t) for t in columns),
        ]:
            result = await _guarded(
                label,
                "udp_rtt",
                t,
                _with_timeout(60, udp_round_trips(endpoint, port, plan.rtt, plan.rtt_warmup)),
                say=False,
            )
            results[label]["udp_rtt"] = result
            progress.print(f"  [dim]{label:>12}[/] {'udp_rtt':<9} {_brief('udp_rtt', result)}")
    finally:
        echo.close()


async def measure_all(
    plan: Plan, targets: TargetServers, tunnels: list[Tunnel], results: dict[str, Any]
) -> None:
    """Each metric on direct, then on every tunnel, in turn; results fill in as they come."""
    results["direct"] = {}
    live = [t for t in tunnels if not t.skipped]
    for tunnel in live:
        results[tunnel.label] = {}

    def on(metric: str) -> list[tuple[str, Mapping[str, Endpoint], Tunnel | None]]:
        """direct, then every live column that runs ``metric``."""
        return [
            ("direct", targets.ports, None),
            *((t.label, t.forwards, t) for t in live if t.does(metric)),
        ]

    # Memory first, on fresh flyway processes (before throughput runs grow their heaps).
    progress.rule("idle connections")
    for tunnel in live:
        if not tunnel.does("memory"):
            continue
        assert tunnel.server is not None
        assert tunnel.client is not None
        results[tunnel.label]["memory"] = await _guarded(
            tunnel.label,
            "memory",
            tunnel,
            idle_memory(tunnel.forwards, targets, tunnel.server.pid, tunnel.client.pid, plan.idle),
        )

    progress.rule("latency")
    for name, measure, count, warmup, seconds in (
        ("rtt", round_trips, plan.rtt, plan.rtt_warmup, 60),
        ("connect", connects, plan.connects, plan.connect_warmup, 90),
    ):
        # In rounds, interleaved across the columns: on a small VM latency can switch
        # between modes for seconds at a time (which core wakes whom), and every
        # column should see the same mix.
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in on(name)}
        for _ in range(plan.rounds):
            for label, ports, t in on(name):
                if rounds[label] and "error" in rounds[label][-1]:
                    continue
                share = t.latency_share if t is not None else 1.0
                samples, warm = max(20, int(count * share)), max(1, int(warmup * share))
                rounds[label].append(
                    await _guarded(
                        label,
                        name,
                        t,
                        _with_timeout(
                            seconds / plan.rounds,
                            measure(ports, samples // plan.rounds, max(1, warm // plan.rounds)),
                        ),
                        say=False,
                    )
                )
        for label, done in rounds.items():
            results[label][name] = _pooled(done)
            progress.print(f"  [dim]{label:>12}[/] {name:<9} {_brief(name, results[label][name])}")
    await _udp_latency(plan, live, results)
    progress.rule("parallel")
    for label, ports, t in on("parallel"):
        results[label]["parallel"] = await _guarded(
            label,
            "parallel",
            t,
            _with_timeout(60, parallel(ports, plan.parallel, plan.parallel_bytes)),
        )

    progress.rule("throughput")
    sizes: dict[str, tuple[int, float]] = {}
    endpoints = on("upload")  # upload, download and duplex run on the same columns
    for label, ports, t in endpoints:
        if t is not None and t.alive():
            continue
        try:
            sizes[label] = await _size_for(label, ports, targets, plan)
        except Exception as exc:
            for name in ("upload", "download", "duplex"):
                results[label][name] = {
                    "error": f"warm-up failed: {type(exc).__name__}: {exc}"[:300]
                }
            progress.print(f"  [dim]{label:>12}[/] [red]warm-up failed: {exc!r}[/]")
            continue
        nbytes = sizes[label][0]
        for seed in (SEED_UP, SEED_DOWN, SEED_DUPLEX_UP, SEED_DUPLEX_DOWN):
            pattern_hash(nbytes, seed)  # outside the timed part
    for name, run in (("upload", upload), ("download", download), ("duplex", duplex)):
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sizes}
        for _ in range(plan.repeats):  # interleaved, so drift hits every column alike
            for label, ports, t in endpoints:
                if label not in sizes:
                    results[label].setdefault(name, {"error": "not run"})
                    continue
                nbytes, rate = sizes[label]
                budget = max(30.0, nbytes / MB / max(rate, 0.1) * 6 + 10)
                runs[label].append(
                    await _guarded(
                        label, name, t, _with_timeout(budget, run(ports, targets, nbytes))
                    )
                )
        for label, done in runs.items():
            results[label][name] = _median_run(done)
    for tunnel in live:  # how far the heaps grew over the whole run
        assert tunnel.server is not None
        assert tunnel.client is not None
        if not tunnel.alive():
            results[tunnel.label]["rss_at_end"] = {
                "server_kib": rss_kib(tunnel.server.pid),
                "client_kib": rss_kib(tunnel.client.pid),
            }


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency result from its rounds: stats over all samples (a failed round wins)."""
    for r in rounds:
        if "error" in r:
            return r
    samples = [x for r in rounds for x in r["raw_us"]]
    return {
        **stats(samples),
        "rounds": len(rounds),
        "round_p50_us": [r["p50_us"] for r in rounds],
        "cpu_seconds": {
            k: round(sum(r.get("cpu_seconds", {}).get(k, 0.0) for r in rounds), 3)
            for k in rounds[0].get("cpu_seconds", {})
        },
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by rate (a failed or unverified run wins, so it is never hidden)."""
    bad = [r for r in runs if "error" in r or not r.get("verified", True)]
    if bad:
        chosen = dict(bad[0])
    else:
        ordered = sorted(
            runs, key=lambda r: r.get("mbps", r.get("up_mbps", 0) + r.get("down_mbps", 0))
        )
        chosen = dict(ordered[len(ordered) // 2])
    chosen["runs"] = [
        {k: v for k, v in r.items() if k.endswith(("mbps", "verified")) or k == "error"}
        for r in runs
    ]
    return chosen


async def _with_timeout(seconds: float, coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        return await coro


async def run(
    args: argparse.Namespace, plan: Plan, tunnels: list[Tunnel], results: dict[str, Any]
) -> tuple[TargetServers, str]:
    """Start targets and flyway, measure into ``results``, stop everything (always)."""
    targets = TargetServers()
    await targets.start()
    loop_name = type(asyncio.get_running_loop()).__module__
    try:
        progress.rule("starting flyway")
        for t in tunnels:
            if t.skipped:
                progress.print(f"  [yellow]{t.label}: skipped: {t.skipped}[/]")
            elif await t.start(targets.ports):
                assert t.server is not None
                assert t.client is not None
                progress.print(f"  {t.label}: server pid {t.server.pid}, client pid {t.client.pid}")
            else:
                progress.print(f"  [yellow]{t.label}: skipped: {t.skipped}[/]")
        async with asyncio.timeout(args.deadline):
            await measure_all(plan, targets, tunnels, results)
    except TimeoutError:
        progress.print(f"[red]gave up after --deadline {args.deadline:g} s; reporting what ran[/]")
        results.setdefault("_driver", {})["deadline"] = {"error": "deadline reached"}
    finally:
        for t in tunnels:
            await t.stop()
        args.hops.close()  # after flyway, so no client sees its proxy vanish first
        await targets.close()
    return targets, loop_name

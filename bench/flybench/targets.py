"""The project's targets, each PASS/FAIL (or n/a) from this run's own numbers, and ref. lines.

bench/README.md's "Targets" section lists them; ``reference_lines`` puts the bare relay
columns and direct beside them, with no verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .lossy import overhead, retransmitted
from .processes import Tunnel
from .relays import BARE_WS, BareRelay

__all__ = ["evaluate_targets", "reference_lines"]

TARGET_WS, TARGET_HTTP, TARGET_NGINX = "ws", "http", "http-nginx"
TARGET_KCP, TARGET_KCP_LOSSY = "kcp", "kcp-lossy"  # loopback, and 5% loss / 30 ms each way
TARGET_KCP_NOFEC = "kcp-lossy-nofec"  # the same link, the client asking for no FEC
KCP_LOSSY_MBPS = 4.0
KCP_LOSSY_RTT_MS = 70
KCP_RETRANSMIT_MAX = 0.30
TARGET_SOCKS5 = "socks5"  # -D over ws, against the ws column (-L) of the same run
SOCKS5_CONNECT_EXTRA_US = 500
SOCKS5_THROUGHPUT_MIN = 0.8  # "equal within noise": run-to-run spread of ws alone is ~±15 %
SOCKS5_UDP_EXTRA_US = 500  # a UDP round trip through -D: at most its TCP round trip + this


def evaluate_targets(
    results: dict[str, dict[str, Any]], live: list[Tunnel]
) -> list[dict[str, Any]]:
    """The project's targets, each PASS/FAIL (or n/a) from this run's own numbers."""
    direct = results.get("direct", {})
    checks: list[dict[str, Any]] = []

    def add(target: str, passed: bool | None, measured: str) -> None:
        checks.append({"target": target, "pass": passed, "measured": measured})

    def usable(r: dict[str, Any] | None) -> str:
        """'' when ``r`` holds a verified measurement, else why not."""
        if not r:
            return "not measured"
        if "error" in r:
            return f"error: {r['error']}"
        if not r.get("verified", True):
            return f"not verified: {r.get('detail', '')}"
        return ""

    def rate_ratio(label: str, metric: str, fieldname: str) -> tuple[float | None, str]:
        mine, base = results.get(label, {}).get(metric), direct.get(metric)
        why = usable(mine) or usable(base)
        if why:
            return None, why
        assert mine is not None
        assert base is not None
        return mine[fieldname] / base[fieldname], ""

    def throughput(label: str, minimum: float, who: str) -> None:
        for metric, word in (("upload", "upload"), ("download", "download")):
            value, why = rate_ratio(label, metric, "mbps")
            target = f"{who} one-stream {word} ≥ {minimum:.0%} of direct"
            if value is None:
                add(target, None if why == "not measured" else False, why)
            else:
                add(target, value >= minimum, f"{value:.2f}\u00d7")

    def rtt_p50(label: str) -> tuple[float | None, str]:
        r = results.get(label, {}).get("rtt")
        why = usable(r)
        return (None, why) if why else (r["p50_us"], "")  # type: ignore[index]

    def verdict_na(target: str, why: str) -> None:
        add(target, None if why == "not measured" else False, why)

    def p50_within(
        target: str, mine: dict[str, Any] | None, base: dict[str, Any] | None, name: str, us: int
    ) -> None:
        """``mine``'s p50 at most ``us`` over ``base``'s (``name``: what base is)."""
        if why := usable(mine) or usable(base):
            verdict_na(target, why)
            return
        assert mine is not None
        assert base is not None
        extra = mine["p50_us"] - base["p50_us"]
        add(
            target,
            extra <= us,
            f"{mine['p50_us']:,.0f} µs, {name} {base['p50_us']:,.0f} µs ({extra:+,.0f} µs)",
        )

    # WebSocket
    throughput(TARGET_WS, 0.30, "WS")
    # "Both directions at once not below either alone": the bytes a duplex transfer moves
    # per second, both ways together, against each one-way transfer, all through ws.
    ws = results.get(TARGET_WS, {})
    target = "WS both directions at once (up + down) not below either alone"
    why = usable(ws.get("duplex")) or usable(ws.get("upload")) or usable(ws.get("download"))
    if why:
        verdict_na(target, why)
    else:
        both = ws["duplex"]["up_mbps"] + ws["duplex"]["down_mbps"]
        alone = max(ws["upload"]["mbps"], ws["download"]["mbps"])
        add(
            target,
            both >= alone,
            f"{both:,.0f} MB/s at once vs {ws['upload']['mbps']:,.0f} up,"
            f" {ws['download']['mbps']:,.0f} down alone",
        )
    target = "WS 64 B round trip p50 ≤ direct + 250 µs"
    p50_within(target, ws.get("rtt"), direct.get("rtt"), "direct", 250)
    connect = results.get(TARGET_WS, {}).get("connect")
    target = "WS connect + 1st byte p50 ≤ 1.5 ms"
    if why := usable(connect):
        verdict_na(target, why)
    else:
        assert connect is not None
        add(target, connect["p50_us"] <= 1500, f"{connect['p50_us']:,.0f} µs")

    # SOCKS5 (-D) against -L, both over ws in this run
    socks5 = results.get(TARGET_SOCKS5, {})
    target = f"SOCKS5 connect + 1st byte p50 ≤ ws (-L) + {SOCKS5_CONNECT_EXTRA_US} µs"
    p50_within(target, socks5.get("connect"), ws.get("connect"), "ws", SOCKS5_CONNECT_EXTRA_US)
    target = f"SOCKS5 UDP round trip p50 ≤ its TCP round trip + {SOCKS5_UDP_EXTRA_US} µs"
    p50_within(target, socks5.get("udp_rtt"), socks5.get("rtt"), "TCP", SOCKS5_UDP_EXTRA_US)
    for metric in ("upload", "download"):
        mine, base = results.get(TARGET_SOCKS5, {}).get(metric), ws.get(metric)
        target = f"SOCKS5 one-stream {metric} ≥ {SOCKS5_THROUGHPUT_MIN:.0%} of ws (-L)"
        if why := usable(mine) or usable(base):
            verdict_na(target, why)
        else:
            assert mine is not None
            assert base is not None
            ratio = mine["mbps"] / base["mbps"]
            add(
                target,
                ratio >= SOCKS5_THROUGHPUT_MIN,
                f"{ratio:.2f}\u00d7 ({mine['mbps']:,.0f} vs {base['mbps']:,.0f} MB/s)",
            )

    # Every tunnel column
    for t in live:
        if t.does("parallel"):
            r = results.get(t.label, {}).get("parallel") or {}
            target = f"{t.label}: 200/200 parallel echoes verified"
            if "verified_count" not in r:
                verdict_na(target, usable(r) or "not measured")
            else:
                add(
                    target,
                    r["verified_count"] == r["connections"] == 200,
                    f"{r['verified_count']}/{r['connections']}",
                )
    for t in live:
        if t.does("memory"):
            r = results.get(t.label, {}).get("memory")
            target = f"{t.label}: 1000 idle forwarded conns ≤ 20 KiB each on the server"
            if why := usable(r):
                verdict_na(target, why)
            else:
                assert r is not None
                per = r["server_kib_per_conn"]
                add(
                    target,
                    per <= 20 and r["reached_target"] == 1000,
                    f"{per:.1f} KiB ({r['reached_target']} reached the target)",
                )

    # KCP: on loopback against direct; through the lossy relay in absolute terms
    throughput(TARGET_KCP, 0.08, "KCP")
    value, why = rtt_p50(TARGET_KCP)
    if value is None:
        verdict_na("KCP 64 B round trip p50 ≤ 1 ms", why)
    else:
        add("KCP 64 B round trip p50 ≤ 1 ms", value <= 1000, f"{value:,.0f} µs")
    _kcp_lossy(results.get(TARGET_KCP_LOSSY, {}), "KCP lossy", add, usable, verdict_na)
    if TARGET_KCP_NOFEC in results:  # FEC measured the other way: only when asked for
        _kcp_lossy(results[TARGET_KCP_NOFEC], "KCP lossy, FEC off", add, usable, verdict_na)

    # HTTP POST, direct and through nginx
    for label, limit_ms, minimum, who in (
        (TARGET_HTTP, 3, 0.15, "HTTP"),
        (TARGET_NGINX, 10, 0.10, "HTTP via nginx"),
    ):
        value, why = rtt_p50(label)
        target = f"{who} 64 B round trip p50 ≤ {limit_ms} ms"
        if value is None:
            verdict_na(target, why)
        else:
            add(target, value <= limit_ms * 1000, f"{value / 1000:.2f} ms")
        throughput(label, minimum, who)
    return checks


def _kcp_lossy(
    lossy: dict[str, Any],
    who: str,
    add: Callable[[str, bool | None, str], None],
    usable: Callable[[dict[str, Any] | None], str],
    na: Callable[[str, str], None],
) -> None:
    """The lossy link's targets for one column: speed and resent share each way, round trip.

    "Retransmitted" is the issue's reading: the bytes of data segments sent again, as the
    sending endpoint counted them. FEC parity is not a resend but costs bytes on the wire
    as well, so each direction also gets a row with no verdict: every byte sent that way
    beyond the payload (parity, resends, the seal's, KCP's and FEC's headers), from the
    relay's count of what it was given.
    """
    for metric, direction in (("upload", "up"), ("download", "down")):
        r = lossy.get(metric)
        target = f"{who} one-stream {metric} ≥ {KCP_LOSSY_MBPS:.0f} MB/s"
        resend_target = f"{who} {metric}: retransmitted ≤ {KCP_RETRANSMIT_MAX:.0%} of payload"
        wire_row = f"{who} {metric}: total wire overhead (parity + resends + headers; no target)"
        if why := usable(r):
            na(target, why)
            na(resend_target, why)
            continue
        assert r is not None
        add(target, r["mbps"] >= KCP_LOSSY_MBPS, f"{r['mbps']:.1f} MB/s")
        if "wire" not in r:
            na(resend_target, "the relay kept no counters")
            continue
        extra = overhead(r["wire"], direction, r["bytes"])
        share = retransmitted(r["wire"], direction, r["bytes"])
        if share is None:
            na(resend_target, "the KCP endpoints kept no counters")
        else:
            add(resend_target, share <= KCP_RETRANSMIT_MAX, f"{share:.1%} (resent segments)")
        add(wire_row, None, f"{extra:.1%} more bytes than the payload sent {direction}")
    value = None if usable(lossy.get("rtt")) else lossy["rtt"]["p50_us"]
    target = f"{who} 64 B round trip p50 ≤ {KCP_LOSSY_RTT_MS} ms"
    if value is None:
        na(target, usable(lossy.get("rtt")))
    else:
        add(target, value <= KCP_LOSSY_RTT_MS * 1000, f"{value / 1000:.1f} ms")


def reference_lines(results: dict[str, dict[str, Any]], live: list[Tunnel]) -> list[str]:
    """What the reference columns and direct say beside the targets (no verdicts)."""
    bare_label = next((t.label for t in live if type(t) is BareRelay), "")
    direct, bare = results.get("direct", {}), results.get(bare_label, {})
    bare_ws = results.get(BARE_WS, {})
    lines = []
    for metric, word in (("rtt", "64 B round trip"), ("connect", "connect + 1st byte")):
        d, b = direct.get(metric) or {}, bare.get(metric) or {}
        if "p50_us" not in d or "p50_us" not in b:
            continue
        parts = [f"{bare_label} {b['p50_us'] - d['p50_us']:+,.0f} µs over direct"]
        for label in (TARGET_WS, TARGET_HTTP, TARGET_NGINX):
            mine = results.get(label, {}).get(metric) or {}
            if "p50_us" in mine:
                parts.append(f"{label} {mine['p50_us'] - b['p50_us']:+,.0f} µs over it")
        lines.append(f"{word} p50: " + "; ".join(parts))
        floor, mine = bare_ws.get(metric) or {}, results.get(TARGET_WS, {}).get(metric) or {}
        if "p50_us" in floor:
            parts = [f"{BARE_WS} {floor['p50_us'] - d['p50_us']:+,.0f} µs over direct"]
            if "p50_us" in mine:
                parts.append(f"{TARGET_WS} {mine['p50_us'] - floor['p50_us']:+,.0f} µs over it")
            lines.append(f"{word} p50: " + "; ".join(parts))
    # Duplex against one-way, each as a ratio to direct's own (CPU contention shows here).
    ratios = {}
    for metric, key in (("upload", "mbps"), ("download", "mbps"), ("duplex", "up_mbps")):
        mine, base = results.get(TARGET_WS, {}).get(metric), direct.get(metric)
        if mine and base and key in mine and key in base:
            ratios[metric] = mine[key] / base[key]
            if metric == "duplex":
                ratios["duplex down"] = mine["down_mbps"] / base["down_mbps"]
    # The same at-once check on direct TCP: on a machine whose cores are full it fails too.
    at_once, up, down = (direct.get(metric) or {} for metric in ("duplex", "upload", "download"))
    if "up_mbps" in at_once and "mbps" in up and "mbps" in down:
        both = at_once["up_mbps"] + at_once["down_mbps"]
        lines.append(
            f"direct both directions at once: {both:,.0f} MB/s vs {up['mbps']:,.0f} up,"
            f" {down['mbps']:,.0f} down alone"
        )
    if len(ratios) == 4:
        lines.append(
            f"{TARGET_WS} ratios to direct: duplex up {ratios['duplex']:.2f}\u00d7,"
            f" down {ratios['duplex down']:.2f}\u00d7; alone up {ratios['upload']:.2f}\u00d7,"
            f" down {ratios['download']:.2f}\u00d7"
        )
    return lines

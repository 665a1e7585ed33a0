"""flyway-kcp: hook wiring, the options, and one conversation in memory (no sockets)."""

from __future__ import annotations

import os

import click
import flyway_kcp
import pytest
from flyway_kcp.config import MODES, KcpConfig
from flyway_kcp.conversation import FRAGMENTS_PER_SEND, Conversation

from flyway_core import ConfigError, Settings
from flyway_core.plugins import Plugins, make_plugin_manager


def test_registers_the_kcp_transport_for_dash_k() -> None:
    (transport,) = flyway_kcp.register_transports(Settings())
    assert (transport.name, transport.flag) == ("kcp", "-K")
    assert transport.config == KcpConfig()


def test_the_options_reach_the_transport() -> None:
    options = {"kcp_mode": "fast", "kcp_mtu": 1200, "kcp_sndwnd": 256, "kcp_rcvwnd": 512}
    (transport,) = flyway_kcp.register_transports(Settings(options=options))
    assert transport.config == KcpConfig("fast", 1200, 256, 512)
    assert transport.config.nodelay == (0, 30, 2, 1)


def test_the_presets_are_kcptuns() -> None:
    assert MODES == {
        "normal": (0, 40, 2, 1),
        "fast": (0, 30, 2, 1),
        "fast2": (1, 20, 2, 1),
        "fast3": (1, 10, 2, 1),
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("mode", "turbo", "--kcp-mode"), ("mtu", 100, "--kcp-mtu"), ("sndwnd", 0, "--kcp-sndwnd")],
)
def test_bad_knobs_are_config_errors(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KcpConfig(**{field: value})  # type: ignore[arg-type]


def test_the_command_line_offers_every_knob() -> None:
    pm = make_plugin_manager(entry_points=False)
    pm.register(flyway_kcp, name="kcp")
    names = {name for option in Plugins(pm).options() for name in option.opts}
    assert {"--kcp-mode", "--kcp-mtu", "--kcp-sndwnd", "--kcp-rcvwnd"} <= names
    mode = next(o for o in flyway_kcp.add_options() if "--kcp-mode" in o.opts)
    assert isinstance(mode.type, click.Choice)


def test_a_write_of_many_segments_is_split_and_arrives_whole() -> None:
    """ikcp refuses one send of 128+ fragments: a 1 MiB write must still go through."""
    wires: tuple[list[bytes], list[bytes]] = ([], [])
    config = KcpConfig(sndwnd=1024, rcvwnd=1024)
    a = Conversation(7, config, lambda d: wires[0].append(d) or 0, overhead=32)
    b = Conversation(7, config, lambda d: wires[1].append(d) or 0, overhead=32)
    data = os.urandom(1 << 20)
    assert len(data) > 128 * a.mss > FRAGMENTS_PER_SEND * a.mss
    a.send(data)
    got = bytearray()
    for now in range(0, 20_000, 10):
        a.update(now)
        b.update(now)
        for segment in wires[0]:
            assert b.input(segment, now)
        for segment in wires[1]:
            assert a.input(segment, now)
        wires[0].clear()
        wires[1].clear()
        while (piece := b.recv()) is not None:
            got += piece
        if len(got) == len(data):
            break
    assert bytes(got) == data
    assert all(len(d) <= config.mtu - 32 for d in wires[0])
    a.release()
    b.release()


def test_garbage_segments_are_refused_by_ikcp() -> None:
    c = Conversation(7, KcpConfig(), lambda d: 0, overhead=32)
    assert not c.input(b"\x00" * 3, 0)
    assert not c.input(os.urandom(24), 0)  # a segment with another conv
    c.release()


def test_the_clock_may_pass_ikcps_32_bit_wrap() -> None:
    wires: tuple[list[bytes], list[bytes]] = ([], [])
    a = Conversation(9, KcpConfig(), lambda d: wires[0].append(d) or 0, overhead=32)
    b = Conversation(9, KcpConfig(), lambda d: wires[1].append(d) or 0, overhead=32)
    start = (1 << 32) - 50  # 49.7 days in
    a.update(start)
    b.update(start)
    a.send(b"across the wrap")
    got = b""
    for now in range(start, start + 500, 10):
        assert now <= a.check(now) <= now + 1000  # never behind, never wrapped far ahead
        a.update(now)
        b.update(now)
        for segment in wires[0]:
            b.input(segment, now)
        for segment in wires[1]:
            a.input(segment, now)
        wires[0].clear()
        wires[1].clear()
        got += b.recv() or b""
    assert got == b"across the wrap"
    assert a.waitsnd == 0  # acknowledged after the wrap
    a.release()
    b.release()

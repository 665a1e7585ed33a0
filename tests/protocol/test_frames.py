"""Frames: golden bytes for every type, decode(encode(f)) == f, and malformed input refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flyway_core.address import Address
from flyway_core.errors import LocalProtocolError, RemoteProtocolError
from flyway_core.protocol import (
    MAX_DATA,
    Accept,
    AcceptBound,
    Close,
    CloseReason,
    Data,
    End,
    Frame,
    Hello,
    Open,
    Ping,
    Pong,
    Reset,
    ResetReason,
    Welcome,
    Window,
    decode_frame,
    encode_frame,
    max_open_data,
)
from flyway_core.protocol.constants import MAX_STREAM_ID
from flyway_core.protocol.frames import encode_data, truncate_message

GOLDEN: list[tuple[Frame, str]] = [
    (Hello(1, 0x0102030405060708, 65536), "01000000000101020304050607080001000000000000"),
    (
        Hello(1, 5, 1 << 20, padding=b"\xaa\xbb"),
        "01000000000100000000000000050010000000000000aabb",
    ),
    (Hello(1, 5, 1 << 20, 0x80000001), "01000000000100000000000000050010000080000001"),
    (Welcome(1, 1 << 20), "0200000000010010000000000000"),
    (Welcome(1, 65536, padding=b"\x00"), "020000000001000100000000000000"),
    (Welcome(1, 65536, 3), "0200000000010001000000000003"),
    (
        Open(1, Address("example.com", 443), b"hi"),
        "0300000001030b6578616d706c652e636f6d01bb6869",
    ),
    (Open(3, Address("192.0.2.1", 80)), "030000000301c00002010050"),
    (
        Open(5, Address("2001:db8::1", 8080)),
        "03000000050420010db80000000000000000000000011f90",
    ),
    (Accept(7), "0400000007"),
    (AcceptBound(7, Address("192.0.2.9", 40000)), "0c0000000701c00002099c40"),
    (
        AcceptBound(9, Address("2001:db8::9", 443)),
        "0c000000090420010db800000000000000000000000901bb",
    ),
    (Data(1, b"abc"), "0500000001616263"),
    (Data(0xFFFFFFFF, b"\x00"), "05ffffffff00"),
    (End(1), "0600000001"),
    (Reset(9, ResetReason.REFUSED, "no"), "0700000009016e6f"),
    (Reset(9, ResetReason.CANCELLED), "070000000907"),
    (Window(1, 65536), "080000000100010000"),
    (Ping(bytes(range(8))), "09000000000001020304050607"),
    (Pong(bytes(range(8))), "0a000000000001020304050607"),
    (Close(CloseReason.IDLE_TIMEOUT, "idle"), "0b000000000269646c65"),
    (Close(CloseReason.NORMAL), "0b0000000000"),
]


@pytest.mark.parametrize(("frame", "hex_bytes"), GOLDEN, ids=lambda v: type(v).__name__)
def test_every_frame_has_fixed_bytes(frame: Frame, hex_bytes: str) -> None:
    assert encode_frame(frame).hex() == hex_bytes
    assert decode_frame(bytes.fromhex(hex_bytes)) == frame


def test_a_non_ascii_name_travels_as_idna() -> None:
    frame = Open(1, Address("bücher.example", 80))
    assert b"xn--bcher-kva.example" in encode_frame(frame)
    assert decode_frame(encode_frame(frame)) == Open(1, Address("xn--bcher-kva.example", 80))


stream_ids = st.integers(1, 2**32 - 1)
messages = st.text(max_size=60).filter(lambda m: len(m.encode()) <= 200)
names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,3}", fullmatch=True)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), names, st.just("a" * 255)
)
targets = st.builds(Address, hosts, st.integers(0, 65535))
payloads8 = st.binary(min_size=8, max_size=8)


@st.composite
def opens(draw: st.DrawFn) -> Open:
    target = draw(targets)
    size = draw(st.one_of(st.integers(0, 64), st.just(max_open_data(target))))
    return Open(draw(stream_ids), target, draw(st.binary(min_size=size, max_size=size)))


frames = st.one_of(
    st.builds(
        Hello,
        st.just(1),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=63),
    ),
    st.builds(
        Welcome,
        st.integers(0, 255),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=63),
    ),
    opens(),
    st.builds(Accept, stream_ids),
    st.builds(AcceptBound, stream_ids, targets),
    st.builds(Data, stream_ids, st.binary(min_size=1, max_size=300)),
    st.builds(Data, stream_ids, st.just(b"x" * MAX_DATA)),
    st.builds(End, stream_ids),
    st.builds(Reset, stream_ids, st.sampled_from(ResetReason), messages),
    st.builds(Window, stream_ids, st.integers(1, 2**32 - 1)),
    st.builds(Ping, payloads8),
    st.builds(Pong, payloads8),
    st.builds(Close, st.sampled_from(CloseReason), messages),
)


@settings(max_examples=200)
@given(frames)
def test_decoding_an_encoded_frame_gives_it_back(frame: Frame) -> None:
    plaintext = encode_frame(frame)
    assert len(plaintext) <= 65535
    assert decode_frame(plaintext) == frame


MALFORMED = {
    "empty": "",
    "short header": "05000000",
    "unknown type": "0c00000001",
    "type zero": "0000000001",
    "data on stream 0": "050000000061",
    "empty data": "0500000001",
    "ping on a stream": "09000000010001020304050607",
    "short ping": "090000000000010203040506",
    "long pong": "0a00000000000102030405060708",
    "short hello": "010000000001000000000000000500010000"[:-2],
    "short welcome": "020000000001000100",
    "accept with payload": "040000000100",
    "end with payload": "060000000100",
    "zero window": "080000000100000000",
    "short window": "0800000001000100",
    "reset without reason": "0700000001",
    "unknown reset reason": "070000000163",
    "reset reason zero": "070000000100",
    "reset with bad utf-8": "070000000101ff",
    "reset message too long": "070000000101" + "61" * 201,
    "unknown close reason": "0b0000000009",
    "close on a stream": "0b0000000100",
    "open without target": "0300000001",
    "unknown address type": "030000000102c00002010050",
    "truncated ipv4": "030000000101c00002",
    "missing port": "030000000101c000020100",
    "empty name": "030000000103000050",
    "name with a space": "030000000103036120620050",
    "truncated name": "0300000001030561620050",
    "truncated ipv6": "03000000010420010db80050",
}


@pytest.mark.parametrize("hex_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_a_remote_protocol_error(hex_bytes: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_frame(bytes.fromhex(hex_bytes))


@given(st.integers(1, MAX_STREAM_ID), st.binary(min_size=1, max_size=MAX_DATA))
def test_the_data_shortcut_encodes_what_the_frame_encodes(stream_id: int, data: bytes) -> None:
    assert encode_data(stream_id, data) == encode_frame(Data(stream_id, data))
    assert encode_data(stream_id, memoryview(data)) == encode_frame(Data(stream_id, data))


@given(st.binary(max_size=80))
def test_arbitrary_plaintext_decodes_or_raises_remote_protocol_error(plaintext: bytes) -> None:
    try:
        frame = decode_frame(plaintext)
    except RemoteProtocolError:
        return
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    "build",
    [
        lambda: Data(1, b""),
        lambda: Data(1, b"x" * (MAX_DATA + 1)),
        lambda: Data(0, b"x"),
        lambda: Data(2**32, b"x"),
        lambda: Window(1, 0),
        lambda: Ping(b"short"),
        lambda: Reset(1, ResetReason.INTERNAL, "é" * 101),
        lambda: Hello(256, 0, 65536),
        lambda: Hello(1, 0, 65536, 2**32),
        lambda: Welcome(1, 65536, -1),
        lambda: Open(1, Address("example.com", 80), b"x" * 65520),
        lambda: Open(1, Address("a" * 256, 80)),
        lambda: Open(1, Address("", 80)),
        lambda: Open(1, Address("has space", 80)),
        lambda: Open(1, Address("fe80::1%eth0", 80)),
    ],
)
def test_frames_refuse_values_the_wire_cannot_carry(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def test_initial_data_limit_depends_on_the_address() -> None:
    assert max_open_data(Address("192.0.2.1", 80)) == MAX_DATA - 7
    assert max_open_data(Address("::1", 80)) == MAX_DATA - 19
    assert max_open_data(Address("example.com", 80)) == MAX_DATA - 2 - 11 - 2
    target = Address("example.com", 80)
    frame = Open(1, target, b"x" * max_open_data(target))
    assert len(encode_frame(frame)) == 65535


def test_messages_are_cut_on_a_character_boundary() -> None:
    assert truncate_message("é" * 150) == "é" * 100
    assert truncate_message("a" + "é" * 150) == "a" + "é" * 99
    assert truncate_message("short") == "short"


def test_reasons_describe_themselves() -> None:
    assert ResetReason.REFUSED.describe() == "connection refused"
    assert ResetReason.UNREACHABLE.describe() == "host unreachable"
    assert ResetReason.NAME_NOT_FOUND.describe() == "name not found"
    assert ResetReason.TIMED_OUT.describe() == "timed out"
    assert ResetReason.NOT_ALLOWED.describe() == "not allowed"
    assert all(reason.describe() for reason in ResetReason)
    assert CloseReason.IDLE_TIMEOUT.describe() == "idle timeout"

"""docs/PROTOCOL.md stays true: its limits table and worked example are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flyway_core.protocol import (
    DEFAULT_WINDOW,
    AcceptBound,
    Address,
    Cipher,
    ClientConnection,
    Hello,
    ReplayCache,
    ServerConnection,
    constants,
    crypto,
    derive_master_key,
    encode_frame,
    records,
)
from flyway_core.protocol.handshake import client_key, server_key

DOC = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text()
NOW = 1_700_000_000.0


def _example() -> dict[str, str]:
    master = derive_master_key("correct horse")
    salt, server_salt = bytes(range(32)), bytes(range(32, 64))
    to_server = client_key(master, salt, Cipher.AES_256_GCM)
    to_client = server_key(master, salt, server_salt, Cipher.AES_256_GCM)
    client = ClientConnection(master, now=NOW, salt=salt, padding=b"")
    first = client.hello()
    server = ServerConnection(master, ReplayCache(), now=NOW, padding=b"", server_salt=server_salt)
    server.receive_data(first, NOW)
    answer = server.data_to_send()
    return {
        "master key": master.hex(),
        "c2s key": to_server.hex(),
        "s2c key": to_client.hex(),
        "server salt": answer[:32].hex(),
        "plaintext": encode_frame(Hello(1, int(NOW * 1000), DEFAULT_WINDOW)).hex(),
        "salt": first[:32].hex(),
        "seal(0x0016)": first[32:50].hex(),
        "seal(Hello)": first[50:].hex(),
        "record": answer[32:].hex(),
    }


@pytest.mark.parametrize(("label", "value"), _example().items())
def test_the_worked_example_matches_the_code(label: str, value: str) -> None:
    assert re.search(rf"^{re.escape(label)}\s+{value}\b", DOC, re.MULTILINE), label


@pytest.mark.parametrize(
    "name",
    [
        "PROTOCOL_VERSION",
        "SALT_SIZE",
        "MAX_PLAINTEXT",
        "MAX_DATA",
        "DEFAULT_WINDOW",
        "MIN_WINDOW",
        "INITIAL_WINDOW",
        "MAX_WINDOW",
        "CLOCK_SKEW",
    ],
)
def test_the_limits_table_matches_the_code(name: str) -> None:
    value = next(getattr(m, name) for m in (constants, crypto, records) if hasattr(m, name))
    row = re.search(rf"^\|[^|\n]*`{name}`[^|\n]*\| (\d+)", DOC, re.MULTILINE)
    assert row is not None, name
    assert int(row.group(1)) == value


def test_every_reason_code_is_documented() -> None:
    for reason in (*constants.ResetReason, *constants.CloseReason):
        assert re.search(rf"^\| {reason.name} \| {reason.value} \|", DOC, re.MULTILINE), reason


_FRAME_NAMES = {"ACCEPT_BOUND": "AcceptBound", "OPEN_FLOW": "OpenFlow"}  # as the classes do


def test_every_frame_type_is_in_the_frame_table() -> None:
    for kind in constants.FrameType:
        name = _FRAME_NAMES.get(kind.name, kind.name.title())
        assert re.search(rf"^\| 0x{kind.value:02X} \| {name} \|", DOC, re.MULTILINE), kind


def test_every_feature_bit_is_in_the_feature_table_with_its_frames() -> None:
    for feature in constants.Feature:
        if not feature:
            continue
        row = re.search(rf"^\| 0x{feature.value:08x} \| {feature.name}\b[^\n]*", DOC, re.MULTILINE)
        assert row is not None, feature
        for kind, needed in constants.FRAME_FEATURES.items():
            if needed is feature:
                assert f"(0x{kind:02X})" in row.group(0), (feature, kind)


def test_the_accept_bound_example_matches_the_code() -> None:
    frame = AcceptBound(7, Address("192.0.2.9", 40000))
    shown = re.search(r"^AcceptBound\(stream 7, 192\.0\.2\.9:40000\)\s+([0-9a-f ]+)$", DOC, re.M)
    assert shown is not None
    assert shown.group(1).replace(" ", "") == encode_frame(frame).hex()

"""Keys, AEAD and records: pinned vectors, counter nonces, and records read from any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol.helpers import MASTER, SALT

from flyway_core.errors import LocalProtocolError, RemoteProtocolError
from flyway_core.protocol import (
    MAX_PLAINTEXT,
    Cipher,
    Opener,
    RecordReader,
    RecordWriter,
    Sealer,
    derive_master_key,
    session_keys,
)
from flyway_core.protocol.crypto import MAX_OPERATIONS, PACKET_OVERHEAD, PacketSealer
from flyway_core.protocol.records import HEADER_SIZE, MAX_RECORD, record_size


def test_the_master_key_vector_never_changes() -> None:
    expected = "8da0b7e88881b8bd9f03da5aff0cb0e35bc21aa147830ac5e59737574a934b3e"
    assert derive_master_key("correct horse").hex() == expected
    assert derive_master_key("correct horse") is derive_master_key("correct horse")  # cached


@pytest.mark.parametrize(
    ("cipher", "c2s", "s2c"),
    [
        (
            Cipher.AES_256_GCM,
            "98c15a9964413b1065907e7f3f367a8e086c13c73e0e3366539b821e752a62b5",
            "0b82d7282c8f50c23494033c0cd4f3aa0349113c8d8e263cdb6be66c1cca54bc",
        ),
        (
            Cipher.CHACHA20_POLY1305,
            "630cd9907048842f005e803db45a41a077e89acf281b17b2d48d8211116336e9",
            "a310c471d5b22da2de639dbf8460a25cccdb3a4345eb9124a10f7cceb58ab39f",
        ),
    ],
)
def test_the_session_key_vectors_never_change(cipher: Cipher, c2s: str, s2c: str) -> None:
    to_server, to_client = session_keys(MASTER, SALT, cipher)
    assert (to_server.hex(), to_client.hex()) == (c2s, s2c)


def test_ciphers_parse_from_their_labels() -> None:
    assert Cipher.parse("aes-256-gcm") is Cipher.AES_256_GCM
    assert Cipher.parse(" ChaCha20-Poly1305 ") is Cipher.CHACHA20_POLY1305
    assert [c.label for c in Cipher] == ["aes-256-gcm", "chacha20-poly1305"]
    with pytest.raises(ValueError, match="unknown cipher"):
        Cipher.parse("rot13")


@pytest.mark.parametrize("cipher", list(Cipher))
def test_nonces_count_up_so_each_message_opens_only_in_order(cipher: Cipher) -> None:
    key = bytes(32)
    sealer, opener = Sealer(key, cipher), Opener(key, cipher)
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    assert first != sealer.seal(b"one")  # the same plaintext under a new nonce
    assert len(first) == 3 + 16
    assert sealer.counter == 3
    with pytest.raises(RemoteProtocolError, match="authentication failed"):
        opener.open(second)  # out of order: opened under nonce 0
    assert Opener(key, cipher).open(first) == b"one"


def test_a_tampered_message_fails_authentication() -> None:
    sealed = bytearray(Sealer(bytes(32), Cipher.AES_256_GCM).seal(b"payload"))
    sealed[0] ^= 1
    with pytest.raises(RemoteProtocolError):
        Opener(bytes(32), Cipher.AES_256_GCM).open(bytes(sealed))


def test_an_exhausted_counter_refuses_to_seal() -> None:
    sealer = Sealer(bytes(32), Cipher.AES_256_GCM, counter=MAX_OPERATIONS - 1)
    sealed = sealer.seal(b"last")
    assert Opener(bytes(32), Cipher.AES_256_GCM, counter=MAX_OPERATIONS - 1).open(sealed) == b"last"
    with pytest.raises(LocalProtocolError, match="exhausted"):
        sealer.seal(b"one too many")


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        session_keys(b"short", SALT, Cipher.AES_256_GCM)
    with pytest.raises(LocalProtocolError):
        Sealer(b"short", Cipher.AES_256_GCM)


def _pair() -> tuple[RecordWriter, RecordReader]:
    key = bytes(range(32))
    return (
        RecordWriter(Sealer(key, Cipher.AES_256_GCM)),
        RecordReader(Opener(key, Cipher.AES_256_GCM)),
    )


def test_a_record_is_a_sealed_length_then_a_sealed_body() -> None:
    writer, _ = _pair()
    key = bytes(range(32))
    record = writer.seal(b"hello")
    assert len(record) == record_size(5) == HEADER_SIZE + 5 + 16
    opener = Opener(key, Cipher.AES_256_GCM)
    assert opener.open(record[:HEADER_SIZE]) == b"\x00\x05"
    assert opener.open(record[HEADER_SIZE:]) == b"hello"


def test_record_sizes_are_bounded() -> None:
    writer, _ = _pair()
    with pytest.raises(LocalProtocolError):
        writer.seal(b"")
    with pytest.raises(LocalProtocolError):
        writer.seal(bytes(MAX_PLAINTEXT + 1))
    assert len(writer.seal(bytes(MAX_PLAINTEXT))) == MAX_RECORD


plaintexts = st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=8)


@settings(max_examples=150)
@given(plaintexts, st.lists(st.integers(0, 5000), max_size=12))
def test_records_come_out_whole_from_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    writer, reader = _pair()
    stream = b"".join(writer.seal(m) for m in messages)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    out = []
    for start, end in itertools.pairwise(points):
        reader.feed(stream[start:end])
        while (record := reader.next_record()) is not None:
            out.append(record)
        assert reader.buffered < MAX_RECORD
    assert out == messages
    assert reader.buffered == 0


@settings(max_examples=100)
@given(
    plaintexts,
    st.lists(st.integers(0, 5000), max_size=12),
    st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=13, max_size=13),
    st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_records_come_out_whole_whatever_the_pieces_are_and_when_they_are_read(
    messages: list[bytes], cuts: list[int], kinds: list[type], read_now: list[bool]
) -> None:
    writer, reader = _pair()
    stream = b"".join(writer.seal(m) for m in messages)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    out = []
    for (start, end), kind, drain in zip(itertools.pairwise(points), kinds, read_now, strict=False):
        piece = kind(stream[start:end])
        reader.feed(piece)
        if isinstance(piece, bytearray):
            piece[:] = bytes(len(piece))  # the caller reuses its buffer: the reader kept a copy
        while drain and (record := reader.next_record()) is not None:
            out.append(record)
    while (record := reader.next_record()) is not None:
        out.append(record)
    assert out == messages
    assert reader.buffered == 0


def test_the_reader_keeps_no_consumed_bytes() -> None:
    writer, reader = _pair()
    big, following = writer.seal(bytes(60000)), writer.seal(bytes(1000))
    reader.feed(big + following[:100])
    assert reader.next_record() == bytes(60000)
    assert reader.next_record() is None
    assert reader.buffered == 100 - HEADER_SIZE  # the next record's length is already open
    assert len(reader._buffer) == reader.buffered  # the consumed record is gone, not skipped


def test_an_empty_record_is_refused_and_the_reader_stays_dead() -> None:
    key = bytes(range(32))
    sealer = Sealer(key, Cipher.AES_256_GCM)
    reader = RecordReader(Opener(key, Cipher.AES_256_GCM))
    reader.feed(sealer.seal(b"\x00\x00"))
    with pytest.raises(RemoteProtocolError, match="empty record"):
        reader.next_record()
    with pytest.raises(RemoteProtocolError):
        reader.next_record()


# --- the per-packet sealer --------------------------------------------------------------


def test_a_sealed_packet_opens_with_the_same_label_and_nothing_else() -> None:
    sealer = PacketSealer(MASTER, b"test label")
    packet = sealer.seal(b"hello packet", b"context")
    assert len(packet) == len(b"hello packet") + PACKET_OVERHEAD
    assert PacketSealer(MASTER, b"test label").open(packet, b"context") == b"hello packet"
    with pytest.raises(RemoteProtocolError):
        PacketSealer(MASTER, b"other label").open(packet, b"context")
    with pytest.raises(RemoteProtocolError):
        sealer.open(packet, b"other context")
    with pytest.raises(RemoteProtocolError):
        PacketSealer(bytes(32), b"test label").open(packet, b"context")


def test_every_bit_of_a_packet_is_authenticated() -> None:
    sealer = PacketSealer(MASTER, b"test label")
    packet = sealer.seal(b"abc")
    for index in range(len(packet)):
        flipped = bytearray(packet)
        flipped[index] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            sealer.open(bytes(flipped))
    for size in range(PACKET_OVERHEAD):
        with pytest.raises(RemoteProtocolError):
            sealer.open(packet[:size])


def test_the_same_plaintext_never_seals_to_the_same_packet() -> None:
    sealer = PacketSealer(MASTER, b"test label")
    assert len({sealer.seal(b"same") for _ in range(50)}) == 50


def test_a_packet_is_sealed_as_docs_protocol_describes() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

    packet = PacketSealer(MASTER, b"http envelope").seal(b"plaintext", b"ad")
    salt, body = packet[:16], packet[16:]
    label_key = HKDF(hashes.SHA256(), 32, salt=None, info=b"flyway/v1 http envelope").derive(MASTER)
    key = HKDFExpand(hashes.SHA256(), 32, info=salt).derive(label_key)
    assert AESGCM(key).decrypt(bytes(12), body, b"ad") == b"plaintext"

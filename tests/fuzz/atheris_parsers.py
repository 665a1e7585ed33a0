"""Coverage-guided fuzzing of the parsers with atheris (libFuzzer): optional, never run by pytest.

The hypothesis fuzz in the suite (tests/protocol/test_fuzz.py,
plugins/http_post/tests/test_fuzz_envelope.py, tests/test_fuzz_front_door.py) is time-bounded;
this harness runs the same parsers for as long as you like, steered by coverage. The first
input byte picks the parser, the rest is its input; a parser that raises anything but its
documented error is a crash, and libFuzzer writes the input to ``crash-*``. Run it with atheris
from a throwaway venv (a manylinux wheel for CPython 3.11, no compiler needed)::

    python3.11 -m venv /tmp/atheris && /tmp/atheris/bin/pip install atheris
    PYTHONPATH=/tmp/atheris/lib/python3.11/site-packages \\
        .venv/bin/python tests/fuzz/atheris_parsers.py -max_total_time=300 -rss_limit_mb=1024

libFuzzer flags follow (``-help=1`` lists them); pass a directory to keep a corpus.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from flyway_core.protocol import (
        Cipher,
        ClientConnection,
        HandshakeRejected,
        Opener,
        PacketSealer,
        RecordReader,
        RecordWriter,
        RemoteProtocolError,
        ReplayCache,
        Sealer,
        ServerConnection,
        decode_frame,
        session_keys,
    )
    from flyway_core.protocol.addressing import decode_address
    from flyway_core.protocol.records import MAX_PLAINTEXT, MAX_RECORD

    try:
        from flyway_http_post.envelope import EnvelopeKeys
    except ImportError:  # the HTTP POST plugin is not installed: fuzz the core alone
        EnvelopeKeys = None

MASTER = bytes(range(32))
SALT = bytes(range(32, 64))
NOW = 1_700_000_000.0
KEY = bytes(range(100, 132))
TO_SERVER, TO_CLIENT = session_keys(MASTER, SALT, Cipher.AES_256_GCM)


def _frame(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(data)


def _sealed_frame(data: bytes) -> None:
    # Past the AEAD: an authentic first record holding whatever plaintext the fuzzer chose.
    plaintext = data[:MAX_PLAINTEXT] or b"\x00"
    first = SALT + RecordWriter(Sealer(TO_SERVER, Cipher.AES_256_GCM)).seal(plaintext)
    with contextlib.suppress(RemoteProtocolError):
        ServerConnection(MASTER, ReplayCache(), now=NOW).receive_data(first, NOW)


def _address(data: bytes) -> None:
    try:
        _, size = decode_address(data)
    except RemoteProtocolError:
        return
    assert 0 < size <= len(data)


def _records(data: bytes) -> None:
    reader = RecordReader(Opener(KEY, Cipher.AES_256_GCM))
    try:
        for start in range(0, len(data), 97):
            reader.feed(data[start : start + 97])
            while reader.next_record() is not None:
                pass
            assert reader.buffered < MAX_RECORD
    except RemoteProtocolError:
        pass


def _hello(data: bytes) -> None:
    server = ServerConnection(MASTER, ReplayCache(), now=NOW)
    try:
        for start in range(0, len(data), 61):
            server.receive_data(data[start : start + 61], NOW)
    except HandshakeRejected:
        assert not server.accepted
    except RemoteProtocolError:
        assert server.accepted


def _client(data: bytes) -> None:
    client = ClientConnection(MASTER, now=NOW, salt=SALT)
    client.data_to_send()
    with contextlib.suppress(RemoteProtocolError):
        client.receive_data(data, NOW)


def _packet(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        PacketSealer(MASTER, b"http envelope").open(data)


def _envelope(data: bytes) -> None:
    if EnvelopeKeys is None:
        return
    keys = EnvelopeKeys(MASTER)
    keys.open_request(data)  # None when not ours; nothing may raise
    with contextlib.suppress(ValueError):
        keys.reader().feed(data)


TARGETS = [_frame, _sealed_frame, _address, _records, _hello, _client, _packet, _envelope]


def one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

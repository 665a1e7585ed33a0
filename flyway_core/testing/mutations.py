"""Hypothesis strategies for fuzzing parsers: damaged copies of valid encodings, and chunkings.

Random bytes rarely get past a parser's first length check, let alone an AEAD, so a fuzz also
starts from valid encodings and damages them: ``mutations_of(seeds)`` applies a few edits (bit
flips, overwritten bytes, insertions, deletions, truncations, extensions, splices of the input
with itself) to one of the seeds. ``pieces(data, cuts)`` splits bytes where a list of integers
says, so one example also tries an arbitrary chunking. Import this module explicitly: it needs
hypothesis, which flyway itself does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import strategies as st

__all__ = ["EDITS", "cuts", "mutations_of", "pieces"]

EDITS = ("flip", "set", "insert", "delete", "truncate", "extend", "overwrite", "splice")


def _edit(draw: st.DrawFn, data: bytearray) -> None:
    kind = draw(st.sampled_from(EDITS), label="edit")
    size = len(data)
    at = draw(st.integers(0, max(size - 1, 0)), label="at")
    if kind == "flip" and size:
        data[at] ^= 1 << draw(st.integers(0, 7), label="bit")
    elif kind == "set" and size:
        data[at] = draw(st.integers(0, 255), label="byte")
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64), label="inserted")
    elif kind == "delete" and size:
        del data[at : at + draw(st.integers(1, 64), label="deleted")]
    elif kind == "truncate":
        del data[at:]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=256), label="appended")
    elif kind == "overwrite" and size:
        patch = draw(st.binary(min_size=1, max_size=32), label="patch")
        data[at : at + len(patch)] = patch
    elif kind == "splice" and size:
        start = draw(st.integers(0, size - 1), label="from")
        chunk = bytes(data[start : start + draw(st.integers(1, 128), label="length")])
        data[at:at] = chunk  # a piece of the input repeated elsewhere (a replayed record, say)


@st.composite
def _mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes], max_edits: int) -> bytes:
    data = bytearray(draw(seeds, label="seed"))
    for _ in range(draw(st.integers(1, max_edits), label="edits")):
        _edit(draw, data)
    return bytes(data)


def mutations_of(
    seeds: bytes | Sequence[bytes] | st.SearchStrategy[bytes], *, max_edits: int = 4
) -> st.SearchStrategy[bytes]:
    """Return a strategy for a seed after 1 to ``max_edits`` random edits (``EDITS``).

    ``seeds`` is one valid encoding, a list to choose from, or a strategy that draws one. An
    edit may undo another, so an example is occasionally the seed itself: assert accordingly.
    """
    if isinstance(seeds, bytes):
        strategy: st.SearchStrategy[bytes] = st.just(seeds)
    elif isinstance(seeds, st.SearchStrategy):
        strategy = seeds
    else:
        strategy = st.sampled_from(list(seeds))
    return _mutated(strategy, max_edits)


def cuts(max_cuts: int = 12) -> st.SearchStrategy[list[int]]:
    """Return a strategy for where to cut bytes into pieces (for ``pieces``)."""
    return st.lists(st.integers(0, 1 << 17), max_size=max_cuts)


def pieces(data: bytes, where: Sequence[int]) -> list[bytes]:
    """Split ``data`` at ``where`` (each taken modulo ``len(data) + 1``); the pieces join to it."""
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in where)})
    chunks = [data[start:end] for start, end in itertools.pairwise(points)]
    return chunks or [data]

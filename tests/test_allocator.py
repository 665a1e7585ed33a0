"""The command line pins glibc's malloc thresholds, and leaves every other setting alone."""

from __future__ import annotations

import os
from typing import Any

import pytest

from flyway_core import allocator, cli


class FakeMallopt:
    """Stands in for libc's ``mallopt``: records the calls, changes nothing."""

    argtypes: Any = None
    restype: Any = None

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = 1

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


class FakeLibc:
    """Stands in for ``ctypes.CDLL``: every library it opens has the fake ``mallopt``."""

    def __init__(self) -> None:
        self.mallopt = FakeMallopt()

    def __call__(self, name: None) -> FakeLibc:
        return self

    @property
    def calls(self) -> list[tuple[int, int]]:
        return self.mallopt.calls

    @property
    def answer(self) -> int:
        return self.mallopt.answer

    @answer.setter
    def answer(self, value: int) -> None:
        self.mallopt.answer = value


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr("ctypes.CDLL", fake)
    monkeypatch.setattr(allocator, "_glibc", lambda: True)
    for name in (*allocator._ENVIRONMENT, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_glibc_gets_both_thresholds_mmap_first(libc: FakeLibc) -> None:
    assert allocator.tune_allocator()
    assert libc.calls == [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD)]
    assert allocator.TRIM_THRESHOLD > allocator.MMAP_THRESHOLD >= 2 << 20


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
    ],
)
def test_an_environment_that_tunes_malloc_is_left_alone(
    libc: FakeLibc, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert not allocator.tune_allocator()
    assert libc.calls == []


def test_other_glibc_tunables_do_not_count(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=2048")
    assert allocator.tune_allocator()


def test_another_c_library_is_left_alone(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: False)
    assert not allocator.tune_allocator()
    assert libc.calls == []


def test_a_refused_setting_reports_false(libc: FakeLibc) -> None:
    libc.answer = 0
    assert not allocator.tune_allocator()


def test_glibc_is_recognised_by_its_version_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36", raising=False)
    assert allocator._glibc()

    def unknown(name: str) -> Any:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(os, "confstr", unknown, raising=False)
    assert not allocator._glibc()


def test_the_command_line_tunes_before_running(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def tune() -> bool:
        order.append("tuned")
        return True

    monkeypatch.setattr(cli, "tune_allocator", tune)

    async def session() -> None:
        order.append("ran")

    cli._run(session())
    assert order == ["tuned", "ran"]


_CHURN = """
import resource, sys
from flyway_core import allocator
if sys.argv[1] == "tuned":
    assert allocator.tune_allocator()
def churn():
    for _ in range(300):  # a relay's buffers: allocated together, freed together
        parts = [bytes(256 << 10), bytearray(256 << 10), b"x" * (256 << 10)]
        del parts
churn()  # warm up: the heap reaches its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not allocator._glibc(), reason="the thresholds are glibc's")
def test_the_tuned_allocator_stops_faulting_a_relays_buffers_back_in() -> None:
    import subprocess
    import sys

    def faults(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k not in allocator._ENVIRONMENT}
        env.pop("GLIBC_TUNABLES", None)
        out = subprocess.run(
            [sys.executable, "-c", _CHURN, mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return int(out.stdout)

    untuned, tuned = faults("untuned"), faults("tuned")
    assert untuned > 10_000  # 300 rounds of 768 KiB given back and faulted in again
    assert tuned < untuned / 20

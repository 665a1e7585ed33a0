"""Run the real ``flyway`` command in subprocesses, as users do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["FLYWAY", "flyway"]

FLYWAY = [sys.executable, "-m", "flyway_core"]


@contextmanager
def flyway(
    args: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Start ``flyway ARGS``; stop it with SIGTERM afterwards."""
    proc = subprocess.Popen(
        [*FLYWAY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

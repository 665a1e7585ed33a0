"""The driver's two consoles: ``out`` for the report (stdout), ``progress`` for the run (stderr)."""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["out", "progress"]

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
progress = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

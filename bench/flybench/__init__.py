"""flyway's benchmark driver, run as ``python bench/run.py``: see bench/README.md.

The modules, bottom up: ``wire`` (sizes, the request header, the data patterns and how
the driver opens connections), ``target_servers`` (the far ends), ``procfs`` (what the
kernel says about processes and sockets), ``workloads`` (the measurements), ``processes``,
``relays`` and ``hops`` (flyway pairs, the bare relay references, squid and nginx),
``columns`` (the registry of columns: a new transport is a row there, plus a module when
it starts differently), ``measure`` (every workload on every column, interleaved),
``targets`` (the project's targets), ``report`` (table, notes, JSON) and ``cli``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT"]

ROOT = Path(__file__).resolve().parents[2]  # the checkout: bench/flybench/ is two levels down

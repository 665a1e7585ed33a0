#!/usr/bin/env python3
"""Benchmark flyway: the same measurements through the tunnel and directly to the same targets.

    .venv/bin/python bench/run.py [--transport ws] [--quick] [--json PATH]

The far ends (echo, sink, source, duplex, idle holder) are asyncio servers inside this
driver on 127.0.0.1:0. One flyway server and one flyway client (with one ``-L`` per
target) run as separate subprocesses per transport, as users run them; http-squid and
http-nginx put a real squid or nginx (tests/intermediaries) between them. A "bare
relay" column (bench/bare_relay.py: two plain relay processes chained) shows the latency
floor of any two-process relay, and a "bare ws relay" column (bench/ws_relay.py) the floor
of two aiohttp WebSocket relay processes, under flyway's ws transport. Every metric is
measured against the targets directly and then through each tunnel, in turn, so the ratios
hold on a noisy machine. See bench/README.md for the wire formats, the metrics and the
targets.
"""

from __future__ import annotations

from flybench.cli import main

if __name__ == "__main__":
    main(__doc__ or "")

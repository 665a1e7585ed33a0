#!/usr/bin/env python3
"""The -P fallback's benchmark: the reverse proxy's cost over a site, static files beside nginx.

    python bench/fallback.py [--seconds 5] [--json bench/results/fallback.json]

One run, on 127.0.0.1, with real processes: nginx (Debian's stock config, one
worker) serving a directory of small files, a ``flyway -P http://NGINX`` server in
front of it, and a ``flyway -P DIR`` server serving the same directory. wrk
(Debian package ``wrk``) measures each of the three in turn, ``--rounds`` times
(default 3). The table shows each number's median over the rounds; the targets
take, round by round, flyway's number against nginx's of the same round (seconds
apart, so that other work on the machine weighs on both), and the median of that:

- **reverse-proxy overhead on a 1 KB response**: ``wrk -t1 -c1 --latency`` on
  ``/1k.bin``, nginx alone and through flyway; target: p50 at most +1 ms;
- **static small-file requests per second**: ``wrk -t1 -c32`` on ``/1k.bin``,
  nginx (one worker) and flyway ``-P DIR``; target: at least 25% of nginx.

It prints a table and PASS/FAIL lines, writes every number to the JSON file, and
exits 1 if a measurement failed (a wrk error, a non-2xx answer); a FAILed target
does not change the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from intermediaries.children import make_workdir  # noqa: E402
from intermediaries.site import run_nginx_site  # noqa: E402

from flyway_core.testing import free_port, wait_port  # noqa: E402

PASSWORD = "bench fallback password"
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _site() -> Path:
    root = make_workdir("bench-site")
    (root / "1k.bin").write_bytes(os.urandom(1024))
    (root / "index.html").write_text("<html><body>bench</body></html>\n")
    for path in root.iterdir():
        path.chmod(0o644)
    return root


@contextmanager
def _flyway(spec: str) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, "-m", "flyway_core", f"127.0.0.1:{port}", "-p", PASSWORD, "-q"]
    process = subprocess.Popen([*argv, "-P", spec], stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        if process.returncode != 0 or err:
            raise RuntimeError(f"flyway -P {spec}: exit {process.returncode}: {err.strip()}")


def _wrk(url: str, connections: int, seconds: float) -> dict[str, float]:
    """Run wrk on ``url``: requests per second and the latency median (seconds)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    text = out.stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk {url}: errors\n{text}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+([\d.]+)(us|ms|s)\b", text)
    assert p50 is not None, text
    return {"requests_per_s": rate, "p50_s": float(p50.group(1)) * _UNITS[p50.group(2)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", default=str(HERE / "results" / "fallback.json"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/fallback.py: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    root = _site()
    results: dict[str, dict[str, float]] = {}
    try:
        with ExitStack() as stack:
            nginx = stack.enter_context(run_nginx_site(root, workers=1))
            proxy = stack.enter_context(_flyway(f"http://127.0.0.1:{nginx.port}"))
            static = stack.enter_context(_flyway(str(root)))
            urls = {
                "nginx": f"http://127.0.0.1:{nginx.port}/1k.bin",
                "flyway -P http://": f"http://127.0.0.1:{proxy}/1k.bin",
                "flyway -P DIR": f"http://127.0.0.1:{static}/1k.bin",
            }
            for url in urls.values():
                _wrk(url, 4, 1)  # warm up: connections, caches
            rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
            for _ in range(args.rounds):
                for name, url in urls.items():
                    latency = _wrk(url, 1, args.seconds)["p50_s"] * 1000
                    rounds[name].append((latency, _wrk(url, 32, args.seconds)["requests_per_s"]))
            for name, samples in rounds.items():
                results[name] = {
                    "p50_ms_one_connection": statistics.median(s[0] for s in samples),
                    "requests_per_s_32_connections": statistics.median(s[1] for s in samples),
                }
            # the targets compare each round's numbers, measured seconds apart, so
            # that other work on the machine weighs on both sides alike
            proxy_name, static_name = "flyway -P http://", "flyway -P DIR"
            paired = zip(rounds["nginx"], rounds[proxy_name], rounds[static_name], strict=True)
            results["per round"] = {
                "overhead_ms": statistics.median(p[0] - n[0] for n, p, _ in paired),
            }
            paired = zip(rounds["nginx"], rounds[proxy_name], rounds[static_name], strict=True)
            results["per round"]["static_share"] = statistics.median(
                d[1] / n[1] for n, _, d in paired
            )
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"bench/fallback.py: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _report(results, Path(args.json))
    return 0


def _report(results: dict[str, dict[str, float]], path: Path) -> None:
    names = [name for name in results if name != "per round"]
    print(f"{'':36}" + "".join(f"{n:>20}" for n in names))
    row = "1 KB GET p50, one connection"
    print(f"{row:36}" + "".join(f"{results[n]['p50_ms_one_connection']:>17.3f} ms" for n in names))
    row = "1 KB GETs/s, 32 connections"
    rates = [results[n]["requests_per_s_32_connections"] for n in names]
    print(f"{row:36}" + "".join(f"{r:>20.0f}" for r in rates))
    extra = results["per round"]["overhead_ms"]  # medians over rounds of in-round differences
    share = results["per round"]["static_share"]
    targets = {
        "reverse-proxy overhead, 1 KB, p50 <= +1 ms": (extra <= 1.0, f"+{extra:.3f} ms"),
        "static small files >= 25% of nginx (1 worker)": (share >= 0.25, f"{share:.0%}"),
    }
    for name, (ok, value) in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data = {"when": when, "results": results, "overhead_ms": extra, "static_share": share}
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

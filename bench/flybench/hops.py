"""The real HTTP intermediaries of some columns: squid and nginx, from tests/intermediaries."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from . import ROOT
from .processes import read_lines

__all__ = ["Intermediaries"]


class Intermediaries:
    """squid and nginx from tests/intermediaries: started on demand, stopped by close().

    One squid serves every http-squid column; each http-nginx column gets its own nginx
    (its upstream is that column's flyway server). Their logs are copied into the log
    directory before they stop (their own directories are removed).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.stack = contextlib.ExitStack()
        self.children: list[tuple[str, Any]] = []  # (log name, intermediaries.Child)
        self.children_closed: list[str] = []
        self._module: Any = None
        self._squid: Any = None

    def module(self) -> Any:
        if self._module is None:
            tests = str(ROOT / "tests")
            if tests not in sys.path:
                sys.path.insert(0, tests)
            import intermediaries  # type: ignore[import-not-found]  # tests/intermediaries/__init__.py

            self._module = intermediaries
        return self._module

    def missing(self, name: str) -> str:
        """Why ``name`` (squid or nginx) cannot run here; '' when it can."""
        try:
            module = self.module()
        except Exception as exc:
            return f"cannot import tests/intermediaries: {type(exc).__name__}: {exc}"
        try:
            module.find_binary(name)
        except module.MissingBinary as exc:
            return str(exc)
        return ""

    def squid(self) -> Any:
        """The shared squid (started on first use; from the main thread, see its README)."""
        if self._squid is None:
            self._squid = self.stack.enter_context(self.module().run_squid())
            self.children.append(("squid", self._squid))
        return self._squid

    def nginx(self, label: str, upstream_port: int) -> Any:
        child = self.stack.enter_context(self.module().run_nginx(upstream_port))
        self.children.append((f"{label.replace('/', '-')}-nginx", child))
        return child

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def save_logs(self) -> None:
        for name, child in self.children:
            with contextlib.suppress(OSError):
                self.log_path(name).write_text(child.log_tail(100_000) + "\n")

    def close(self) -> None:
        if self.children:
            self.save_logs()
        self.children_closed += [name for name, _ in self.children]
        self.children = []
        self._squid = None
        self.stack.close()

    def notable(self) -> dict[str, list[str]]:
        """Log lines worth a look: nginx [warn] and worse, squid ERROR/WARNING/FATAL."""
        found: dict[str, list[str]] = {}
        for name in self.children_closed:
            lines = [
                line
                for line in read_lines(self.log_path(name))
                if any(
                    mark in line
                    for mark in ("[warn]", "[error]", "[crit]", "[alert]", "[emerg]", "ERROR")
                )
                or ("WARNING" in line and "squid" in name)
                or "FATAL" in line
            ]
            if lines:
                found[name] = lines
        return found

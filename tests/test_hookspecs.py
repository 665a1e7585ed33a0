"""Meta-tests: every hook is documented where declared, in docs/hooks.md, and tested."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from flyway_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    name
    for name, func in vars(hookspecs).items()
    if inspect.isfunction(func) and hasattr(func, "flyway_spec")
)
IO_MODULES = {"asyncio", "socket", "ssl", "time", "selectors", "aiohttp", "threading"}


def test_hooks_are_declared() -> None:
    assert HOOKS == [
        "add_options",
        "dial_upstream",
        "fallback_for",
        "lifespan",
        "on_event",
        "register_commands",
        "register_listeners",
        "register_transports",
    ]


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc) > 40, f"{name} needs a docstring saying when, what and how"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_docs_with_its_exact_signature(name: str) -> None:
    func = getattr(hookspecs, name)
    signature = str(inspect.signature(func)).replace("'", "")
    docs = (ROOT / "docs" / "hooks.md").read_text()
    assert f"`{name}{signature}`" in docs


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test(name: str) -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{name}\b", tests), f"write test_hook_{name}"


def _impl_functions() -> list[tuple[Path, ast.AsyncFunctionDef | ast.FunctionDef]]:
    found = []
    for path in [*ROOT.glob("flyway_core/**/*.py"), *ROOT.glob("plugins/*/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "hookimpl" in ast.unparse(d) for d in node.decorator_list
            ):
                found.append((path, node))
    return found


def test_no_hook_implementation_is_async() -> None:
    impls = _impl_functions()
    assert impls, "the built-in plugins implement hooks"
    for path, node in impls:
        assert not isinstance(node, ast.AsyncFunctionDef), f"{path}:{node.lineno} {node.name}"


def test_the_protocol_imports_no_io_module() -> None:
    for path in (ROOT / "flyway_core" / "protocol").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in IO_MODULES, f"{path.name} imports {name}"


def test_the_protocol_imports_nothing_of_flyway_outside_itself() -> None:
    allowed = {"flyway_core.protocol"}
    for path in (ROOT / "flyway_core" / "protocol").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] == "flyway_core":
                    assert any(name == a or name.startswith(a + ".") for a in allowed), (
                        f"{path.name} imports {name}"
                    )

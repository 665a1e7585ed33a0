"""The plugin manager and the typed façade the rest of flyway uses to call hooks.

This is the only module that talks to pluggy. Built-in features are plain
plugins listed in ``BUILTIN_PLUGINS``; everything else arrives through the
``flyway`` entry-point group.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import Distribution, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from flyway_core import hookspecs
from flyway_core.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    import click

    from flyway_core.address import Address
    from flyway_core.events import Event
    from flyway_core.interfaces import Dialer, Fallback, Listener, Transport
    from flyway_core.settings import Settings

__all__ = [
    "BUILTIN_PLUGINS",
    "FlywayPluginManager",
    "PluginInfo",
    "Plugins",
    "make_plugin_manager",
]

log = logging.getLogger(__name__)

# name -> "module" or "module:Class" (a class is instantiated once per manager).
BUILTIN_PLUGINS: dict[str, str] = {
    "direct": "flyway_core.direct",
    "forward": "flyway_core.forward",
    "notfound": "flyway_core.notfound",
    "console": "flyway_core.console:ConsoleReporter",
    "listing": "flyway_core.listing",
}

# Packages that provide well-known flags and transports, for "pip install ..." hints.
PACKAGE_HINTS: dict[str, str] = {
    "http": "flyway-http-post",
    "ws": "flyway-websocket",
    "kcp": "flyway-kcp",
}


class FlywayPluginManager(pluggy.PluginManager):
    """A pluggy manager that refuses async hook implementations and remembers origins."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, Distribution] = {}
        self.load_errors: dict[str, str] = {}
        self.builtins: set[str] = set()

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None and inspect.iscoroutinefunction(getattr(plugin, name, None)):
            where = getattr(plugin, "__name__", type(plugin).__name__)
            raise PluginError(
                f"{where}.{name} is 'async def'; hooks are synchronous: return an object "
                "whose methods are async instead"
            )
        return opts


def make_plugin_manager(
    *, entry_points: bool = True, blocked: Iterable[str] = ()
) -> FlywayPluginManager:
    """Return a fresh manager holding the built-ins and, optionally, installed plugins.

    ``FLYWAY_DISABLE_PLUGINS=a,b`` blocks plugins by name; ``FLYWAY_PLUGINS=a,b``
    loads only those entry points; ``FLYWAY_TRACE_HOOKS=1`` traces hook calls.
    """
    pm = FlywayPluginManager()
    for name in (*blocked, *_env_list("FLYWAY_DISABLE_PLUGINS")):
        pm.set_blocked(name)
    for name, target in BUILTIN_PLUGINS.items():
        if not pm.is_blocked(name):
            pm.register(_load_object(target), name=name)
            pm.builtins.add(name)
    if entry_points:
        _load_entry_points(pm)
    pm.check_pending()
    if os.environ.get("FLYWAY_TRACE_HOOKS") == "1":
        pm.trace.root.setwriter(lambda message: sys.stderr.write(str(message)))
        pm.enable_tracing()
    return pm


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _load_object(target: str) -> object:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    if not attr:
        return module
    factory: Callable[[], object] = getattr(module, attr)
    return factory()


def _load_entry_points(pm: FlywayPluginManager) -> None:
    only = set(_env_list("FLYWAY_PLUGINS"))
    for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda ep: ep.name):
        if pm.is_blocked(ep.name) or (only and ep.name not in only):
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except PluginError as exc:
            pm.load_errors[ep.name] = str(exc)
            continue
        except Exception as exc:  # a broken third-party plugin must not take flyway down
            pm.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            log.debug("plugin %s failed to load", ep.name, exc_info=True)
            continue
        if ep.dist is not None:
            pm.distributions[ep.name] = ep.dist


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What ``flyway plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str]
    provides: list[str] = field(default_factory=list)
    builtin: bool = False
    error: str | None = None


class Plugins:
    """The typed façade over the plugin manager: one method per thing the core asks for."""

    def __init__(self, pm: FlywayPluginManager) -> None:
        self.pm = pm

    def _answers(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call each implementation of a hook, yielding (plugin name, answer)."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # in registration order
            answer = impl.function(*(kwargs[arg] for arg in impl.argnames))
            yield impl.plugin_name, answer

    def transports(self, settings: Settings) -> dict[str, Transport]:
        """Every registered transport by name; two with one name is a PluginError."""
        found: dict[str, Transport] = {}
        owners: dict[str, str] = {}
        for plugin, answer in self._answers("register_transports", settings=settings):
            for transport in answer or ():
                if transport.name in found:
                    raise PluginError(
                        f"transport {transport.name!r} is defined by both "
                        f"{owners[transport.name]!r} and {plugin!r}"
                    )
                found[transport.name] = transport
                owners[transport.name] = plugin
        return found

    def transport(self, name: str, settings: Settings, *, flag: str | None = None) -> Transport:
        """Return the transport called ``name`` or fail with the package to install."""
        transports = self.transports(settings)
        if name in transports:
            return transports[name]
        what = f"{flag} needs" if flag else "this needs"
        package = PACKAGE_HINTS.get(name)
        hint = f"pip install {package}" if package else "install a plugin that provides it"
        installed = ", ".join(sorted(transports)) or "none"
        raise ConfigError(
            f"{what} the {name!r} transport: {hint} (installed transports: {installed})"
        )

    def listeners(self, settings: Settings) -> list[Listener]:
        """Every listener the plugins built from the user's options."""
        return [
            listener
            for _, answer in self._answers("register_listeners", settings=settings)
            for listener in answer or ()
        ]

    def fallback(self, spec: str | None, settings: Settings) -> Fallback:
        """Return the fallback handler for ``-P spec``; ConfigError when no plugin takes it."""
        fallback: Fallback | None = self.pm.hook.fallback_for(spec=spec, settings=settings)
        if fallback is None:
            raise ConfigError(
                f"-P {spec}: no installed plugin serves this; for a reverse proxy or "
                "static files: pip install flyway-fallback"
            )
        return fallback

    def dialer(self, target: Address, settings: Settings) -> Dialer:
        """Return the dialer that reaches ``target`` (the built-in direct one by default)."""
        dialer: Dialer | None = self.pm.hook.dial_upstream(target=target, settings=settings)
        if dialer is None:
            raise PluginError("no plugin can dial upstream targets (is 'direct' blocked?)")
        return dialer

    def options(self) -> list[click.Option]:
        """Every command-line option plugins add."""
        return [opt for _, answer in self._answers("add_options") for opt in answer or ()]

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins attach sub-commands to ``cli``."""
        self.pm.hook.register_commands(cli=cli)

    def lifespans(self, settings: Settings) -> list[AbstractAsyncContextManager[None]]:
        """The context managers plugins want held open while flyway runs."""
        return [cm for _, cm in self._answers("lifespan", settings=settings) if cm is not None]

    def emit(self, event: Event) -> None:
        """Tell every observer about ``event``; an observer that raises is logged and skipped."""
        for impl in self.pm.hook.on_event.get_hookimpls():
            try:
                impl.function(event)
            except Exception:  # observers must never break the data path
                log.exception("observer %s failed on %r", impl.plugin_name, event)

    def describe(self, settings: Settings) -> dict[str, PluginInfo]:
        """Describe every registered plugin (and those that failed to load)."""
        infos: dict[str, PluginInfo] = {}
        transports: dict[str, list[str]] = {}
        for plugin, answer in self._answers("register_transports", settings=settings):
            for t in answer or ():
                transports.setdefault(plugin, []).append(
                    f"{t.name} ({t.flag})" if t.flag else t.name
                )
        for name, registered in self.pm.list_name_plugin():
            if name is None or registered is None:
                continue
            callers = self.pm.get_hookcallers(registered) or ()
            hooks = sorted(caller.name for caller in callers)
            dist = self.pm.distributions.get(name)
            infos[name] = PluginInfo(
                name=name,
                distribution=dist.metadata["Name"] if dist else "flyway-core",
                version=dist.version if dist else _core_version(),
                hooks=hooks,
                provides=_provides(hooks, transports.get(name, [])),
                builtin=name in self.pm.builtins,
            )
        for name, error in self.pm.load_errors.items():
            infos[name] = PluginInfo(name, "?", "?", [], [], False, error)
        return infos


def _provides(hooks: Sequence[str], transports: list[str]) -> list[str]:
    provides = [f"transports: {', '.join(transports)}"] if transports else []
    labels = {
        "register_listeners": "listeners",
        "fallback_for": "fallback",
        "dial_upstream": "dialer",
        "on_event": "observer",
        "register_commands": "commands",
        "add_options": "options",
    }
    return provides + [label for hook, label in labels.items() if hook in hooks]


def _core_version() -> str:
    from flyway_core import __version__

    return __version__

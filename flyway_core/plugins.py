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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import Distribution, entry_points
from typing import TYPE_CHECKING, Any, cast

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
    "FLAGS",
    "TRANSPORT_PACKAGES",
    "FlagProvider",
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


@dataclass(frozen=True, slots=True)
class FlagProvider:
    """A goflyway flag, what it selects, and the package that provides it."""

    flag: str
    kind: str  # "transport", "listener" or "fallback"
    name: str  # the transport's key, or the plugin's name
    package: str


# goflyway's flags and the packages that provide them: the one table behind every
# "pip install ..." hint, and behind the placeholders of flags whose plugin is missing.
FLAGS: tuple[FlagProvider, ...] = (
    FlagProvider("-w", "transport", "ws", "flyway-websocket"),
    FlagProvider("-K", "transport", "kcp", "flyway-kcp"),
    FlagProvider("-D", "listener", "socks5", "flyway-socks5"),
    FlagProvider("-P", "fallback", "fallback", "flyway-fallback"),
)
TRANSPORT_PACKAGES: dict[str, str] = {
    "http": "flyway-http-post",
    **{f.name: f.package for f in FLAGS if f.kind == "transport"},
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
    """The typed façade over the plugin manager: one method per thing the core asks for.

    Every hook is called through ``pm.hook`` (so hook wrappers and pluggy's
    tracing see every call); ``register_transports`` is called once per settings
    and its answers kept.
    """

    def __init__(self, pm: FlywayPluginManager) -> None:
        self.pm = pm
        self._transports: tuple[Settings, dict[str, Transport]] | None = None
        self._observers: tuple[tuple[Any, ...], list[Callable[..., object]]] | None = None

    def transports(self, settings: Settings) -> dict[str, Transport]:
        """Every registered transport by name; two with one name is a PluginError."""
        if self._transports is not None and self._transports[0] is settings:
            return self._transports[1]
        found: dict[str, Transport] = {}
        answers = self.pm.hook.register_transports(settings=settings)
        for answer in reversed(answers):  # pluggy answers last-registered first
            for transport in answer or ():
                if transport.name in found:
                    raise PluginError(self._conflict(transport.name, settings))
                found[transport.name] = transport
        self._transports = (settings, found)
        return found

    def _conflict(self, name: str, settings: Settings) -> str:
        owners = [plugin for plugin, t in self._transport_owners(settings) if t.name == name]
        return f"transport {name!r} is defined by both " + " and ".join(map(repr, owners))

    def _transport_owners(self, settings: Settings) -> list[tuple[str, Transport]]:
        """Ask each plugin alone what it registers: only on a conflict, or for the listing."""
        owners: list[tuple[str, Transport]] = []
        for impl in self.pm.hook.register_transports.get_hookimpls():
            answer = cast("Iterable[Transport] | None", impl.function(settings))
            owners += [(impl.plugin_name, transport) for transport in answer or ()]
        return owners

    def transport(self, name: str, settings: Settings, *, flag: str | None = None) -> Transport:
        """Return the transport called ``name`` or fail with the package to install.

        ``auto`` is the core's own: WebSocket when it passes, else HTTP POST, made of
        whichever of the two are installed (``flyway_core.auto``).
        """
        transports = self.transports(settings)
        if name in transports:
            return transports[name]
        if name == "auto" and "http" in transports:
            from flyway_core.auto import AutoTransport

            return AutoTransport(transports.get("ws"), transports["http"])
        what = f"{flag} needs" if flag else "this needs"
        package = TRANSPORT_PACKAGES.get("http" if name == "auto" else name)
        hint = f"pip install {package}" if package else "install a plugin that provides it"
        installed = ", ".join(sorted(transports)) or "none"
        raise ConfigError(
            f"{what} the {name!r} transport: {hint} (installed transports: {installed})"
        )

    def listeners(self, settings: Settings) -> list[Listener]:
        """Every listener the plugins built from the user's options."""
        answers = self.pm.hook.register_listeners(settings=settings)
        return [listener for answer in reversed(answers) for listener in answer or ()]

    def fallback(self, spec: str | None, settings: Settings) -> Fallback:
        """Return the fallback handler for ``-P spec``; ConfigError when no plugin takes it."""
        fallback: Fallback | None = self.pm.hook.fallback_for(spec=spec, settings=settings)
        if fallback is None:
            package = next(f.package for f in FLAGS if f.flag == "-P")
            raise ConfigError(
                f"-P {spec}: no installed plugin serves this; for a reverse proxy or "
                f"static files: pip install {package}"
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
        answers = self.pm.hook.add_options()
        return [opt for answer in reversed(answers) for opt in answer or ()]

    def add_commands(self, cli: click.Group) -> None:
        """Let plugins attach sub-commands to ``cli``."""
        self.pm.hook.register_commands(cli=cli)

    def lifespans(self, settings: Settings) -> list[AbstractAsyncContextManager[None]]:
        """The context managers plugins want held open while flyway runs."""
        answers = self.pm.hook.lifespan(settings=settings)
        return [cm for cm in reversed(answers) if cm is not None]

    def emit(self, event: Event) -> None:
        """Tell every observer about ``event``; an observer that raises is logged and skipped.

        Each observer is called through a pluggy caller of its own (tracing sees it),
        so one that raises cannot keep the event from the others.
        """
        impls = tuple(self.pm.hook.on_event.get_hookimpls())
        if self._observers is None or self._observers[0] != impls:
            self._observers = (impls, self._observer_callers(impls))  # plugins came or went
        for observe in self._observers[1]:
            try:
                observe(event=event)
            except Exception:  # observers must never break the data path
                log.exception("observer failed on %r", event)

    def _observer_callers(self, impls: tuple[Any, ...]) -> list[Callable[..., object]]:
        """One caller per observer, each keeping every wrapper, in pluggy's call order."""
        observers = [impl for impl in impls if not (impl.wrapper or impl.hookwrapper)]
        return [
            self.pm.subset_hook_caller(
                "on_event",
                remove_plugins=[o.plugin for o in observers if o.plugin is not impl.plugin],
            )
            for impl in reversed(observers)  # pluggy calls the last registered first
        ]

    def describe(self, settings: Settings) -> dict[str, PluginInfo]:
        """Describe every registered plugin (and those that failed to load)."""
        infos: dict[str, PluginInfo] = {}
        transports: dict[str, list[str]] = {}
        for owner, t in self._transport_owners(settings):
            transports.setdefault(owner, []).append(f"{t.name} ({t.flag})" if t.flag else t.name)
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

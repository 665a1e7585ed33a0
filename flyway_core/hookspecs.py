"""Every hook flyway calls: the complete, documented extension surface.

Hooks are synchronous. They hand back objects; the objects do the async work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    import click

    from flyway_core.address import Address
    from flyway_core.events import Event
    from flyway_core.interfaces import Dialer, Fallback, Listener, Transport
    from flyway_core.settings import Settings

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "flyway"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- contributions: called once at startup, every answer is kept ----------------------


@hookspec
def register_transports(settings: Settings) -> Iterable[Transport]:
    """Offer transports: each dials (client) and serves (server) carriers for sealed records.

    Called once at startup. Each transport is keyed by ``transport.name``; two
    plugins claiming one name stop startup with :class:`PluginError`. The server
    serves every registered transport on its one port; the client dials the one
    the user picked (``-w``, ``-K``, ``--transport NAME``). Built-in: none.
    """


@hookspec
def register_listeners(settings: Settings) -> Iterable[Listener]:
    """Offer local entry points whose connections become tunnel streams.

    Called once at startup; return an empty iterable when your options were not
    given. Any listener makes flyway a client. Built-in: ``forward`` (``-L``).
    """


@hookspec(firstresult=True)
def fallback_for(spec: str | None, settings: Settings) -> Fallback | None:
    """Return the handler for HTTP requests that are not tunnel traffic, if ``spec`` is yours.

    ``spec`` is the ``-P`` value (None when absent). The first non-None answer
    wins. Built-in: ``notfound`` (trylast), a plain 404 page, for ``spec`` None.
    """


@hookspec
def add_options() -> Iterable[click.Option]:
    """Add command-line options; start each long name with your plugin's name.

    Called while the command line is built. Parsed values reach every hook
    through ``settings.option(name)``. Built-in: none.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Attach sub-commands to the ``flyway`` group with ``@cli.command()``.

    Built-in: ``plugins`` (the plugin listing).
    """


# --- decisions: first non-None answer wins --------------------------------------------


@hookspec(firstresult=True)
def dial_upstream(target: Address, settings: Settings) -> Dialer | None:
    """Decide how the server reaches ``target``; return None to let others decide.

    Called on the server for every stream the policy (``settings.policy``) admits;
    with any rule, ``connect`` gets the checked addresses one at a time. Built-in:
    ``direct``, a plain TCP dialer registered ``trylast``, so it answers only when
    no other plugin did.
    """


# --- lifecycle and observation: return values ignored ---------------------------------


@hookspec
def lifespan(settings: Settings) -> AbstractAsyncContextManager[None] | None:
    """Return a context manager to hold open while flyway runs, or None.

    All are entered, in registration order, before the server or listeners
    start, and exited after they stop. Built-in: the console reporter's live line.
    """


@hookspec
def on_event(event: Event) -> None:
    """Observe a tunnel event (see :mod:`flyway_core.events`). Return quickly; never raise.

    Every implementation sees every event. Built-in: the rich console reporter.
    """

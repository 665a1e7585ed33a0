"""The ``flyway`` command line: goflyway's flags, rich output, one readable line per error.

click builds it: it takes goflyway's forms as they are (``flyway :8100 -p PW``,
``flyway -wL 1080::1080 server:8100 -p PW``, bundled short flags included) and
lets plugins add options and sub-commands as datasette and llm plugins do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from flyway_core import __version__
from flyway_core.address import Address, ServerURL
from flyway_core.allocator import tune_allocator
from flyway_core.errors import ConfigError, FlywayError
from flyway_core.passwords import weakness
from flyway_core.plugins import FLAGS, TRANSPORT_PACKAGES, Plugins, make_plugin_manager
from flyway_core.policy import Policy
from flyway_core.protocol import DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW, Cipher
from flyway_core.rlimits import raise_open_files
from flyway_core.settings import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    FrontDoorLimits,
    ServerLimits,
    Settings,
)
from flyway_core.tls import server_ssl

__all__ = ["build_cli", "main"]

EXAMPLES = f"""\b
Examples:
  serve (every installed transport on one port):
    flyway :{DEFAULT_PORT} -p PASSWORD
  forward local port 2222 to the server's ssh:
    flyway -L 2222:127.0.0.1:22 server:{DEFAULT_PORT} -p PASSWORD
  the same over WebSocket, to the server's own port 80:
    flyway -w -L 8080::80 server:{DEFAULT_PORT} -p PASSWORD
  keep the password out of `ps`:
    FLYWAY_PASSWORD=secret flyway -L 5432 server:{DEFAULT_PORT}
"""

# The core's own transport flags: parameter name -> (transport, flag). Which package
# provides each transport is in plugins.FLAGS / TRANSPORT_PACKAGES.
_TRANSPORT_FLAGS = {"websocket": ("ws", "-w"), "kcp": ("kcp", "-K"), "auto": ("auto", "--auto")}
_LIMITS = ServerLimits()  # the defaults, for --help
_DOOR = FrontDoorLimits()
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("flyway")


def _fail(message: str, code: int) -> NoReturn:
    stderr.print(f"[bold red]flyway:[/] {message}")
    sys.exit(code)


def _window(value: int) -> int:
    if not MIN_WINDOW <= value <= MAX_WINDOW:
        raise click.BadParameter(f"must be between {MIN_WINDOW} and {MAX_WINDOW} bytes")
    return value


def _epilog(commands: Mapping[str, click.Command]) -> str:
    lines = [f"  flyway {name:<10} {cmd.get_short_help_str(70)}" for name, cmd in commands.items()]
    return EXAMPLES + ("\b\nSub-commands:\n" + "\n".join(sorted(lines)) if lines else "")


def build_run_command(
    plugins: Plugins, commands: Mapping[str, click.Command] | None = None
) -> click.Command:
    """The main command: a server, or (with any listener option) a client."""

    @click.command(
        name="flyway",
        epilog=_epilog(commands or {}),
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.argument("address", required=False, metavar="[ADDRESS]")
    @click.option(
        "-p", "--password", envvar="FLYWAY_PASSWORD", help="Shared password (or FLYWAY_PASSWORD)."
    )
    @click.option("-w", "websocket", is_flag=True, help="Client: carry the tunnel over WebSocket.")
    @click.option("-K", "kcp", is_flag=True, help="Client: carry the tunnel over KCP (UDP).")
    @click.option(
        "--auto",
        "auto",
        is_flag=True,
        help="Client: WebSocket when it passes the path, else HTTP POST, checked at connect.",
    )
    @click.option(
        "--transport", metavar="NAME", help="Client: use the transport NAME (see `flyway plugins`)."
    )
    @click.option(
        "-P",
        "fallback",
        metavar="SPEC",
        help="Server: what non-tunnel visitors see (default: a 404 page).",
    )
    @click.option(
        "-W",
        "window",
        type=int,
        default=DEFAULT_WINDOW,
        show_default=True,
        callback=lambda c, p, v: _window(v),
        help="Per-stream window: bytes in flight or buffered for one connection.",
    )
    @click.option(
        "-t",
        "timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        show_default=True,
        help="Seconds of silence before a session counts as dead (keepalives every third).",
    )
    @click.option("--cert", metavar="FILE", help="Server: TLS certificate (PEM) for the port.")
    @click.option("--key", metavar="FILE", help="Server: TLS private key (PEM) for --cert.")
    @click.option("--ca", metavar="FILE", help="Client: trust this CA for an https:// server.")
    @click.option("--insecure", is_flag=True, help="Client: do not verify an https:// server.")
    @click.option(
        "--cipher",
        type=click.Choice([c.label for c in Cipher]),
        default=Cipher.AES_256_GCM.label,
        show_default=True,
        help="Client: record cipher.",
    )
    @click.option(
        "-v",
        "verbose",
        count=True,
        help="-v: a line per connection; -vv: live traffic and tracebacks.",
    )
    @click.option("-q", "quiet", is_flag=True, help="Errors only.")
    @click.option(
        "--max-sessions",
        type=click.IntRange(1),
        default=_LIMITS.sessions,
        show_default=True,
        help="Server: sessions in all; more get a sealed 'busy' Close.",
    )
    @click.option(
        "--max-sessions-per-address",
        type=click.IntRange(1),
        default=_LIMITS.sessions_per_address,
        show_default=True,
        help="Server: sessions from one client address.",
    )
    @click.option(
        "--max-streams",
        type=click.IntRange(1),
        default=_LIMITS.streams_per_session,
        show_default=True,
        help="Server: streams open at once in one session; more are reset as 'busy'.",
    )
    @click.option(
        "--header-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=_DOOR.header_timeout,
        show_default=True,
        help="Server: seconds a client has to send a request head (nginx client_header_timeout).",
    )
    @click.option(
        "--body-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=_DOOR.body_timeout,
        show_default=True,
        help="Server: seconds a request body may pause between reads (client_body_timeout).",
    )
    @click.option(
        "--keepalive-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=_DOOR.keepalive_timeout,
        show_default=True,
        help="Server: seconds an idle kept-alive connection stays open.",
    )
    @click.option(
        "--max-connections",
        type=click.IntRange(1),
        default=_DOOR.max_connections,
        show_default=True,
        help="Server: connections at once; past it the longest idle, or slowest, is closed.",
    )
    @click.option(
        "--allow",
        multiple=True,
        metavar="RULE",
        help="Server: let clients reach only what a RULE matches: HOST, *.DOMAIN, CIDR or *, "
        "with :PORT or :LOW-HIGH (repeatable).",
    )
    @click.option(
        "--deny",
        multiple=True,
        metavar="RULE",
        help="Server: keep clients off what RULE matches; wins over --allow (repeatable).",
    )
    @click.option(
        "--deny-private",
        is_flag=True,
        help="Server: keep clients off the server's loopback, LAN and other non-global addresses.",
    )
    @click.option(
        "--disable-plugin",
        multiple=True,
        metavar="NAME",
        help="Do not load plugin NAME (repeatable; or FLYWAY_DISABLE_PLUGINS).",
    )
    @click.version_option(
        __version__, "--version", prog_name="flyway", message="%(prog)s %(version)s"
    )
    @click.pass_context
    def run(ctx: click.Context, /, **params: Any) -> None:
        core = {
            "address",
            "password",
            "websocket",
            "kcp",
            "auto",
            "transport",
            "fallback",
            "window",
            "timeout",
            "cipher",
            "verbose",
            "quiet",
            "disable_plugin",
            "max_sessions",
            "max_sessions_per_address",
            "max_streams",
            "header_timeout",
            "body_timeout",
            "keepalive_timeout",
            "max_connections",
            "allow",
            "deny",
            "deny_private",
        }
        settings = Settings(
            password=params["password"] or "",
            window=params["window"],
            idle_timeout=params["timeout"],
            cipher=params["cipher"],
            verbosity=-1 if params["quiet"] else params["verbose"],
            limits=ServerLimits(
                sessions=params["max_sessions"],
                sessions_per_address=params["max_sessions_per_address"],
                streams_per_session=params["max_streams"],
            ),
            front_door=FrontDoorLimits(
                header_timeout=params["header_timeout"],
                body_timeout=params["body_timeout"],
                keepalive_timeout=params["keepalive_timeout"],
                max_connections=params["max_connections"],
            ),
            policy=Policy.parse(params["allow"], params["deny"], params["deny_private"]),
            options={k: v for k, v in params.items() if k not in core},
        )
        _setup_logging(settings.verbosity)
        listeners = plugins.listeners(settings)
        if listeners:
            _run_client(plugins, settings, params, listeners)
        else:
            _run_server(plugins, settings, params)

    options = plugins.options()
    run.params.extend(options)
    taken = {name for option in [*run.params, *options] for name in option.opts}
    run.params.extend(_missing_plugin_flags(taken))
    return run


def _missing_plugin_flags(taken: set[str]) -> list[click.Option]:
    """Placeholders for goflyway's listener flags whose plugin is not installed.

    ``-D 1080`` without flyway-socks5 then says which package to install, as ``-K``
    does for its transport, instead of click's "no such option".
    """
    placeholders = []
    for provider in FLAGS:
        if provider.kind != "listener" or provider.flag in taken:
            continue

        def refuse(
            ctx: click.Context, param: click.Parameter, value: Any, p: Any = provider
        ) -> Any:
            if value:
                raise ConfigError(f"{p.flag} needs the {p.name!r} plugin: pip install {p.package}")
            return value

        placeholders.append(
            click.Option(
                [provider.flag, f"_missing_{provider.name}"],
                multiple=True,
                hidden=True,
                expose_value=False,
                callback=refuse,
            )
        )
    return placeholders


def _setup_logging(verbosity: int) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbosity >= 2 else logging.WARNING
    handler = RichHandler(console=stderr, show_path=False, rich_tracebacks=verbosity >= 2)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    # aiohttp logs what peers do wrong (bad requests, aborted bodies), with tracebacks;
    # the front door reports those itself as counted events, so aiohttp speaks only at -vv
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL if verbosity < 2 else logging.DEBUG)


def _pick_transport(plugins: Plugins, settings: Settings, params: dict[str, Any]) -> Any:
    chosen = [(name, flag) for key, (name, flag) in _TRANSPORT_FLAGS.items() if params.get(key)]
    if params["transport"]:
        chosen.append((params["transport"], "--transport"))
    installed = plugins.transports(settings)
    for transport in installed.values():  # a plugin's own long flag selects its transport
        flag = transport.flag or ""
        if flag.startswith("--") and settings.option(flag[2:]):
            chosen.append((transport.name, flag))
    if len(chosen) > 1:
        raise ConfigError("choose one transport: " + ", ".join(flag for _, flag in chosen))
    if chosen:
        name, flag = chosen[0]
        return plugins.transport(name, settings, flag=flag)
    if "http" in installed:
        return installed["http"]
    if "ws" in installed:
        if settings.verbosity >= 0:
            stderr.print(
                "[dim]note: the HTTP POST transport is not installed "
                f"(pip install {TRANSPORT_PACKAGES['http']}); using WebSocket[/]"
            )
        return installed["ws"]
    return plugins.transport("http", settings)


def _run_client(
    plugins: Plugins, settings: Settings, params: dict[str, Any], listeners: list[Any]
) -> None:
    if not params["address"]:
        raise ConfigError("a client needs the server's address, like server:8100")
    if not settings.password:
        raise ConfigError("a password is needed: -p PASSWORD or FLYWAY_PASSWORD")
    server = ServerURL.parse(params["address"], default_port=DEFAULT_PORT)
    transport = _pick_transport(plugins, settings, params)

    from flyway_core.runtime import run_client

    def started(tunnel: Any, bound: list[tuple[Any, Address]]) -> None:
        if settings.verbosity < 0:
            return
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]server[/]", f"{server} over {transport.name}")
        for listener, address in bound:
            table.add_row(
                "[bold]listening[/]", f"{address}  →  {getattr(listener, 'target', listener)}"
            )
        table.add_row(
            "[bold]window[/]",
            f"{settings.window} bytes per stream, idle timeout {settings.idle_timeout:g}s",
        )
        stderr.print(Panel(table, title=f"flyway {__version__} client", expand=False))
        _warn_if_weak(settings)

    _run(run_client(plugins, settings, server, transport, listeners, started=started))


def _run_server(plugins: Plugins, settings: Settings, params: dict[str, Any]) -> None:
    listen = Address.parse(params["address"] or f":{DEFAULT_PORT}", default_port=DEFAULT_PORT)
    generated = not settings.password
    if generated:
        settings = Settings(**{**_fields(settings), "password": secrets.token_urlsafe(18)})

    from flyway_core.runtime import run_server

    def started(server: Any) -> None:
        if settings.verbosity < 0 and not generated:
            return
        bound = server.bound
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]listening[/]", f"{bound}")
        table.add_row(
            "[bold]transports[/]", ", ".join(sorted(server.transports)) or "none installed"
        )
        table.add_row("[bold]fallback[/]", str(server.fallback_handler))
        if not settings.policy.allows_all:
            table.add_row("[bold]policy[/]", str(settings.policy))
        table.add_row(
            "[bold]window[/]",
            f"{settings.window} bytes per stream, idle timeout {settings.idle_timeout:g}s",
        )
        if generated:
            host = listen.host or socket.gethostname()
            table.add_row("[bold]password[/]", f"[bold yellow]{settings.password}[/] (generated)")
            table.add_row(
                "[bold]client[/]",
                f"flyway -L 8080:127.0.0.1:80 {Address(host, bound.port)} -p {settings.password}",
            )
        stderr.print(Panel(table, title=f"flyway {__version__} server", expand=False))
        if not generated:
            _warn_if_weak(settings)

    ssl_context = server_ssl(settings)
    _run(
        run_server(
            plugins,
            settings,
            listen,
            fallback_spec=params["fallback"],
            ssl_context=ssl_context,
            started=started,
        )
    )


def _warn_if_weak(settings: Settings) -> None:
    """One line when the chosen password is easy to guess offline from recorded traffic."""
    why = weakness(settings.password)
    if why is not None and settings.verbosity >= 0:
        stderr.print(
            f"[yellow]flyway: warning: the password is weak: {why}. Anyone who records the "
            "traffic can test guesses offline; run the server without -p for a generated one.[/]"
        )


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__slots__}


def _run(coro: Any) -> None:
    """Run until done, Ctrl-C or SIGTERM (both exit 0 promptly)."""

    async def supervise() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    tune_allocator()
    raise_open_files()
    try:
        import uvloop
    except ImportError:
        asyncio.run(supervise())
    else:
        uvloop.run(supervise())


def build_cli(plugins: Plugins) -> click.Group:
    """The group holding sub-commands (``plugins``, and any a plugin registers)."""

    @click.group(
        name="flyway",
        context_settings={"help_option_names": ["-h", "--help"], "obj": plugins},
    )
    def cli() -> None:
        """flyway sub-commands (each reaches the plugins as ``ctx.obj``)."""

    plugins.add_commands(cli)
    return cli


def _blocked_from(argv: Sequence[str]) -> list[str]:
    blocked = []
    for i, arg in enumerate(argv):
        if arg == "--disable-plugin" and i + 1 < len(argv):
            blocked.append(argv[i + 1])
        elif arg.startswith("--disable-plugin="):
            blocked.append(arg.split("=", 1)[1])
    return blocked


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        flyway = [e for e in exc.exceptions if isinstance(_unwrap(e), FlywayError)]
        exc = _unwrap(flyway[0]) if flyway else exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``flyway`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-vv", "-vvv") for a in args) or os.environ.get("FLYWAY_DEBUG") == "1"
    try:
        plugins = Plugins(make_plugin_manager(blocked=_blocked_from(args)))
        for name, error in plugins.pm.load_errors.items():
            stderr.print(
                f"[yellow]flyway: plugin {name!r} failed to load and is skipped: {error}[/]"
            )
        cli = build_cli(plugins)
        if args and args[0] in cli.commands:
            cli.main(args, prog_name="flyway", standalone_mode=True)
        else:
            run = build_run_command(plugins, cli.commands)
            run.main(args, prog_name="flyway", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(0)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        inner = _unwrap(exc)
        if verbose:
            stderr.print_exception()
        if isinstance(inner, ConfigError):
            _fail(str(inner), 2)
        if isinstance(inner, FlywayError):
            _fail(str(inner), 1)
        if isinstance(inner, KeyboardInterrupt):
            sys.exit(0)
        _fail(f"unexpected {type(inner).__name__}: {inner} (run with -vv for details)", 1)

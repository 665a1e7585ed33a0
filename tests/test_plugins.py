"""Plugin discovery, blocking, duplicates, listing, and one behaviour test per hook."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flyway_core import Address, ConfigError, PluginError, Settings, TargetError, hookimpl
from flyway_core import plugins as plugins_module
from flyway_core.cli import build_cli, main
from flyway_core.events import Event, StreamDown, StreamUp
from flyway_core.interfaces import Carrier, Transport
from flyway_core.memory import MemoryTransport
from flyway_core.notfound import NotFoundFallback
from flyway_core.plugins import FlywayPluginManager, Plugins, make_plugin_manager
from flyway_core.protocol import ResetReason
from flyway_core.testing import joined_tunnel, serving


class _Transport(Transport):
    def __init__(self, name: str, flag: str | None = None) -> None:
        self.name = name
        self.flag = flag

    async def dial(self, *args: object) -> Carrier:
        raise NotImplementedError

    def serve(self, door: object) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def test_built_ins_are_ordinary_plugins(pm: FlywayPluginManager) -> None:
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"direct", "forward", "notfound", "console", "listing"} <= names
    assert pm.builtins == {"direct", "forward", "notfound", "console", "listing"}


def test_a_fresh_manager_each_time() -> None:
    assert make_plugin_manager(entry_points=False) is not make_plugin_manager(entry_points=False)


def test_a_blocked_builtin_is_not_loaded() -> None:
    pm = make_plugin_manager(entry_points=False, blocked=["forward"])
    assert not pm.has_plugin("forward")


def test_the_environment_blocks_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWAY_DISABLE_PLUGINS", "forward, console")
    pm = make_plugin_manager(entry_points=False)
    assert not pm.has_plugin("forward")
    assert not pm.has_plugin("console")


def test_entry_point_plugins_are_discovered() -> None:
    pm = make_plugin_manager()
    assert pm.has_plugin("websocket")
    assert pm.distributions["websocket"].metadata["Name"] == "flyway-websocket"


def test_only_the_named_entry_points_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWAY_PLUGINS", "nothing-by-this-name")
    assert not make_plugin_manager().has_plugin("websocket")


def test_an_async_hook_implementation_is_refused(pm: FlywayPluginManager) -> None:
    class AsyncPlugin:
        @hookimpl
        async def on_event(self, event: Event) -> None:
            pass

    with pytest.raises(PluginError, match="async def"):
        pm.register(AsyncPlugin(), name="async")


def test_a_misspelled_hook_fails_at_startup(pm: FlywayPluginManager) -> None:
    class Typo:
        @hookimpl
        def register_transport(self, settings: Settings) -> list[object]:
            return []

    pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="unknown hook"):
        pm.check_pending()


def test_hook_register_transports(plugins: Plugins, pm: FlywayPluginManager) -> None:
    class One:
        @hookimpl
        def register_transports(self, settings: Settings) -> list[_Transport]:
            return [_Transport("one", "-1")]

    pm.register(One(), name="one-plugin")
    assert list(plugins.transports(Settings())) == ["one"]
    assert plugins.describe(Settings())["one-plugin"].provides == ["transports: one (-1)"]


def test_two_transports_with_one_name_name_both_plugins(
    plugins: Plugins, pm: FlywayPluginManager
) -> None:
    for owner in ("alpha", "beta"):

        class Plugin:
            @hookimpl
            def register_transports(self, settings: Settings) -> list[_Transport]:
                return [_Transport("same")]

        pm.register(Plugin(), name=owner)
    with pytest.raises(PluginError, match="'alpha' and 'beta'"):
        plugins.transports(Settings())


def test_a_missing_transport_names_the_package(plugins: Plugins) -> None:
    with pytest.raises(
        ConfigError, match="-w needs the 'ws' transport: pip install flyway-websocket"
    ):
        plugins.transport("ws", Settings(), flag="-w")


def test_hook_register_listeners(plugins: Plugins) -> None:
    assert plugins.listeners(Settings()) == []
    (listener,) = plugins.listeners(Settings(options={"forward": ("1080::22",)}))
    assert str(listener) == "forward 127.0.0.1:1080 -> localhost:22"


def test_hook_fallback_for(plugins: Plugins, pm: FlywayPluginManager) -> None:
    class Site:
        async def handle(self, request: object) -> object:
            raise NotImplementedError

    site = Site()

    class Plugin:
        @hookimpl
        def fallback_for(self, spec: str | None, settings: Settings) -> Site | None:
            return site if spec == "site" else None

    pm.register(Plugin(), name="site")
    assert plugins.fallback("site", Settings()) is site
    assert isinstance(plugins.fallback(None, Settings()), NotFoundFallback)
    with pytest.raises(ConfigError, match="pip install flyway-fallback"):
        plugins.fallback("http://example.invalid", Settings())


def test_hook_add_options(pm: FlywayPluginManager, plugins: Plugins) -> None:
    class Plugin:
        @hookimpl
        def add_options(self) -> list[click.Option]:
            return [click.Option(["--demo-level"], type=int, default=3)]

    pm.register(Plugin(), name="demo")
    names = [opt.name for opt in plugins.options()]
    assert "demo_level" in names
    assert "forward" in names  # the built-in -L
    assert Settings(options={"demo_level": 5}).option("demo-level") == 5


def test_hook_register_commands(pm: FlywayPluginManager, plugins: Plugins) -> None:
    class Plugin:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def hello() -> None:
                click.echo("hello from a plugin")

    pm.register(Plugin(), name="hello")
    result = CliRunner().invoke(build_cli(plugins), ["hello"])
    assert result.output == "hello from a plugin\n"


def test_hook_lifespan(pm: FlywayPluginManager, plugins: Plugins) -> None:
    seen: list[str] = []

    class Plugin:
        @hookimpl
        def lifespan(self, settings: Settings) -> contextlib.AbstractAsyncContextManager[None]:
            @contextlib.asynccontextmanager
            async def held() -> AsyncIterator[None]:
                seen.append("enter")
                yield
                seen.append("exit")

            return held()

    pm.register(Plugin(), name="held")

    async def use() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for cm in plugins.lifespans(Settings()):
                await stack.enter_async_context(cm)
            seen.append("running")

    asyncio.run(use())
    assert seen == ["enter", "running", "exit"]


async def test_hook_on_event(echo_server: Address, settings: Settings) -> None:
    events: list[Event] = []

    class Recorder:
        @hookimpl
        def on_event(self, event: Event) -> None:
            events.append(event)

    class Broken:
        @hookimpl
        def on_event(self, event: Event) -> None:
            raise RuntimeError("observers that raise are skipped")

    pm = make_plugin_manager(entry_points=False, blocked=["console"])
    pm.register(Recorder(), name="recorder")
    pm.register(Broken(), name="broken")
    async with joined_tunnel(settings, Plugins(pm)) as tunnel, asyncio.timeout(5):
        async with tunnel.open_stream(echo_server) as stream:
            await stream.write(b"ping")
            stream.end()
            assert await stream.read() == b"ping"
    await asyncio.sleep(0.05)
    ups = [e for e in events if isinstance(e, StreamUp)]
    downs = [e for e in events if isinstance(e, StreamDown)]
    assert {e.target for e in ups} == {echo_server}
    assert any(e.sent == 4 and e.received == 4 for e in downs)


async def test_hook_dial_upstream(echo_server: Address, settings: Settings) -> None:
    class Deny:
        """An ACL plugin: answers before the built-in direct dialer."""

        @hookimpl
        def dial_upstream(self, target: Address, settings: Settings) -> Deny | None:
            return self if target.port == echo_server.port else None

        async def connect(self, target: Address, protocol: object) -> None:
            raise TargetError("blocked by policy", reason=ResetReason.NOT_ALLOWED)

    pm = make_plugin_manager(entry_points=False)
    pm.register(Deny(), name="deny")
    async with joined_tunnel(settings, Plugins(pm)) as tunnel, asyncio.timeout(5):
        async with tunnel.open_stream(echo_server) as stream:
            with pytest.raises(TargetError, match="blocked by policy") as caught:
                await stream.accepted()
            assert caught.value.reason == ResetReason.NOT_ALLOWED


def test_plugins_lists_installed_plugins_with_versions() -> None:
    plugins = Plugins(make_plugin_manager())
    result = CliRunner().invoke(build_cli(plugins), ["plugins", "--json"])
    listed = {p["name"]: p for p in __import__("json").loads(result.output)}
    assert listed["websocket"]["distribution"] == "flyway-websocket"
    assert listed["websocket"]["provides"] == ["transports: ws (-w)"]
    assert "forward" not in listed  # built-ins only with --all
    result = CliRunner().invoke(build_cli(plugins), ["plugins", "--all", "--json"])
    assert "forward" in {p["name"] for p in __import__("json").loads(result.output)}


def test_memory_transport_is_a_transport() -> None:
    from flyway_core.interfaces import Transport

    assert isinstance(MemoryTransport(door=None), Transport)  # type: ignore[arg-type]


def test_a_plugin_that_raises_on_load_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "flyway_broken_example.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = plugins_module.entry_points

    def with_broken(*, group: str) -> list[EntryPoint]:
        broken = EntryPoint(name="broken", value="flyway_broken_example", group=group)
        return [*real(group=group), broken]

    monkeypatch.setattr(plugins_module, "entry_points", with_broken)
    pm = make_plugin_manager()
    assert pm.load_errors == {"broken": "RuntimeError: boom at import"}
    assert pm.has_plugin("websocket")  # the others still load

    with pytest.raises(SystemExit) as exited:
        main(["plugins"])
    assert exited.value.code == 0
    err = capsys.readouterr().err
    assert "plugin 'broken' failed to load and is skipped: RuntimeError: boom at import" in err


def test_a_client_only_transport_is_neither_served_nor_listed_by_the_server(
    plugins: Plugins, settings: Settings
) -> None:
    from flyway_core.server import FlywayServer

    chooser = _Transport("chooser", "--chooser")
    chooser.client_only = True
    server = FlywayServer(
        Address("127.0.0.1", 0),
        settings,
        transports={"chooser": chooser, "real": _Transport("real")},
        fallback=plugins.fallback(None, settings),
        dialer_for=lambda target: plugins.dialer(target, settings),
        emit=lambda event: None,
    )
    assert list(server.transports) == ["real"]


async def test_a_dialer_that_crashes_resets_its_stream_and_the_session_lives_on(
    echo_server: Address, settings: Settings
) -> None:
    class Broken:
        @hookimpl
        def dial_upstream(self, target: Address, settings: Settings) -> Broken | None:
            return self if target.host == "broken.invalid" else None

        async def connect(self, target: Address, protocol: object) -> None:
            if target.port == 81:
                return  # claims success without connecting
            raise RuntimeError("bug in a plugin")

    pm = make_plugin_manager(entry_points=False)
    pm.register(Broken(), name="broken")
    async with joined_tunnel(settings, Plugins(pm)) as tunnel, asyncio.timeout(5):
        async with tunnel.open_stream(Address("broken.invalid", 80)) as stream:
            with pytest.raises(TargetError, match="bug in a plugin") as caught:
                await stream.accepted()
            assert caught.value.reason == ResetReason.INTERNAL
        async with tunnel.open_stream(Address("broken.invalid", 81)) as stream:
            with pytest.raises(TargetError, match="did not connect"):
                await stream.accepted()
        async with tunnel.open_stream(echo_server) as stream:  # the same session still works
            await stream.write(b"ping")
            assert await stream.read() == b"ping"


def test_register_transports_is_called_once_and_its_answers_kept(
    plugins: Plugins, pm: FlywayPluginManager
) -> None:
    calls: list[Settings] = []

    class Counting:
        @hookimpl
        def register_transports(self, settings: Settings) -> list[_Transport]:
            calls.append(settings)
            return [_Transport("counted")]

    pm.register(Counting(), name="counting")
    settings = Settings()
    first = plugins.transports(settings)
    assert plugins.transports(settings) is first
    assert plugins.transport("counted", settings) is first["counted"]
    assert len(calls) == 1


def test_hooks_are_called_through_pluggy_so_wrappers_see_them(
    plugins: Plugins, pm: FlywayPluginManager
) -> None:
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def register_listeners(self, settings: Settings) -> object:
            seen.append("before")
            answers = yield
            seen.append(f"after {len(answers)}")
            return answers

    pm.register(Wrapper(), name="wrapper")
    plugins.listeners(Settings(options={"forward": ["1080"]}))
    assert seen == ["before", "after 1"]


async def test_transports_see_the_bound_port_before_they_serve(
    plugins: Plugins, settings: Settings
) -> None:
    seen: list[int] = []

    class PortReader(_Transport):
        def serve(self, door: object) -> contextlib.nullcontext[None]:
            seen.append(door.bound.port)  # type: ignore[attr-defined]
            return contextlib.nullcontext()

    transports = {"udp-like": PortReader("udp-like")}
    async with serving(settings, [], transports=lambda _: transports) as (_, address):
        pass
    assert seen == [address.port] and address.port != 0


def test_observers_that_come_and_go_each_see_an_event_once(pm: FlywayPluginManager) -> None:
    from flyway_core.events import Listening

    seen: list[str] = []

    class Observer:
        def __init__(self, name: str) -> None:
            self.name = name

        @hookimpl
        def on_event(self, event: Event) -> None:
            seen.append(self.name)

    plugins = Plugins(pm)
    first = Observer("first")
    pm.register(first, name="first")
    plugins.emit(Listening("x", Address("127.0.0.1", 1)))
    pm.unregister(first)
    pm.register(Observer("second"), name="second")
    plugins.emit(Listening("x", Address("127.0.0.1", 1)))
    assert seen == ["first", "second"]


def test_an_on_event_wrapper_wraps_every_observer(pm: FlywayPluginManager) -> None:
    from flyway_core.events import Listening

    calls: list[str] = []

    class Observer:
        def __init__(self, name: str) -> None:
            self.name = name

        @hookimpl
        def on_event(self, event: Event) -> None:
            calls.append(self.name)

    class Wrapper:
        @hookimpl(wrapper=True)
        def on_event(self, event: Event) -> object:
            calls.append("around")
            return (yield)

    pm.register(Observer("a"), name="a")
    pm.register(Observer("b"), name="b")
    pm.register(Wrapper(), name="wrapper")
    observers = [i for i in pm.hook.on_event.get_hookimpls() if not i.wrapper]
    Plugins(pm).emit(Listening("x", Address("127.0.0.1", 1)))
    assert calls.count("a") == calls.count("b") == 1
    assert calls.count("around") == len(observers)  # the wrapper is around each of them

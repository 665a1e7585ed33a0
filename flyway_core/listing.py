"""Built-in plugin: the ``flyway plugins`` sub-command."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from flyway_core.hookspecs import hookimpl
from flyway_core.plugins import Plugins
from flyway_core.settings import Settings

__all__: list[str] = []


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command(name="plugins")
    @click.option("--all", "show_all", is_flag=True, help="Include built-in plugins.")
    @click.option("--hook", metavar="NAME", help="Only plugins implementing hook NAME.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable).")
    @click.pass_obj
    def plugins_command(plugins: Plugins, show_all: bool, hook: str | None, as_json: bool) -> None:
        """List installed plugins: name, distribution, version, what each provides."""
        infos = [
            info
            for info in plugins.describe(Settings()).values()
            if (show_all or not info.builtin) and (hook is None or hook in info.hooks)
        ]
        infos.sort(key=lambda info: (info.builtin, info.name))
        if as_json:
            click.echo(json.dumps([asdict(info) for info in infos], indent=2))
            return
        table = Table(title="flyway plugins")
        for column in ("plugin", "distribution", "version", "provides", "hooks"):
            table.add_column(column)
        for info in infos:
            provides = "; ".join(info.provides) if info.error is None else f"[red]{info.error}[/]"
            name = f"{info.name} [dim](built-in)[/]" if info.builtin else info.name
            table.add_row(name, info.distribution, info.version, provides, ", ".join(info.hooks))
        if not infos:
            click.echo("no plugins installed (flyway plugins --all shows the built-ins)")
            return
        Console().print(table)

"""flyway plugin ``static_files``: ``-P /dir`` serves a directory on the port, as nginx would.

Option: ``--static-autoindex`` (also ``--autoindex``): list directories that have no
``index.html`` (nginx's ``autoindex on``); without it they are 403. See
``files.py`` for what is answered how, ``paths.py`` for what is never served,
``validators.py`` for 304s and ranges.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from flyway_core import ConfigError, hookimpl
from flyway_fallback.static_files.files import StaticFallback

if TYPE_CHECKING:
    from flyway_core import Settings

__all__ = ["StaticFallback"]


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["--static-autoindex", "--autoindex"],
            "static_autoindex",
            is_flag=True,
            help="Server, -P DIR: list directories without an index.html (else 403).",
        )
    ]


@hookimpl
def fallback_for(spec: str | None, settings: Settings) -> StaticFallback | None:
    if spec is None or "://" in spec:
        return None
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise ConfigError(f"-P {spec}: not a directory (a site is -P http://HOST:PORT)")
    return StaticFallback(root, autoindex=bool(settings.option("static_autoindex", False)))

"""``python -m flyway_core``: the same as the ``flyway`` command."""

from flyway_core.cli import main

main()

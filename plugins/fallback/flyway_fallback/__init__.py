"""flyway's fallbacks for ``-P``: what everyone without the password sees on the server's port.

Two plugins, each its own entry point (disable either with ``--disable-plugin``):
``reverse_proxy`` (``-P http(s)://host:port[/prefix]``) and ``static_files``
(``-P /dir``).
"""

from __future__ import annotations

__all__: list[str] = []

"""Fixtures for flyway-fallback's tests: a site directory and nginx serving it.

``site_root`` is a directory of files (``fallback_site.make_site``, readable by
nginx's worker); ``nginx_site`` is nginx serving it as a stock Debian site. The
helper modules here (``fallback_site``, ``fallback_compare``) are importable from
the tests: this directory is put on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fallback_site import make_site
from intermediaries.children import MissingBinary, make_workdir
from intermediaries.site import run_nginx_site


@pytest.fixture(scope="session")
def site_root() -> Iterator[Path]:
    root = make_workdir("site")
    yield make_site(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_site(site_root: Path) -> Iterator[int]:
    """nginx serving ``site_root`` (its port)."""
    try:
        with run_nginx_site(site_root) as child:
            yield child.port
    except MissingBinary as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))

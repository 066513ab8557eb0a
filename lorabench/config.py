"""Where lorabench keeps its data, and the environment variables that move it.

- ``LORABENCH_HOME``: the home directory (default: the platform's user data
  directory, e.g. ``~/.local/share/lorabench``). It holds ``catalog.duckdb``,
  ``queue.sqlite`` (the generation queue), ``thumbnails/`` and ``results/``.
- ``LORABENCH_CATALOG``: overrides the catalog file alone (``:memory:`` allowed).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["catalog_path", "home_dir"]


def home_dir() -> Path:
    """The lorabench home directory (not created here)."""
    env = os.environ.get("LORABENCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lorabench", appauthor=False))


def catalog_path() -> str:
    """The catalog file: ``LORABENCH_CATALOG`` or ``<home>/catalog.duckdb``."""
    env = os.environ.get("LORABENCH_CATALOG")
    if env:
        return env if env == ":memory:" else str(Path(env).expanduser())
    return str(home_dir() / "catalog.duckdb")

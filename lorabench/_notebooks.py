"""The packaged notebooks: find them, run them headless, and the small helpers their cells call.

The wheel ships the repository's ``notebooks/`` folder as ``lorabench/notebooks/`` (hatch
force-include), so this module is ``_notebooks`` to keep the two names apart::

    from lorabench import run_notebook

    run_notebook("import.ipynb", "out.ipynb", library_paths=["~/loras"], dry_run=True)

Cells stay short: anything longer than a few lines is a function here (or elsewhere in the
library), so it is typed, tested and shared by the CLI.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorabench.config import home_dir
from lorabench.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lorabench.catalog import Catalog

__all__ = [
    "check_parameters",
    "import_targets",
    "library_chart",
    "notebook_path",
    "notebooks",
    "run_notebook",
    "sample_catalog_path",
    "sample_library_path",
]

#: Parameter names a scheduled notebook refuses: secrets never travel as papermill parameters,
#: which papermill writes into the output notebook twice (security-reliability.md §6).
SECRET_NAME = re.compile(r"token|key|secret|pass|auth", re.IGNORECASE)
_SAMPLE_SEED = 0


# -- finding and running notebooks --------------------------------------------------------------


def _notebook_dirs() -> list[Path]:
    """Where notebooks can live: the installed copy first, then a development checkout's folder."""
    dirs: list[Path] = []
    installed = resources.files("lorabench") / "notebooks"
    if isinstance(installed, Path):  # a regular (not zipped) install
        dirs.append(installed)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():  # not some other package's site-packages/notebooks
        dirs.append(checkout / "notebooks")
    return [d for d in dirs if d.is_dir()]


def notebooks() -> list[str]:
    """The names of the notebooks that ship with lorabench (``["import.ipynb", …]``)."""
    names = {p.name for d in _notebook_dirs() for p in d.glob("*.ipynb")}
    return sorted(names)


def notebook_path(name: str) -> Path:
    """The path of a packaged notebook, e.g. ``notebook_path("import.ipynb")``.

    The installed copy (``lorabench/notebooks/`` in the wheel) wins; in a development checkout
    the repository's ``notebooks/`` folder is used. The ``.ipynb`` suffix may be left out.
    Raises :class:`~lorabench.errors.ConfigError` naming the available notebooks if there is none
    by that name.
    """
    file = name if name.endswith(".ipynb") else f"{name}.ipynb"
    if Path(file).name != file or file.startswith("."):
        raise ConfigError(f"{name!r} is not a notebook name", hint=_available_hint())
    for folder in _notebook_dirs():
        candidate = folder / file
        if candidate.is_file():
            return candidate
    raise ConfigError(f"No lorabench notebook named {name!r}", hint=_available_hint())


def _available_hint() -> str:
    names = notebooks()
    if not names:
        return "No notebooks were found; reinstall lorabench (the wheel ships them in lorabench/notebooks)."
    return f"Available notebooks: {', '.join(names)}."


def check_parameters(parameters: dict[str, Any]) -> None:
    """Refuse parameter names that look like secrets or are not Python identifiers."""
    for key in parameters:
        if SECRET_NAME.search(key):
            raise ConfigError(
                f"Refusing the notebook parameter {key!r}: it looks like a secret",
                hint="papermill writes parameters into the output notebook; pass credentials through "
                "environment variables (e.g. LORABENCH_CIVITAI_TOKEN) instead.",
            )
        if not key.isidentifier():
            raise ConfigError(f"{key!r} is not a valid notebook parameter name", hint="Use a Python identifier.")


def _plain(value: Any) -> Any:
    """Paths become strings (papermill writes unknown types into the cell unquoted)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run_notebook(name: str, output: str | os.PathLike[str], **parameters: Any) -> Path:
    """Run a packaged notebook headless with papermill and return the executed notebook's path.

    ``parameters`` replace the defaults in the notebook's ``parameters`` cell (paths are passed
    as strings, tuples as lists). Names that look
    like secrets (token, key, secret, pass, auth) are refused before anything runs, because
    papermill records parameters in the output notebook. A failing cell raises papermill's
    ``PapermillExecutionError``; the output notebook is still written, showing the error.
    """
    check_parameters(parameters)
    source = notebook_path(name)
    parameters = {key: _plain(value) for key, value in parameters.items()}
    try:
        import papermill
    except ImportError as exc:  # pragma: no cover - papermill is a dependency
        raise MissingDependencyError("Running notebooks needs papermill") from exc
    target = Path(output).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source), str(target), parameters=parameters, kernel_name="python3", progress_bar=False,
        log_output=False,
    )  # fmt: skip
    return target


# -- helpers for the import notebook ------------------------------------------------------------


def sample_library_path() -> Path:
    """The sample library under ``<LORABENCH_HOME>/samples/library``, built once (seed 0).

    The showcase library (one LoRA per producer, sidecars, previews and two pickle decoys) is
    written to a temporary folder and renamed into place, so a half-built library is never
    used and two processes building it at once both end up with one complete copy.
    """
    target = home_dir() / "samples" / "library"
    if target.is_dir():
        return target
    from lorabench.samples import build_library

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".library-", dir=target.parent))
    try:
        build_library(staging / "library", seed=_SAMPLE_SEED)
        with contextlib.suppress(OSError):  # another process won the race: keep its copy
            os.rename(staging / "library", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not target.is_dir():
        raise ConfigError(f"Could not create the sample library in {target}", hint="Check LORABENCH_HOME is writable.")
    return target


def sample_catalog_path() -> Path:
    """The demo's own catalog, ``<LORABENCH_HOME>/samples/catalog.duckdb`` (never the real one)."""
    return home_dir() / "samples" / "catalog.duckdb"


def import_targets(
    library_paths: Sequence[str | os.PathLike[str]] | str | None, catalog_path: str | os.PathLike[str] | None
) -> tuple[list[str], str | None]:
    """The folders to import and the catalog to use, from the import notebook's parameters.

    No folders means the demo: the sample library and, unless a catalog is named, the demo's own
    catalog. Otherwise the folders as given and ``catalog_path`` (``None`` = the default catalog).
    A single folder may be passed as a string.
    """
    if isinstance(library_paths, str | os.PathLike):
        library_paths = [library_paths]
    paths = [os.path.expanduser(os.fspath(p)) for p in library_paths or []]
    catalog = os.fspath(catalog_path) if catalog_path is not None else None
    if not paths:
        return [str(sample_library_path())], catalog or str(sample_catalog_path())
    return paths, catalog


_CHART_SQL = """
    SELECT coalesce(base_model, '(unreadable)') AS base_model, coalesce(algorithm, status) AS algorithm,
           count(*) AS n
    FROM loras WHERE NOT missing
    GROUP BY ALL ORDER BY base_model, algorithm
"""


def library_chart(catalog: Catalog, *, title: str = "LoRAs by base model and algorithm") -> go.Figure:
    """A stacked bar chart of the catalog: base models on the x axis, one colour per algorithm."""
    import plotly.graph_objects as go

    rows = catalog.sql(_CHART_SQL).rows
    bases = sorted({r[0] for r in rows})
    counts: dict[str, dict[str, int]] = {}
    for base, algorithm, n in rows:
        counts.setdefault(algorithm, {})[base] = int(n)
    figure = go.Figure(
        [go.Bar(name=algo, x=bases, y=[by_base.get(b, 0) for b in bases]) for algo, by_base in sorted(counts.items())]
    )
    figure.update_layout(barmode="stack", title=title, xaxis_title="base model", yaxis_title="files",
                         legend_title="algorithm")  # fmt: skip
    return figure

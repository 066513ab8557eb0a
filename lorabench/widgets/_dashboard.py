"""Helpers for the dashboard notebook: open the catalog it shows, and a plain statistics panel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lorabench.catalog import Catalog

__all__ = ["dashboard_catalog", "show_stats"]


def dashboard_catalog(
    catalog_path: str | os.PathLike[str] | None = None,
    library_paths: Sequence[str | os.PathLike[str]] | str | None = (),
) -> Catalog:
    """The catalog the dashboard shows, from the notebook's parameters.

    - A catalog and no folders: that catalog, as it is.
    - Folders: they are imported (incrementally) into ``catalog_path`` (``None`` = the
      default catalog) before it is shown.
    - Neither: the catalog named by ``LORABENCH_CATALOG`` if that variable is set and the file
      exists (``lorabench demo`` sets it); otherwise the **sample library** (built once under
      ``<LORABENCH_HOME>/samples/library``) in the demo's own catalog, imported on first use.
      The default catalog is never created or touched by the demo.
    """
    from lorabench._notebooks import import_targets

    given = [library_paths] if isinstance(library_paths, str | os.PathLike) else list(library_paths or [])
    if not given and catalog_path is not None:
        return Catalog(catalog_path)
    chosen = os.environ.get("LORABENCH_CATALOG")
    if not given and chosen and (chosen == ":memory:" or os.path.isfile(os.path.expanduser(chosen))):
        return Catalog(chosen)
    paths, path = import_targets(given, catalog_path)
    catalog = Catalog(path)
    if given or catalog.count() == 0:
        catalog.import_library(paths, progress=False)
    return catalog


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def _breakdown(counts: dict[Any, int], limit: int = 8) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    text = " · ".join(f"{k or 'unknown'} {v:,}" for k, v in items[:limit])
    return text + (f" · +{len(items) - limit} more" if len(items) > limit else "")


def show_stats(catalog: Catalog) -> Any:
    """Catalog statistics as plain ipywidgets labels (text only, never HTML built from data)."""
    import ipywidgets as w

    stats = catalog.stats()
    tiles = [
        ("LoRAs", f"{stats['total']:,}"), ("readable", f"{stats['ok']:,}"),
        ("unreadable", f"{stats['errors'] + stats['unsafe']:,}"), ("hashed", f"{stats['hashed']:,}"),
        ("favourites", f"{stats['favorites']:,}"), ("rated", f"{stats['rated']:,}"),
        ("on disk", _size(stats["total_bytes"])),
    ]  # fmt: skip
    boxes = []
    for label, value in tiles:
        number = w.Label(value, layout=w.Layout(margin="0"), style={"font_size": "20px", "font_weight": "bold"})
        caption = w.Label(label, layout=w.Layout(margin="0"), style={"font_size": "11px"})
        boxes.append(w.VBox([number, caption], layout=w.Layout(padding="4px 14px 4px 0", min_width="86px")))
    lines = [
        w.Label(f"Base models: {_breakdown(stats['base_models'])}" if stats["base_models"] else "Base models: none"),
        w.Label(f"Algorithms: {_breakdown(stats['algorithms'])}" if stats["algorithms"] else "Algorithms: none"),
    ]
    last = stats.get("last_import")
    if last:
        finished = last.get("finished_at") or last.get("started_at")
        lines.append(w.Label(f"Last import: {last.get('status', '')} {finished:%Y-%m-%d %H:%M}" if finished else ""))
    panel = w.VBox([w.HBox(boxes, layout=w.Layout(flex_flow="row wrap")), *lines])
    panel.add_class("lb-stats")
    return panel

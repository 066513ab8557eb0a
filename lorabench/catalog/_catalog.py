"""``lorabench.Catalog``: the public face of the DuckDB catalog."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from lorabench.catalog._gateway import Gateway
from lorabench.catalog._guard import backup_before_migration
from lorabench.catalog._query import compile_query, facets
from lorabench.catalog._results import ResultSet, SearchResult
from lorabench.catalog._schema import SCHEMA_VERSION, current_version, migrate
from lorabench.catalog._store import Store, write_curation
from lorabench.config import catalog_path
from lorabench.errors import CatalogError, NotFoundError

if TYPE_CHECKING:
    from lorabench.importer import ImportReport

__all__ = ["SEARCH_COLUMNS", "Catalog"]

#: Columns of each search record (``get`` adds the full reader output as ``info``).
SEARCH_COLUMNS: tuple[str, ...] = (
    "id", "path", "root", "folder", "name", "title", "base_model", "base_model_hint", "algorithm", "format",
    "dora", "rank", "alpha", "dtype", "size", "mtime", "status", "error_code", "missing", "offline",
    "rating", "favorite", "nsfw", "preferred_weight", "user_tags", "notes", "trigger_words",
    "training_tags", "sha256", "autov2", "autov3", "tensor_sha256", "legacy_hash", "preview_path",
    "sidecar_kinds", "epochs", "steps", "images", "first_seen",
)  # fmt: skip
_UNSET: Any = object()
_SORT_COLUMN = re.compile(r"\bl\.\w+")
_CURATION_COLUMNS = frozenset(("favorite", "rating", "notes", "user_tags", "trigger_groups", "preferred_weight",
                               "nsfw"))  # fmt: skip
_CHECKPOINT_SQL = re.compile(r"\s*(?:FORCE\s+)?CHECKPOINT\s*;?\s*", re.IGNORECASE)
_FACETS = ("base_model", "algorithm", "training_tags", "folder")


class Catalog:
    """A DuckDB catalog of LoRA files and the user's curation.

    Parameters
    ----------
    path:
        The catalog file. Default: ``LORABENCH_CATALOG`` or ``<LORABENCH_HOME>/catalog.duckdb``;
        ``":memory:"`` for scripts and tests.
    deadline:
        Seconds to wait for another process that holds the file.
    tracer:
        Optional ``callable(sql, params)`` to see every statement.

    Every call opens the file briefly and releases it, so a notebook and a
    scheduled import can use the same catalog at the same time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        deadline: float = 60.0,
        linger: float = 0.25,
        tracer: Callable[[str, object], None] | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else catalog_path()
        self._migrated = False
        self.tracer = tracer
        self._gateway = Gateway(self.path, deadline=deadline, linger=linger, on_open=self._on_open)
        self._store = Store(self._gateway)
        with self._session():
            pass

    def _on_open(self, conn: Any) -> None:
        if not self._migrated:
            version = current_version(conn)
            if 0 < version < SCHEMA_VERSION and self.path != ":memory:":  # an older catalog: keep a copy first
                try:
                    backup_before_migration(self.path, version)
                except OSError as exc:
                    raise CatalogError(
                        f"Could not back up the catalog {self.path} before migrating it: {exc}",
                        hint="The catalog is unchanged; free some disk space and retry.",
                    ) from exc
            try:
                migrate(conn)
            except duckdb.Error as exc:
                raise CatalogError(
                    f"Could not bring the catalog {self.path} up to schema version {SCHEMA_VERSION}: {exc}",
                    hint="The catalog is unchanged (each migration is atomic); check free disk space and retry.",
                ) from exc
            self._migrated = True

    def _session(self, write: bool = False) -> Any:
        return self._gateway.session(write=write)

    def _run(self, conn: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
        if self.tracer is not None:
            self.tracer(sql, params)
        return conn.execute(sql, list(params or []))

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the catalog (releases the file at once)."""
        self._gateway.close()

    def release(self) -> None:
        """Release the file now instead of after the short idle delay."""
        self._gateway.release()

    def checkpoint(self) -> bool:
        """Fold the write-ahead log into the catalog file now; False when there was nothing to fold.

        lorabench checkpoints by itself (after an import that wrote 1 MiB or more, when a released WAL
        passes 4 MiB, and on close when this catalog wrote),
        always guarded so that a process killed mid-checkpoint cannot damage the file.
        ``sql("CHECKPOINT")`` comes here too.
        """
        return self._gateway.checkpoint()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.path!r})"

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    # -- reading -----------------------------------------------------------------------

    def search(
        self, query: str = "", *, limit: int | None = None, offset: int = 0,
        columns: Sequence[str] = SEARCH_COLUMNS,
    ) -> SearchResult:  # fmt: skip
        """Rows matching a query in lorabench's search language (see the README)."""
        cols = _checked_columns(columns)
        compiled = compile_query(query)
        where, order = compiled.where, compiled.order_by
        with self._session() as conn:
            if limit is None and not offset:
                rows = self._run(conn, f"SELECT {cols} FROM lora_view l WHERE {where} ORDER BY {order}",  # noqa: S608
                                 compiled.params).fetchall()  # fmt: skip
                return SearchResult(list(columns), rows, total=len(rows), query=query)
            # The WHERE is evaluated once into the matching ids and their sort keys; the total and the
            # page come from those, then the wide rows of that page only.
            keys = ", ".join(dict.fromkeys(["l.id", *_SORT_COLUMN.findall(order)]))
            total, page = self._run(
                conn, f"WITH hits AS MATERIALIZED (SELECT {keys} FROM {compiled.source} l WHERE {where}) "  # noqa: S608
                f"SELECT (SELECT count(*) FROM hits), (SELECT list(l.id ORDER BY {order}) FROM "
                f"(SELECT * FROM hits l ORDER BY {order} LIMIT ? OFFSET ?) l)",
                [*compiled.params, max(0, int(limit)) if limit is not None else 2**62, max(0, int(offset))],
            ).fetchone()  # fmt: skip
            page = page or []
            fetched = []
            if page:
                source = "lora_view" if _CURATION_COLUMNS.intersection(columns) else "lora_core"
                sql = f"SELECT l.id, {cols} FROM {source} l WHERE l.id IN (SELECT unnest(?))"  # noqa: S608
                fetched = self._run(conn, sql, [page]).fetchall()
        by_id = {r[0]: r[1:] for r in fetched}
        return SearchResult(list(columns), [by_id[i] for i in page if i in by_id], total=total, query=query)

    def _count(self, conn: Any, compiled: Any) -> int:
        row = self._run(conn, f"SELECT count(*) FROM {compiled.source} l WHERE {compiled.where}",  # noqa: S608
                        compiled.params).fetchone()  # fmt: skip
        return int(row[0]) if row else 0

    def count(self, query: str = "") -> int:
        """How many rows match ``query``."""
        compiled = compile_query(query)
        with self._session() as conn:
            return self._count(conn, compiled)

    def facets(
        self, query: str = "", *, fields: Sequence[str] = _FACETS, limit: int = 20
    ) -> dict[str, list[tuple[Any, int]]]:
        """Value → count for each facet field over the rows matching ``query``."""
        compiled = compile_query(query)
        with self._session() as conn:
            return facets(conn, compiled, fields=tuple(fields), limit=limit)

    def get(self, lora_id: int) -> dict[str, Any]:
        """One row with everything: curation, search columns and the reader's full ``info``."""
        with self._session() as conn:
            cur = self._run(conn, "SELECT v.*, l.info FROM lora_view v JOIN loras l USING (id) WHERE v.id = ?",
                            [int(lora_id)])  # fmt: skip
            result = ResultSet.from_cursor(cur)
        if not result:
            raise NotFoundError(f"No LoRA with id {lora_id} in {self.path}")
        return result[0]

    def sql(self, text: str, params: Sequence[Any] | dict[str, Any] | None = None) -> ResultSet:
        """Run raw SQL (with bound parameters) and fetch the result.

        ``CHECKPOINT`` and ``FORCE CHECKPOINT`` run as :meth:`checkpoint` (guarded), not raw.
        """
        if _CHECKPOINT_SQL.fullmatch(text):
            self.checkpoint()
            return ResultSet([], [])
        with self._session(write=True) as conn:
            if self.tracer is not None:
                self.tracer(text, params)
            cur = conn.execute(text, params if params is not None else [])
            return ResultSet.from_cursor(cur)

    def stats(self) -> dict[str, Any]:
        """Counts for the catalog as a whole."""
        with self._session() as conn:
            total, ok, errors, unsafe, missing, offline, hashed, size, favs, rated = self._run(conn, """
                SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER (status = 'error'),
                       count(*) FILTER (status = 'unsafe'), count(*) FILTER (missing),
                       count(*) FILTER (offline), count(sha256), coalesce(sum(size), 0),
                       count(*) FILTER (favorite), count(rating)
                FROM lora_view""").fetchone()  # fmt: skip
            by_base = self._run(conn, "SELECT base_model, count(*) FROM loras WHERE status = 'ok' "
                                "GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()  # fmt: skip
            by_algo = self._run(conn, "SELECT algorithm, count(*) FROM loras WHERE status = 'ok' "
                                "GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()  # fmt: skip
            last = ResultSet.from_cursor(self._run(conn, "SELECT * FROM import_runs ORDER BY id DESC LIMIT 1"))
        return {
            "total": total, "ok": ok, "errors": errors, "unsafe": unsafe, "missing": missing,
            "offline": offline, "hashed": hashed, "total_bytes": int(size), "favorites": favs, "rated": rated,
            "base_models": dict(by_base), "algorithms": dict(by_algo), "last_import": last[0] if last else None,
            "schema_version": SCHEMA_VERSION, "path": self.path,
        }  # fmt: skip

    def runs(self, limit: int = 20) -> ResultSet:
        """The most recent import runs."""
        with self._session() as conn:
            return ResultSet.from_cursor(self._run(conn, "SELECT * FROM import_runs ORDER BY id DESC LIMIT ?",
                                                   [int(limit)]))  # fmt: skip

    def errors(self, run_id: int | None = None) -> ResultSet:
        """Files that could not be read, with the reader's reason code (latest state, or one run's)."""
        with self._session() as conn:
            if run_id is None:
                cur = self._run(conn, "SELECT id, path, status, error_code, error_message FROM loras "
                                "WHERE status <> 'ok' AND NOT missing ORDER BY path")  # fmt: skip
            else:
                cur = self._run(conn, "SELECT * FROM import_errors WHERE run_id = ? ORDER BY path", [run_id])
            return ResultSet.from_cursor(cur)

    # -- curation ----------------------------------------------------------------------

    def update(
        self, lora_id: int, *, rating: Any = _UNSET, favorite: Any = _UNSET, notes: Any = _UNSET,
        tags: Any = _UNSET, preferred_weight: Any = _UNSET, nsfw: Any = _UNSET, trigger_groups: Any = _UNSET,
    ) -> dict[str, Any]:  # fmt: skip
        """Change the user's curation of one LoRA; returns the updated record.

        ``rating`` 1-5 or ``None``; ``favorite``/``nsfw`` bools (``nsfw=None`` falls back to
        the sidecar's flag); ``notes`` text; ``tags`` a list of user tags; ``preferred_weight``
        a number or ``None``; ``trigger_groups`` a list of ``{"name": str, "words": [str]}``.
        """
        values = _validate_curation(rating=rating, favorite=favorite, notes=notes, user_tags=tags,
                                    preferred_weight=preferred_weight, nsfw=nsfw,
                                    trigger_groups=trigger_groups)  # fmt: skip
        with self._session(write=True) as conn:
            if not self._run(conn, "SELECT 1 FROM loras WHERE id = ?", [int(lora_id)]).fetchone():
                raise NotFoundError(f"No LoRA with id {lora_id} in {self.path}")
            if values:
                write_curation(conn, int(lora_id), values)
        return self.get(lora_id)

    # -- import / export ---------------------------------------------------------------

    def import_library(self, paths: Iterable[str | os.PathLike[str]], **options: Any) -> ImportReport:
        """Import (or incrementally rescan) LoRA folders; see :func:`lorabench.importer.import_library`."""
        from lorabench.importer import import_library

        return import_library(self, paths, **options)

    def export(self, path: str | os.PathLike[str], query: str = "", *, format: str | None = None) -> int:
        """Write the rows matching ``query`` to Parquet, CSV or JSON (by ``format`` or the file suffix)."""
        from lorabench.catalog._backup import export_rows

        return export_rows(self, Path(path), query, format)

    def backup(self, path: str | os.PathLike[str]) -> int:
        """Write the whole catalog with curation to a portable JSON file; returns the row count."""
        from lorabench.catalog._backup import backup

        return backup(self, Path(path))

    def restore(self, path: str | os.PathLike[str]) -> dict[str, int]:
        """Apply a backup's curation here, matching files by hash, then path, then name and size."""
        from lorabench.catalog._backup import restore

        return restore(self, Path(path))


def _checked_columns(columns: Sequence[str]) -> str:
    unknown = [c for c in columns if c not in _VIEW_COLUMNS]
    if unknown:
        raise CatalogError(f"Unknown column(s) {unknown}", hint=f"Choose from: {', '.join(SEARCH_COLUMNS)}")
    return ", ".join(f"l.{c}" for c in columns)


_VIEW_COLUMNS = frozenset(SEARCH_COLUMNS) | {
    "description", "author", "last_seen", "error_message", "n_tensors", "n_modules", "resolution",
    "network_module", "optimizer", "learning_rate", "base_model_name", "trained_at", "trigger_groups",
}  # fmt: skip


def _validate_curation(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is _UNSET:
            continue
        if key == "rating" and value is not None and (isinstance(value, bool) or value not in range(1, 6)):
            raise CatalogError(f"rating must be 1-5 or None, not {value!r}", hint="Use a whole number 1-5.")
        if key in ("favorite",) and not isinstance(value, bool):
            raise CatalogError(f"{key} must be True or False, not {value!r}", hint="Pass a bool.")
        if key == "nsfw" and value is not None and not isinstance(value, bool):
            raise CatalogError(f"nsfw must be True, False or None, not {value!r}", hint="Pass a bool.")
        if key == "notes" and value is not None:
            value = str(value)[:100_000]
        if key == "user_tags":
            if value is None:
                value = []
            if isinstance(value, str) or not all(isinstance(t, str) for t in value):
                raise CatalogError("tags must be a list of strings", hint='For example tags=["style", "ink"].')
            value = list(dict.fromkeys(t.strip().lower()[:256] for t in value if t.strip()))
        if key == "preferred_weight" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise CatalogError(f"preferred_weight must be a number, not {value!r}", hint="E.g. 0.8.")
            value = float(value)
        if key == "trigger_groups" and value is not None:
            value = _validate_groups(value)
        out[key] = value
    return out


def _validate_groups(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise CatalogError("trigger_groups must be a list", hint='E.g. [{"name": "outfit", "words": ["red coat"]}].')
    groups = []
    for group in value:
        if not isinstance(group, dict) or not isinstance(group.get("words"), list):
            raise CatalogError("each trigger group needs a list of words", hint='{"name": …, "words": […]}')
        words = [str(w).strip()[:256] for w in group["words"] if str(w).strip()]
        groups.append({"name": str(group.get("name") or "")[:256], "words": words})
    json.dumps(groups)
    return groups

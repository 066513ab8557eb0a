"""Catalog writes used by the importer (the importer never writes SQL itself)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from lorabench.catalog._gateway import Gateway
from lorabench.catalog._rows import LORA_COLUMNS

__all__ = ["HASH_COLUMNS", "Fingerprint", "Store", "write_curation"]

HASH_COLUMNS = ("sha256", "autov2", "autov3", "tensor_sha256", "legacy_hash", "hashed_at")


def _replace_sql(keep_hashes: bool) -> str:
    """Rows already in the catalog are deleted and re-inserted with their id and first-seen date.

    DuckDB's ``ON CONFLICT DO UPDATE`` rewrites wide rows slowly (~1.5 ms each); a bulk delete and
    insert of the same batch inside one transaction is far faster and keeps ids (and so curation).
    """
    kept = set(HASH_COLUMNS) if keep_hashes else set()
    values = []
    for c in LORA_COLUMNS:
        if c == "first_seen":
            values.append("coalesce(o.first_seen, b.first_seen)")
        elif c in kept:
            values.append(f"o.{c}")
        else:
            values.append(f"b.{c}")
    olds = ", ".join(f"l.{c}" for c in ("id", "path", "first_seen", *HASH_COLUMNS))
    return (
        f"CREATE OR REPLACE TEMP TABLE _old AS SELECT {olds} FROM loras l SEMI JOIN _batch b ON b.path = l.path;"  # noqa: S608
        "DELETE FROM loras WHERE id IN (SELECT id FROM _old);"
        f"INSERT INTO loras (id, {', '.join(LORA_COLUMNS)}) "
        f"SELECT coalesce(o.id, nextval('lora_id_seq')), {', '.join(values)} "
        "FROM _batch b LEFT JOIN _old o ON o.path = b.path;"
        "DROP TABLE _old"
    )


_INSERT_SQL = {False: _replace_sql(False), True: _replace_sql(True)}
_CURATION_FIELDS = ("favorite", "rating", "notes", "user_tags", "trigger_groups", "preferred_weight", "nsfw")


_FP_COLUMNS = ("id", "path", "root", "size", "mtime_ns", "inode", "device", "sidecar_fingerprint", "sha256",
               "status", "missing", "offline")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the catalog remembers about a path, to decide whether to read it again."""

    id: int
    path: str
    root: str
    size: int | None
    mtime_ns: int | None
    inode: int | None
    device: int | None
    sidecar_fingerprint: str | None
    sha256: str | None
    status: str
    missing: bool
    offline: bool


class Store:
    """Batch writes and reads for the importer, through the catalog's gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- reads --------------------------------------------------------------------------

    def diff(
        self,
        found: dict[str, Any],
        rows: Sequence[tuple[str, int, int, int, str]],
        scopes: Sequence[str],
        unreachable: Sequence[str],
    ) -> tuple[list[tuple[Any, Fingerprint | None]], list[Fingerprint], list[Fingerprint]]:
        """Compare a scan with the catalog inside DuckDB, returning only what needs attention.

        ``found`` maps scanned paths to their scan entries; ``rows`` holds ``(path, size,
        mtime_ns, inode, sidecar_fingerprint)`` for each. Returns ``(attention, vanished,
        offline)``: scanned files that are new, changed, missing/offline before or unhashed, each
        with its fingerprint (``None`` when new); rows in ``scopes`` that were not found (and are
        not already missing); and rows under ``unreachable`` folders.
        """
        import pyarrow as pa

        names = ["path", "size", "mtime_ns", "inode", "sidecar_fingerprint"]
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
        types = [pa.string(), pa.int64(), pa.int64(), pa.int64(), pa.string()]
        table = pa.table([pa.array(c, t) for c, t in zip(columns, types, strict=True)], names=names)
        by_path = found
        cols = ", ".join(f"l.{c}" for c in _FP_COLUMNS)
        scope_params = [p.rstrip(os.sep) + os.sep for p in scopes]
        in_scope = " OR ".join("starts_with(l.path, ?)" for _ in scopes) or "FALSE"
        off_params = [p.rstrip(os.sep) + os.sep for p in unreachable]
        in_offline = " OR ".join("starts_with(l.path, ?)" for _ in unreachable) or "FALSE"
        with self.gateway.session() as conn:
            conn.register("_scan", table)
            try:
                attention = conn.execute(
                    f"SELECT s.path, {cols} FROM _scan s LEFT JOIN loras l ON l.path = s.path "  # noqa: S608
                    "WHERE l.id IS NULL OR l.size IS DISTINCT FROM s.size OR l.mtime_ns IS DISTINCT FROM s.mtime_ns "
                    "OR l.inode IS DISTINCT FROM s.inode "
                    "OR coalesce(l.sidecar_fingerprint, '') <> s.sidecar_fingerprint "
                    "OR l.missing OR l.offline OR l.sha256 IS NULL"
                ).fetchall()
                vanished = conn.execute(
                    f"SELECT {cols} FROM loras l WHERE ({in_scope}) AND NOT l.missing "  # noqa: S608
                    f"AND NOT ({in_offline}) AND l.path NOT IN (SELECT path FROM _scan)",
                    scope_params + off_params,
                ).fetchall()
                offline = conn.execute(
                    f"SELECT {cols} FROM loras l WHERE ({in_offline}) AND NOT l.offline",  # noqa: S608
                    off_params,
                ).fetchall() if unreachable else []  # fmt: skip
            finally:
                conn.unregister("_scan")
        pairs = [(by_path[r[0]], Fingerprint(*r[1:]) if r[1] is not None else None) for r in attention]
        return pairs, [Fingerprint(*r) for r in vanished], [Fingerprint(*r) for r in offline]

    def missing_rows(self) -> dict[str, tuple[str, int]]:
        """sha256 → (path, size) of every missing row with a known hash."""
        with self.gateway.session() as conn:
            rows = conn.execute("SELECT sha256, path, size FROM loras WHERE missing AND sha256 IS NOT NULL").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def roots(self) -> list[str]:
        with self.gateway.session() as conn:
            return [r[0] for r in conn.execute("SELECT path FROM roots ORDER BY path").fetchall()]

    # -- writes -------------------------------------------------------------------------

    def ensure_roots(self, roots: Iterable[str], now: datetime) -> None:
        with self.gateway.session(write=True) as conn:
            for root in roots:
                conn.execute(
                    "INSERT INTO roots (path, added_at, last_scan, online) VALUES (?, ?, ?, TRUE) "
                    "ON CONFLICT (path) DO UPDATE SET last_scan = excluded.last_scan, online = TRUE",
                    [root, now, now],
                )

    def upsert(
        self, rows: Sequence[dict[str, Any]], conn: duckdb.DuckDBPyConnection, *, keep_hashes: bool = False
    ) -> None:
        """Insert or refresh rows by path (ids, first-seen dates and curation are kept).

        With ``keep_hashes`` the stored hashes survive (the file's bytes did not change).
        """
        if not rows:
            return
        import pyarrow as pa

        table = pa.Table.from_pylist([{c: row.get(c) for c in LORA_COLUMNS} for row in rows],
                                     schema=_arrow_schema())  # fmt: skip
        conn.register("_batch", table)
        try:
            conn.execute(_INSERT_SQL[keep_hashes])
        finally:
            conn.unregister("_batch")

    def move(
        self, old_id: int, row: dict[str, Any], conn: duckdb.DuckDBPyConnection, *, keep_hashes: bool = False
    ) -> None:
        """Point an existing row (and so its curation) at a file's new path and facts."""
        conn.execute("DELETE FROM loras WHERE path = ? AND id <> ?", [row["path"], old_id])
        skip = {"first_seen", *(HASH_COLUMNS if keep_hashes else ())}
        columns = [c for c in LORA_COLUMNS if c not in skip]
        assignments = ", ".join(f"{c} = ?" for c in columns)
        conn.execute(f"UPDATE loras SET {assignments} WHERE id = ?",  # noqa: S608
                     [row[c] for c in columns] + [old_id])  # fmt: skip

    def set_hashes(
        self, updates: Sequence[tuple[str, dict[str, str | None]]], now: datetime
    ) -> list[tuple[str, str]]:
        """Store hashes by path; re-link a new row to a missing row with the same content.

        Returns ``(old path, new path)`` for each missing row that was restored (a moved file).
        """
        restored: list[tuple[str, str]] = []
        if not updates:
            return restored
        import pyarrow as pa

        table = pa.table({
            "path": [p for p, _ in updates],
            **{k: [h.get(k) for _, h in updates] for k in ("sha256", "autov2", "autov3", "tensor_sha256", "legacy")},
        })  # fmt: skip
        with self.gateway.session(write=True) as conn:
            conn.register("_hashes", table)
            try:
                conn.execute(
                    "UPDATE loras SET sha256 = h.sha256, autov2 = h.autov2, autov3 = h.autov3, "
                    "tensor_sha256 = h.tensor_sha256, legacy_hash = h.legacy, hashed_at = ? "
                    "FROM _hashes h WHERE loras.path = h.path",
                    [now],
                )
                pairs = conn.execute(
                    "SELECT n.path, min(o.id), arg_min(o.path, o.id) FROM _hashes h "
                    "JOIN loras n ON n.path = h.path JOIN loras o ON o.sha256 = n.sha256 AND o.missing "
                    "AND o.id <> n.id WHERE NOT n.missing AND n.first_seen = n.last_seen "
                    "AND n.id NOT IN (SELECT lora_id FROM curation) GROUP BY n.path"
                ).fetchall()
            finally:
                conn.unregister("_hashes")
            paths = [p for p, _ in updates]
            for path, old_id, old_path in pairs:
                cur = conn.execute(f"SELECT {', '.join(LORA_COLUMNS)} FROM loras WHERE path = ?",  # noqa: S608
                                   [path])  # fmt: skip
                values = cur.fetchone()
                if values is None:
                    continue
                row = dict(zip(LORA_COLUMNS, values, strict=True))
                self.move(old_id, row, conn)
                restored.append((old_path, path))
            self._apply_pending(conn, paths)
        return restored

    def _apply_pending(self, conn: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> None:
        """Curation restored from a backup, waiting for its file, lands once the file is hashed."""
        waiting = conn.execute("SELECT count(*) FROM pending_curation").fetchone()
        if not waiting or not waiting[0]:
            return
        rows = conn.execute(
            "SELECT l.id, p.data, p.rowid FROM pending_curation p JOIN loras l "
            "ON (p.sha256 IS NOT NULL AND p.sha256 = l.sha256) OR "
            "(p.tensor_sha256 IS NOT NULL AND p.tensor_sha256 = l.tensor_sha256) "
            "WHERE list_contains(?, l.path) AND l.id NOT IN (SELECT lora_id FROM curation)",
            [list(paths)],
        ).fetchall()
        for lora_id, data, rowid in rows:
            write_curation(conn, lora_id, json.loads(data))
            conn.execute("DELETE FROM pending_curation WHERE rowid = ?", [rowid])

    def mark_missing(self, ids: Sequence[int], *, offline: bool, now: datetime) -> None:
        if not ids:
            return
        column = "offline" if offline else "missing"
        with self.gateway.session(write=True) as conn:
            conn.execute(f"UPDATE loras SET {column} = TRUE, updated_at = ? WHERE list_contains(?, id)",  # noqa: S608
                         [now, list(ids)])  # fmt: skip

    def mark_present(self, ids: Sequence[int], now: datetime) -> None:
        if not ids:
            return
        with self.gateway.session(write=True) as conn:
            conn.execute("UPDATE loras SET missing = FALSE, offline = FALSE, last_seen = ? "
                         "WHERE list_contains(?, id)", [now, list(ids)])  # fmt: skip

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, scope: Sequence[str], options: dict[str, Any], now: datetime) -> int:
        with self.gateway.session(write=True) as conn:
            conn.execute("UPDATE import_runs SET status = 'interrupted' WHERE status = 'running' "
                         "AND pid <> ?", [os.getpid()])  # fmt: skip
            row = conn.execute(
                "INSERT INTO import_runs (started_at, status, scope, options, pid) "
                "VALUES (?, 'running', ?, ?, ?) RETURNING id",
                [now, list(scope), json.dumps(options), os.getpid()],
            ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_run(
        self, run_id: int, *, status: str, counts: dict[str, Any], duration: float, now: datetime,
        error: str | None = None, errors: Sequence[tuple[str, str, str]] = (),
    ) -> None:  # fmt: skip
        with self.gateway.session(write=True) as conn:
            conn.execute(
                "UPDATE import_runs SET finished_at = ?, status = ?, counts = ?, duration_s = ?, error = ? "
                "WHERE id = ?",
                [now, status, json.dumps(counts), duration, error, run_id],
            )
            if errors:
                conn.executemany("INSERT INTO import_errors VALUES (?, ?, ?, ?)",
                                 [(run_id, p, c, m) for p, c, m in errors])  # fmt: skip


def write_curation(conn: duckdb.DuckDBPyConnection, lora_id: int, values: dict[str, Any]) -> None:
    """Upsert curation fields for one row (only the keys present in ``values``)."""
    fields = [f for f in _CURATION_FIELDS if f in values]
    if values.get("user_tags"):  # stored lower-case and distinct (search and facets rely on it), whatever the source
        values = {**values, "user_tags": list(dict.fromkeys(t.strip().lower()[:256] for t in values["user_tags"]
                                                            if isinstance(t, str) and t.strip()))}  # fmt: skip
    hashes = conn.execute("SELECT sha256, tensor_sha256 FROM loras WHERE id = ?", [lora_id]).fetchone()
    sha, tensor = hashes if hashes else (None, None)
    params = [values[f] if f != "trigger_groups" else json.dumps(values[f]) for f in fields]
    insert_cols = ", ".join(["lora_id", "sha256", "tensor_sha256", "updated_at", *fields])
    marks = ", ".join(["?", "?", "?", "now()"] + ["?"] * len(fields))
    keep = ["sha256", "tensor_sha256", "updated_at"]
    updates = ", ".join(f"{f} = excluded.{f}" for f in [*fields, *keep])
    conn.execute(
        f"INSERT INTO curation ({insert_cols}) VALUES ({marks}) "  # noqa: S608
        f"ON CONFLICT (lora_id) DO UPDATE SET {updates}",
        [lora_id, sha, tensor, *params],
    )


_SCHEMA: Any = None


def _arrow_schema() -> Any:
    global _SCHEMA
    if _SCHEMA is None:
        import pyarrow as pa

        types = {
            "size": pa.int64(), "mtime": pa.timestamp("us"), "mtime_ns": pa.int64(), "inode": pa.int64(),
            "device": pa.int64(), "missing": pa.bool_(), "offline": pa.bool_(), "dora": pa.bool_(),
            "rank": pa.int32(), "alpha": pa.float64(), "n_tensors": pa.int32(), "n_modules": pa.int32(),
            "epochs": pa.int32(), "steps": pa.int32(), "images": pa.int32(), "learning_rate": pa.float64(),
            "trained_at": pa.timestamp("us"), "trigger_words": pa.list_(pa.string()),
            "training_tags": pa.list_(pa.string()), "hashed_at": pa.timestamp("us"),
            "sidecar_kinds": pa.list_(pa.string()), "sidecar_nsfw": pa.bool_(),
            "sidecar_weight": pa.float64(), "first_seen": pa.timestamp("us"),
            "last_seen": pa.timestamp("us"), "updated_at": pa.timestamp("us"),
        }  # fmt: skip
        _SCHEMA = pa.schema([(c, types.get(c, pa.string())) for c in LORA_COLUMNS])
    return _SCHEMA

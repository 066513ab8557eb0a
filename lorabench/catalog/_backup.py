"""Export of query results, and portable backup/restore of the whole catalog."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorabench.catalog._results import ResultSet
from lorabench.catalog._schema import SCHEMA_VERSION
from lorabench.catalog._store import write_curation
from lorabench.errors import CatalogError

if TYPE_CHECKING:
    from lorabench.catalog._catalog import Catalog

__all__ = ["backup", "export_rows", "restore"]

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "jsonl"}
_EXPORT_COLUMNS = (
    "id", "path", "folder", "name", "title", "description", "author", "base_model", "base_model_hint",
    "algorithm", "format", "dora", "rank", "alpha", "dtype", "size", "mtime", "status", "error_code",
    "missing", "offline", "rating", "favorite", "nsfw", "preferred_weight", "user_tags", "notes",
    "trigger_words", "training_tags", "sha256", "autov2", "autov3", "tensor_sha256", "legacy_hash",
    "preview_path", "sidecar_kinds", "epochs", "steps", "images", "resolution", "network_module",
    "optimizer", "learning_rate", "base_model_name", "trained_at", "first_seen",
)  # fmt: skip
_CURATION = ("favorite", "rating", "notes", "user_tags", "trigger_groups", "preferred_weight", "nsfw")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_rows(catalog: Catalog, path: Path, query: str, fmt: str | None) -> int:
    """Write matching rows as Parquet, CSV, JSON (an array) or JSON lines; returns the row count."""
    kind = fmt or _FORMATS.get(path.suffix.lower())
    if kind not in ("parquet", "csv", "json", "jsonl"):
        raise CatalogError(f"Cannot tell the export format of {path}",
                           hint="Use a .parquet, .csv, .json or .jsonl file name, or pass format=…")  # fmt: skip
    rows: ResultSet = catalog.search(query, columns=_EXPORT_COLUMNS)
    if kind == "parquet":
        import pyarrow.parquet as pq

        _atomic_write(path, lambda tmp: pq.write_table(rows.arrow(), tmp))
    elif kind == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = rows.arrow()
        for i, field in enumerate(table.schema):
            if pa.types.is_list(field.type):
                joined = [", ".join(v) if v else "" for v in table.column(i).to_pylist()]
                table = table.set_column(i, field.name, pa.array(joined, pa.string()))
        _atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))
    else:
        records = rows.to_list()

        def write_json(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                if kind == "json":
                    json.dump(records, f, default=_json_default, ensure_ascii=False, indent=1)
                else:
                    for record in records:
                        f.write(json.dumps(record, default=_json_default, ensure_ascii=False) + "\n")

        _atomic_write(path, write_json)
    return len(rows)


def backup(catalog: Catalog, path: Path) -> int:
    """The whole catalog (rows, curation, pending curation, runs) as one portable JSON file."""
    loras = catalog.sql("SELECT * EXCLUDE (info) FROM loras ORDER BY id")
    curation = catalog.sql("SELECT c.*, l.path, l.name, l.size FROM curation c JOIN loras l ON l.id = c.lora_id "
                           "ORDER BY c.lora_id")  # fmt: skip
    pending = catalog.sql("SELECT * FROM pending_curation")
    runs = catalog.sql("SELECT * FROM import_runs ORDER BY id")
    doc = {
        "lorabench_backup": 1, "schema_version": SCHEMA_VERSION, "created": datetime.now(UTC).isoformat(),
        "source": catalog.path, "loras": loras.to_list(), "curation": curation.to_list(),
        "pending_curation": pending.to_list(), "import_runs": runs.to_list(),
    }  # fmt: skip

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, default=_json_default, ensure_ascii=False)

    _atomic_write(path, write)
    return len(loras)


def restore(catalog: Catalog, path: Path) -> dict[str, int]:
    """Apply a backup's curation: matched by sha256, tensor hash, path, then name + size.

    Curation whose file is not in this catalog yet is kept as pending and lands
    as soon as an import hashes a file with the same content.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"Cannot read the backup {path}: {exc}"
        raise CatalogError(msg, hint="Pass a file made by Catalog.backup().") from exc
    if not isinstance(doc, dict) or doc.get("lorabench_backup") != 1:
        raise CatalogError(f"{path} is not a lorabench backup", hint="Pass a file made by Catalog.backup().")
    entries = list(doc.get("curation") or []) + [
        {**json.loads(p["data"]), "sha256": p.get("sha256"), "tensor_sha256": p.get("tensor_sha256"),
         "name": p.get("name"), "size": p.get("size")} for p in doc.get("pending_curation") or []
    ]  # fmt: skip
    matched = pending = 0
    with catalog._gateway.session(write=True) as conn:
        for entry in entries:
            values = {k: entry.get(k) for k in _CURATION if k in entry}
            if isinstance(values.get("trigger_groups"), str):
                values["trigger_groups"] = json.loads(values["trigger_groups"])
            lora_id = _match(conn, entry)
            if lora_id is not None:
                write_curation(conn, lora_id, values)
                matched += 1
            else:
                conn.execute(
                    "INSERT INTO pending_curation VALUES (?, ?, ?, ?, ?, now())",
                    [entry.get("sha256"), entry.get("tensor_sha256"), entry.get("name"), entry.get("size"),
                     json.dumps(values, default=_json_default)],
                )  # fmt: skip
                pending += 1
    return {"matched": matched, "pending": pending}


def _match(conn: Any, entry: dict[str, Any]) -> int | None:
    probes = [
        ("sha256 = ?", [entry.get("sha256")]),
        ("tensor_sha256 = ?", [entry.get("tensor_sha256")]),
        ("path = ?", [entry.get("path")]),
        ("name = ? AND size = ?", [entry.get("name"), entry.get("size")]),
    ]
    for where, params in probes:
        if any(p is None for p in params):
            continue
        row = conn.execute(f"SELECT min(id) FROM loras WHERE {where}", params).fetchone()  # noqa: S608
        if row and row[0] is not None:
            return int(row[0])
    return None

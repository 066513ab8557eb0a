"""Generation results and their history in the catalog (tables from migration 2).

The queue writes each image to its final place first (temp name, fsync, rename) and then
calls :meth:`History.record`, so a row never points at a file that is not there. Deleting
goes the other way: rows first, then files. Results are linked to catalog LoRAs by the hash
the image's infotext gives (SD.Next: 8+ hex of the file's sha256 or addnet hash; A1111: 12
hex) and otherwise by name (``loras.name``, or with dots read as ``_`` as SD.Next does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorabench.config import home_dir
from lorabench.errors import CatalogError, NotFoundError
from lorabench.files import parse_infotext

if TYPE_CHECKING:
    from lorabench.catalog._catalog import Catalog

__all__ = ["History", "NewImage", "ResultRecord"]

logger = logging.getLogger("lorabench.catalog")

_UNSET: Any = object()
_LINK_RECHECK = 2.0
_HEX = frozenset("0123456789abcdef")
_COLUMNS = (
    "id", "job_id", "job_key", "image_index", "path", "format", "width", "height", "bytes", "content_sha256",
    "seed", "prompt", "negative_prompt", "request", "infotext", "params", "backend", "day", "created_at",
    "queue_wait_s", "generation_s", "total_s", "rating", "favorite",
)  # fmt: skip
_INSERTED = _COLUMNS[1:-2]  # the id comes from the sequence; rating and favourite start empty


def _insert_sql(rows: int) -> str:
    marks = "(" + ", ".join("?" * len(_INSERTED)) + ")"
    return (f"INSERT INTO results ({', '.join(_INSERTED)}) VALUES {', '.join([marks] * rows)} "  # noqa: S608
            "RETURNING id, image_index")  # fmt: skip


_SELECT = "SELECT " + ", ".join(f"r.{c}" for c in _COLUMNS) + " FROM results r"  # noqa: S608 (fixed column names)


@dataclass(frozen=True)
class NewImage:
    """An image already in its final place, to be recorded."""

    path: str
    format: str
    index: int
    nbytes: int
    sha256: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    infotext: str | None = None
    """The raw infotext the image carries (PNG ``parameters`` / EXIF UserComment)."""


@dataclass(frozen=True)
class ResultRecord:
    """One generated image as the catalog knows it."""

    id: int
    job_id: str
    job_key: str
    image_index: int
    path: str
    format: str
    width: int | None
    height: int | None
    bytes: int
    content_sha256: str
    seed: int | None
    prompt: str | None
    negative_prompt: str | None
    request: dict[str, Any] = field(repr=False)
    infotext: str | None = field(repr=False)
    params: dict[str, Any] = field(repr=False)
    """The parsed infotext (``lorabench.files.Infotext`` as a mapping)."""
    backend: str | None = None
    day: date | None = None
    created_at: datetime | None = None
    """UTC."""
    queue_wait_s: float | None = None
    generation_s: float | None = None
    total_s: float | None = None
    rating: int | None = None
    favorite: bool = False
    loras: list[dict[str, Any]] = field(default_factory=list)
    """``{"name", "weight", "hash", "lora_id", "matched_by"}`` per LoRA used, in order."""
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    """``{"sink", "ok", "attempts", "detail", "at"}`` per sink run, oldest first."""

    @property
    def lora_names(self) -> list[str]:
        return [str(item["name"]) for item in self.loras if item.get("name")]


def _stored(record: ResultRecord, column: str) -> Any:
    value = getattr(record, column)
    return json.dumps(value, ensure_ascii=False, default=str) if column in ("request", "params") else value


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class History:
    """Results of the generation queue, stored in a :class:`~lorabench.catalog.Catalog`.

    Parameters
    ----------
    catalog:
        The catalog holding the ``results`` tables.
    results_dir:
        The only folder whose files :meth:`delete` removes (default ``<LORABENCH_HOME>/results``);
        a row pointing elsewhere loses its row but the file is left alone, with a warning.
    """

    def __init__(self, catalog: Catalog, *, results_dir: str | os.PathLike[str] | None = None) -> None:
        self.catalog = catalog
        self._gateway = catalog._gateway
        self.results_dir = Path(results_dir) if results_dir is not None else home_dir() / "results"
        self._link_cache: dict[tuple[str, str | None], tuple[int | None, str | None]] = {}
        self._link_stamp: tuple[Any, ...] | None = None
        self._link_checked = -math.inf

    def __repr__(self) -> str:
        return f"History({self.catalog.path!r})"

    # ------------------------------------------------------------------ writing

    def record(
        self, job_id: str, job_key: str, request: Mapping[str, Any], images: Sequence[NewImage], *, day: date,
        backend: str | None = None, queue_wait_s: float | None = None, generation_s: float | None = None,
        total_s: float | None = None, created_at: datetime | None = None,
    ) -> list[ResultRecord]:  # fmt: skip
        """Insert one row per image (and its LoRAs) in one transaction; returns the new records."""
        when = created_at or datetime.now(UTC).replace(tzinfo=None)
        request = dict(request)
        prompt, negative = str(request.get("prompt") or ""), str(request.get("negative_prompt") or "")
        prepared: list[tuple[NewImage, dict[str, Any], list[dict[str, Any]]]] = []
        with self._gateway.session(write=True) as conn:
            links = self._links(conn)
            for image in images:
                parsed = parse_infotext(image.infotext) if image.infotext else None
                used = parsed.loras if parsed and parsed.loras else parse_infotext(prompt).loras
                params = parsed.to_dict() if parsed else {}
                params.pop("raw", None)
                prepared.append((image, params, [_linked(conn, links, item) for item in used]))
            if not prepared:
                return []
            shared = {"job_id": job_id, "job_key": job_key, "prompt": prompt, "negative_prompt": negative,
                      "request": request, "backend": backend, "day": day, "created_at": when,
                      "queue_wait_s": queue_wait_s, "generation_s": generation_s, "total_s": total_s}  # fmt: skip
            records = [
                ResultRecord(
                    id=0, image_index=image.index, path=image.path, format=image.format, width=image.width,
                    height=image.height, bytes=image.nbytes, content_sha256=image.sha256,
                    seed=image.seed if image.seed is not None else request.get("seed"), infotext=image.infotext,
                    params=params, loras=loras, **shared,
                )
                for image, params, loras in prepared
            ]  # fmt: skip
            # One statement per table: DuckDB's cost is per statement, not per row.
            values = [_stored(r, c) for r in records for c in _INSERTED]
            rows = conn.execute(_insert_sql(len(records)), values).fetchall()
            ids = {int(index): int(rid) for rid, index in rows}
            records = [dataclasses.replace(r, id=ids[r.image_index]) for r in records]
            lora_values = [
                v for r in records for n, item in enumerate(r.loras) for v in (r.id, n, *map(item.get, _LORA_KEYS))
            ]
            if lora_values:
                marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * (len(lora_values) // 7))
                conn.execute(f"INSERT INTO result_loras VALUES {marks}", lora_values)  # noqa: S608 (placeholders only)
        return records

    def _links(self, conn: Any) -> dict[tuple[str, str | None], tuple[int | None, str | None]]:
        """LoRA links found so far, kept while the ``loras`` table looks unchanged (checked at most
        every ``_LINK_RECHECK`` seconds, so an import shows up in links within that time)."""
        now = time.monotonic()
        if now - self._link_checked < _LINK_RECHECK:
            return self._link_cache
        stamp = tuple(conn.execute("SELECT count(*), max(id), max(updated_at), max(last_seen) FROM loras").fetchone())
        if stamp != self._link_stamp:
            self._link_cache, self._link_stamp = {}, stamp
        self._link_checked = now
        return self._link_cache

    def record_delivery(self, result_id: int, sink: str, *, ok: bool, attempts: int, detail: str | None) -> None:
        """Remember what one sink did with one result."""
        with self._gateway.session(write=True) as conn:
            conn.execute(
                "INSERT INTO result_deliveries VALUES (?, ?, ?, ?, ?, ?)",
                [int(result_id), sink, bool(ok), int(attempts), detail, datetime.now(UTC).replace(tzinfo=None)],
            )

    def update(self, result_id: int, *, rating: Any = _UNSET, favorite: Any = _UNSET) -> ResultRecord:
        """Rate (1-5 or ``None``) and/or (un)favourite a result; returns the updated record."""
        sets: list[str] = []
        params: list[Any] = []
        if rating is not _UNSET:
            if rating is not None and (isinstance(rating, bool) or rating not in range(1, 6)):
                raise CatalogError(f"rating must be 1-5 or None, not {rating!r}", hint="Use a whole number 1-5.")
            sets.append("rating = ?")
            params.append(rating)
        if favorite is not _UNSET:
            if not isinstance(favorite, bool):
                raise CatalogError(f"favorite must be True or False, not {favorite!r}", hint="Pass a bool.")
            sets.append("favorite = ?")
            params.append(favorite)
        with self._gateway.session(write=True) as conn:
            if not conn.execute("SELECT 1 FROM results WHERE id = ?", [int(result_id)]).fetchone():
                raise NotFoundError(f"No result with id {result_id}")
            if sets:
                conn.execute(f"UPDATE results SET {', '.join(sets)} WHERE id = ?", [*params, int(result_id)])  # noqa: S608
        return self.get(result_id)

    def rate(self, result_id: int, rating: int | None) -> ResultRecord:
        """Set a result's rating (1-5, or ``None`` to clear it)."""
        return self.update(result_id, rating=rating)

    def set_favorite(self, result_id: int, favorite: bool = True) -> ResultRecord:
        """Mark (or unmark) a result as a favourite."""
        return self.update(result_id, favorite=favorite)

    def delete(self, result_ids: Iterable[int], *, files: bool = True) -> int:
        """Delete results: rows first (one transaction), then their files (unless ``files=False``).
        Returns the rows deleted."""
        ids = sorted({int(i) for i in result_ids})
        if not ids:
            return 0
        with self._gateway.session(write=True) as conn:
            paths = [
                r[0] for r in conn.execute("SELECT path FROM results WHERE list_contains(?, id)", [ids]).fetchall()
            ]
            for table, column in (("result_loras", "result_id"), ("result_deliveries", "result_id"), ("results", "id")):
                conn.execute(f"DELETE FROM {table} WHERE list_contains(?, {column})", [ids])  # noqa: S608
        root = self.results_dir.resolve()
        for path in paths if files else ():
            target = Path(path)
            if not target.resolve().is_relative_to(root):
                logger.warning(
                    "lorabench: result file %s is outside %s; its row was deleted, the file kept", path, root
                )
                continue
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("lorabench: could not delete result file %s: %s", path, exc)
        return len(paths)

    def delete_job(self, job_id: str) -> int:
        """Delete every result of one job (rows and files)."""
        return self.delete(r.id for r in self.for_job(job_id))

    # ------------------------------------------------------------------ reading

    def get(self, result_id: int) -> ResultRecord:
        """One result; :class:`~lorabench.errors.NotFoundError` when there is none."""
        found = self._load([int(result_id)])
        if not found:
            raise NotFoundError(f"No result with id {result_id}")
        return found[0]

    def for_job(self, job_id: str) -> list[ResultRecord]:
        """The results of one job, in image order."""
        return self.search(job_id=job_id, limit=None, newest_first=False)

    def search(
        self, *, lora: str | int | None = None, day: date | str | None = None, since: date | datetime | None = None,
        until: date | datetime | None = None, rating: int | None = None, min_rating: int | None = None,
        favorite: bool | None = None, job_id: str | None = None, backend: str | None = None,
        prompt: str | None = None, limit: int | None = 100, offset: int = 0, newest_first: bool = True,
    ) -> list[ResultRecord]:  # fmt: skip
        """Results matching every filter given.

        ``lora`` is a catalog LoRA id (int) or a name (as used in the prompt, or the catalog's
        name); ``day`` the local date of the results folder; ``since``/``until`` a date (by
        ``day``, inclusive) or a datetime (by ``created_at``, naive = UTC); ``prompt`` a
        case-insensitive substring.
        """
        filters = {"lora": lora, "day": day, "since": since, "until": until, "rating": rating,
                   "min_rating": min_rating, "favorite": favorite, "job_id": job_id, "backend": backend,
                   "prompt": prompt}  # fmt: skip
        where, params = _where(filters)
        sql = f"SELECT r.id FROM results r WHERE {where} ORDER BY "  # noqa: S608
        sql += "r.created_at DESC, r.id DESC" if newest_first else "r.created_at, r.job_id, r.image_index, r.id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [max(0, int(limit)), max(0, int(offset))]
        with self._gateway.session() as conn:
            ids = [int(r[0]) for r in conn.execute(sql, params).fetchall()]
        return self._load(ids)

    def count(self, **filters: Any) -> int:
        """How many results match the filters of :meth:`search`."""
        unknown = set(filters) - {"lora", "day", "since", "until", *_SIMPLE}
        if unknown:
            raise TypeError(f"unknown filter(s): {sorted(unknown)}")
        where, params = _where(filters)
        with self._gateway.session() as conn:
            return int(conn.execute(f"SELECT count(*) FROM results r WHERE {where}", params).fetchone()[0])  # noqa: S608

    def jobs_with_results(self, job_ids: Iterable[str]) -> set[str]:
        """Which of ``job_ids`` have at least one result row."""
        wanted = sorted(set(job_ids))
        if not wanted:
            return set()
        with self._gateway.session() as conn:
            rows = conn.execute("SELECT DISTINCT job_id FROM results WHERE list_contains(?, job_id)", [wanted])
            return {r[0] for r in rows.fetchall()}

    def known_paths(self, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` a result row points at."""
        wanted = sorted(set(paths))
        if not wanted:
            return set()
        with self._gateway.session() as conn:
            rows = conn.execute("SELECT path FROM results WHERE list_contains(?, path)", [wanted]).fetchall()
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ helpers

    def _load(self, ids: Sequence[int]) -> list[ResultRecord]:
        if not ids:
            return []
        wanted = list(ids)
        with self._gateway.session() as conn:
            rows = conn.execute(_SELECT + " WHERE list_contains(?, r.id)", [wanted]).fetchall()
            lora_rows = conn.execute(
                "SELECT result_id, name, weight, hash, lora_id, matched_by FROM result_loras "
                "WHERE list_contains(?, result_id) ORDER BY result_id, position",
                [wanted],
            ).fetchall()
            delivery_rows = conn.execute(
                "SELECT result_id, sink, ok, attempts, detail, delivered_at FROM result_deliveries "
                "WHERE list_contains(?, result_id) ORDER BY delivered_at",
                [wanted],
            ).fetchall()
        loras: dict[int, list[dict[str, Any]]] = {}
        for rid, *values in lora_rows:
            loras.setdefault(rid, []).append(dict(zip(_LORA_KEYS, values, strict=True)))
        deliveries: dict[int, list[dict[str, Any]]] = {}
        for rid, *values in delivery_rows:
            deliveries.setdefault(rid, []).append(
                dict(zip(("sink", "ok", "attempts", "detail", "at"), values, strict=True))
            )
        by_id = {}
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            values["request"] = _json(values["request"]) or {}
            values["params"] = _json(values["params"]) or {}
            values["favorite"] = bool(values["favorite"])
            by_id[values["id"]] = ResultRecord(
                **values, loras=loras.get(values["id"], []), deliveries=deliveries.get(values["id"], [])
            )
        return [by_id[i] for i in wanted if i in by_id]


_LORA_KEYS = ("name", "weight", "hash", "lora_id", "matched_by")


def _linked(conn: Any, links: dict[tuple[str, str | None], Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """One used LoRA (from the infotext) with its catalog link."""
    name = str(item.get("name") or "")
    digest = str(item["hash"]).lower() if item.get("hash") else None
    if (name, digest) not in links:
        links[(name, digest)] = _link(conn, name, digest)
    lora_id, matched_by = links[(name, digest)]
    weight = item.get("weight")
    weight = float(weight) if isinstance(weight, int | float) and math.isfinite(weight) else None
    return {"name": name, "weight": weight, "hash": digest, "lora_id": lora_id, "matched_by": matched_by}


_SIMPLE: dict[str, tuple[str, Any]] = {
    "rating": ("r.rating = ?", int),
    "min_rating": ("r.rating >= ?", int),
    "favorite": ("r.favorite = ?", bool),
    "job_id": ("r.job_id = ?", str),
    "backend": ("r.backend = ?", str),
    "prompt": ("contains(lower(r.prompt), lower(?))", str),
}
_BY_LORA_ID = "EXISTS (SELECT 1 FROM result_loras l WHERE l.result_id = r.id AND l.lora_id = ?)"
_BY_LORA_NAME = ("EXISTS (SELECT 1 FROM result_loras l WHERE l.result_id = r.id AND (l.name = ? "
                 "OR l.lora_id IN (SELECT id FROM loras WHERE name = ?)))")  # fmt: skip


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause (placeholders only) for :meth:`History.search` filters."""
    clauses, params = ["TRUE"], []
    lora, day = filters.get("lora"), filters.get("day")
    if isinstance(lora, int) and not isinstance(lora, bool):
        clauses.append(_BY_LORA_ID)
        params.append(lora)
    elif lora is not None:
        clauses.append(_BY_LORA_NAME)
        params += [str(lora), str(lora)]
    if day is not None:
        clauses.append("r.day = ?")
        params.append(date.fromisoformat(day) if isinstance(day, str) else day)
    for key, op in (("since", ">="), ("until", "<=")):
        value = filters.get(key)
        if isinstance(value, datetime):
            clauses.append(f"r.created_at {op} ?")
            params.append(value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value)
        elif isinstance(value, date):
            clauses.append(f"r.day {op} ?")
            params.append(value)
    for key, (sql, cast) in _SIMPLE.items():
        value = filters.get(key)
        if value is not None and value != "":
            clauses.append(sql)
            params.append(cast(value))
    return " AND ".join(clauses), params


def _link(conn: Any, name: str, digest: str | None) -> tuple[int | None, str | None]:
    """The catalog LoRA a used LoRA refers to: by hash when given, else by name (one query)."""
    if not (digest and len(digest) >= 8 and set(digest) <= _HEX):
        digest = None
    if digest is None and not name:
        return None, None
    row = conn.execute(
        """WITH m AS (
               SELECT id, missing,
                      (? IS NOT NULL AND (starts_with(lower(sha256), ?) OR starts_with(lower(tensor_sha256), ?)
                       OR lower(autov2) = ? OR lower(autov3) = ?)) AS by_hash,
                      (name = ?) AS by_name, (replace(name, '.', '_') = ?) AS by_token
               FROM loras)
           SELECT id, CASE WHEN by_hash THEN 'hash' ELSE 'name' END FROM m
           WHERE by_hash OR by_name OR by_token
           ORDER BY by_hash DESC, by_name DESC, missing, id LIMIT 1""",
        [digest, digest, digest, digest, digest, name, name],
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else (None, None)

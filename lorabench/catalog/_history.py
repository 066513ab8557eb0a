"""Generation results and their history in the catalog (tables from migration 2).

The queue writes each image to its final place first (temp name, fsync, rename) and then
calls :meth:`History.record`, so a row never points at a file that is not there. Deleting
goes the other way: rows first, then files. Results are linked to catalog LoRAs by the hash
the image's infotext gives (SD.Next: 8+ hex of the file's sha256 or addnet hash; A1111: 12
hex) and otherwise by name (``loras.name``, or with dots read as ``_`` as SD.Next does).
"""

from __future__ import annotations

import json
import logging
import math
import os
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
_HEX = frozenset("0123456789abcdef")
_COLUMNS = (
    "id",
    "job_id",
    "job_key",
    "image_index",
    "path",
    "format",
    "width",
    "height",
    "bytes",
    "content_sha256",
    "seed",
    "prompt",
    "negative_prompt",
    "request",
    "infotext",
    "params",
    "backend",
    "day",
    "created_at",
    "queue_wait_s",
    "generation_s",
    "total_s",
    "rating",
    "favorite",
)
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

    def __repr__(self) -> str:
        return f"History({self.catalog.path!r})"

    # ------------------------------------------------------------------ writing

    def record(
        self,
        job_id: str,
        job_key: str,
        request: Mapping[str, Any],
        images: Sequence[NewImage],
        *,
        day: date,
        backend: str | None = None,
        queue_wait_s: float | None = None,
        generation_s: float | None = None,
        total_s: float | None = None,
        created_at: datetime | None = None,
    ) -> list[ResultRecord]:
        """Insert one row per image (and its LoRAs) in one transaction; returns the new records."""
        when = created_at or datetime.now(UTC).replace(tzinfo=None)
        request_json = json.dumps(dict(request), ensure_ascii=False, allow_nan=False, default=str)
        prompt = str(request.get("prompt") or "")
        ids: list[int] = []
        with self._gateway.session(write=True) as conn:
            links: dict[tuple[str, str | None], tuple[int | None, str | None]] = {}
            for image in images:
                parsed = parse_infotext(image.infotext) if image.infotext else None
                loras = parsed.loras if parsed and parsed.loras else parse_infotext(prompt).loras
                params = parsed.to_dict() if parsed else {}
                params.pop("raw", None)
                row = conn.execute(
                    """INSERT INTO results (job_id, job_key, image_index, path, format, width, height, bytes,
                           content_sha256, seed, prompt, negative_prompt, request, infotext, params, backend,
                           day, created_at, queue_wait_s, generation_s, total_s)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    [
                        job_id,
                        job_key,
                        image.index,
                        image.path,
                        image.format,
                        image.width,
                        image.height,
                        image.nbytes,
                        image.sha256,
                        image.seed if image.seed is not None else request.get("seed"),
                        prompt,
                        str(request.get("negative_prompt") or ""),
                        request_json,
                        image.infotext,
                        json.dumps(params, ensure_ascii=False, default=str),
                        backend,
                        day,
                        when,
                        queue_wait_s,
                        generation_s,
                        total_s,
                    ],
                ).fetchone()
                result_id = int(row[0])
                ids.append(result_id)
                for position, item in enumerate(loras):
                    name = str(item.get("name") or "")
                    digest = str(item["hash"]).lower() if item.get("hash") else None
                    if (name, digest) not in links:
                        links[(name, digest)] = _link(conn, name, digest)
                    lora_id, matched_by = links[(name, digest)]
                    weight = item.get("weight")
                    weight = float(weight) if isinstance(weight, int | float) and math.isfinite(weight) else None
                    conn.execute(
                        "INSERT INTO result_loras VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [result_id, position, name, weight, digest, lora_id, matched_by],
                    )
        return self._load(ids)

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

    def delete(self, result_ids: Iterable[int]) -> int:
        """Delete results: rows first (one transaction), then their files. Returns the rows deleted."""
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
        for path in paths:
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
        self,
        *,
        lora: str | int | None = None,
        day: date | str | None = None,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        rating: int | None = None,
        min_rating: int | None = None,
        favorite: bool | None = None,
        job_id: str | None = None,
        backend: str | None = None,
        prompt: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[ResultRecord]:
        """Results matching every filter given.

        ``lora`` is a catalog LoRA id (int) or a name (as used in the prompt, or the catalog's
        name); ``day`` the local date of the results folder; ``since``/``until`` a date (by
        ``day``, inclusive) or a datetime (by ``created_at``, naive = UTC); ``prompt`` a
        case-insensitive substring.
        """
        where, params = self._where(lora, day, since, until, rating, min_rating, favorite, job_id, backend, prompt)
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
        keys = ("lora", "day", "since", "until", "rating", "min_rating", "favorite", "job_id", "backend", "prompt")
        unknown = set(filters) - set(keys)
        if unknown:
            raise TypeError(f"unknown filter(s): {sorted(unknown)}")
        where, params = self._where(*(filters.get(k) for k in keys))
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

    @staticmethod
    def _where(
        lora: Any,
        day: Any,
        since: Any,
        until: Any,
        rating: Any,
        min_rating: Any,
        favorite: Any,
        job_id: Any,
        backend: Any,
        prompt: Any,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if isinstance(lora, int) and not isinstance(lora, bool):
            clauses.append("EXISTS (SELECT 1 FROM result_loras l WHERE l.result_id = r.id AND l.lora_id = ?)")
            params.append(lora)
        elif lora is not None:
            clauses.append(
                "EXISTS (SELECT 1 FROM result_loras l WHERE l.result_id = r.id AND (l.name = ? OR l.lora_id IN "
                "(SELECT id FROM loras WHERE name = ?)))"
            )
            params += [str(lora), str(lora)]
        if day is not None:
            clauses.append("r.day = ?")
            params.append(date.fromisoformat(day) if isinstance(day, str) else day)
        for value, op in ((since, ">="), (until, "<=")):
            if isinstance(value, datetime):
                if value.tzinfo is not None:
                    value = value.astimezone(UTC).replace(tzinfo=None)
                clauses.append(f"r.created_at {op} ?")
                params.append(value)
            elif isinstance(value, date):
                clauses.append(f"r.day {op} ?")
                params.append(value)
        if rating is not None:
            clauses.append("r.rating = ?")
            params.append(int(rating))
        if min_rating is not None:
            clauses.append("r.rating >= ?")
            params.append(int(min_rating))
        if favorite is not None:
            clauses.append("r.favorite = ?")
            params.append(bool(favorite))
        for column, value in (("job_id", job_id), ("backend", backend)):
            if value is not None:
                clauses.append(f"r.{column} = ?")
                params.append(str(value))
        if prompt:
            clauses.append("contains(lower(r.prompt), lower(?))")
            params.append(str(prompt))
        return " AND ".join(clauses), params

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
        for rid, name, weight, digest, lora_id, matched_by in lora_rows:
            loras.setdefault(rid, []).append(
                {"name": name, "weight": weight, "hash": digest, "lora_id": lora_id, "matched_by": matched_by}
            )
        deliveries: dict[int, list[dict[str, Any]]] = {}
        for rid, sink, ok, attempts, detail, at in delivery_rows:
            deliveries.setdefault(rid, []).append(
                {"sink": sink, "ok": ok, "attempts": attempts, "detail": detail, "at": at}
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


def _link(conn: Any, name: str, digest: str | None) -> tuple[int | None, str | None]:
    """The catalog LoRA a used LoRA refers to: by hash when given, else by name."""
    if digest and len(digest) >= 8 and set(digest) <= _HEX:
        row = conn.execute(
            """SELECT id FROM loras WHERE starts_with(lower(sha256), ?) OR starts_with(lower(tensor_sha256), ?)
                   OR lower(autov2) = ? OR lower(autov3) = ?
               ORDER BY missing, id LIMIT 1""",
            [digest, digest, digest, digest],
        ).fetchone()
        if row:
            return int(row[0]), "hash"
    if name:
        row = (
            conn.execute("SELECT id FROM loras WHERE name = ? ORDER BY missing, id LIMIT 1", [name]).fetchone()
            or conn.execute(
                "SELECT id FROM loras WHERE replace(name, '.', '_') = ? ORDER BY missing, id LIMIT 1", [name]
            ).fetchone()
        )
        if row:
            return int(row[0]), "name"
    return None, None

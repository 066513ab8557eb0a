"""Search fields: the allow-lists behind the search language, its help text, and facet counts.

Every identifier or SQL fragment that :mod:`lorabench.catalog._query` formats into SQL comes from the tables
in this module; user values never do. :func:`facets` counts values of allow-listed columns over the rows a
compiled query matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lorabench.errors import CatalogError

if TYPE_CHECKING:
    import duckdb

    from lorabench.catalog._query import CompiledQuery

__all__ = ["FACET_FIELDS", "FIELDS", "FieldInfo", "describe_syntax", "facets"]


@dataclass(frozen=True)
class FieldInfo:
    """A search field: its ``kind``, accepted ``aliases``, ``help`` text and known ``values`` (if any)."""

    name: str
    kind: str  # text | prefix | exact | list | numeric | date | flag | sort
    help: str
    aliases: tuple[str, ...] = ()
    values: tuple[str, ...] = ()


# SQL fragments over ``lora_view l``; every user value is a ``?`` parameter.
BASE_ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "1.5": "sd1", "sd21": "sd2", "sd2.1": "sd2", "2.1": "sd2",
                 "xl": "sdxl", "flux": "flux1", "flux.1": "flux1", "sd3.5": "sd3"}  # fmt: skip
LYCORIS = ("loha", "lokr", "ia3", "full", "oft", "boft", "glora", "norm")
IS_SQL: dict[str, tuple[str, list[Any]]] = {
    "favorite": ("l.favorite", []), "fav": ("l.favorite", []), "missing": ("l.missing", []),
    "offline": ("l.offline", []), "nsfw": ("l.nsfw", []), "dora": ("l.dora", []),
    "error": ("l.status = ?", ["error"]), "unsafe": ("l.status = ?", ["unsafe"]),
    "ok": ("l.status = ?", ["ok"]), "rated": ("l.rating IS NOT NULL", []),
    "unrated": ("l.rating IS NULL", []),
}  # fmt: skip
HAS_SQL: dict[str, tuple[str, list[Any]]] = {
    "preview": ("l.preview_path <> ?", [""]), "triggers": ("len(l.trigger_words) > 0", []),
    "tags": ("coalesce(len(l.training_tags), 0) + coalesce(len(l.user_tags), 0) > 0", []),
    "notes": ("trim(l.notes) <> ?", [""]), "hash": ("l.sha256 <> ?", [""]),
    "description": ("trim(l.description) <> ?", [""]), "title": ("trim(l.title) <> ?", [""]),
    "author": ("trim(l.author) <> ?", [""]), "sidecar": ("len(l.sidecar_kinds) > 0", []),
    "rating": ("l.rating IS NOT NULL", []), "weight": ("l.preferred_weight IS NOT NULL", []),
    "base": ("lower(l.base_model) NOT IN (?, ?)", ["", "unknown"]),
}  # fmt: skip
SORT_SQL = {"name": "lower(l.name)", "title": "lower(l.title)", "path": "lower(l.path)",
            "folder": "lower(l.folder)", "author": "lower(l.author)", "rating": "l.rating", "size": "l.size",
            "rank": "l.rank", "alpha": "l.alpha", "modified": "l.mtime", "added": "l.first_seen",
            "base": "l.base_model", "algo": "l.algorithm", "epochs": "l.epochs", "steps": "l.steps",
            "images": "l.images", "weight": "l.preferred_weight", "id": "l.id"}  # fmt: skip
SORT_ALIASES = {"algorithm": "algo", "mtime": "modified", "first_seen": "added"}
DEFAULT_ORDER = "lower(l.name) ASC NULLS LAST, l.id"

_F = FieldInfo
FIELDS: Mapping[str, FieldInfo] = MappingProxyType({f.name: f for f in (
    _F("text", "text", "substring of name, title, description, folder, trigger words or tags (a bare word); "
       "a word with / or \\ also matches the path"),
    _F("name", "text", "substring of the file name"),
    _F("title", "text", "substring of the title"),
    _F("path", "text", "substring of the full path"),
    _F("folder", "prefix", "the folder (relative to its root) starts with the value"),
    _F("author", "text", "substring of the author"),
    _F("description", "text", "substring of the description", ("desc",)),
    _F("notes", "text", "substring of your notes"),
    _F("base", "exact", "base model family or hint (sd1 sd2 sdxl sd3 flux1 pony …; sd15 xl flux sd3.5 accepted)",
       values=("sd1", "sd2", "sdxl", "sd3", "flux1", "pony", "illustrious", "noobai", "unknown")),
    _F("hint", "text", "substring of the base-model hint (pony, illustrious, …)"),
    _F("algorithm", "exact", "training algorithm; lycoris = any LyCORIS type, dora = DoRA", ("algo",),
       ("lora", "locon", "loha", "lokr", "ia3", "full", "oft", "boft", "glora", "norm", "lycoris", "dora")),
    _F("format", "exact", "key layout (kohya, peft, diffusers, …)"),
    _F("dtype", "exact", "tensor dtype (F16, BF16, F32, …)"),
    _F("status", "exact", "ok, error or unsafe", values=("ok", "error", "unsafe")),
    _F("network", "text", "substring of the network module"),
    _F("optimizer", "text", "substring of the optimizer"),
    _F("trigger", "list", "substring of a trigger word", ("triggers",)),
    _F("tag", "list", "a training or user tag, exactly; * is a wildcard", ("tags",)),
    _F("utag", "list", "a user tag, exactly; * is a wildcard", ("usertag",)),
    _F("sidecar", "list", "a sidecar kind (civitai_info, a1111_json, …); * is a wildcard"),
    _F("hash", "prefix", "prefix of SHA256, AutoV2, AutoV3 or the tensor hash (hex)"),
    _F("id", "numeric", "catalog id"),
    _F("rating", "numeric", "your rating 1..5; 0 or none = unrated (unrated counts as 0)"),
    _F("rank", "numeric", "network rank (dim)"),
    _F("alpha", "numeric", "network alpha"),
    _F("size", "numeric", "file size; units b kb mb gb tb kib mib gib tib (kb = 1000)"),
    _F("epochs", "numeric", "training epochs"),
    _F("steps", "numeric", "training steps"),
    _F("images", "numeric", "training images"),
    _F("weight", "numeric", "preferred weight"),
    _F("tensors", "numeric", "number of tensors"),
    _F("modules", "numeric", "number of adapted modules"),
    _F("added", "date", "first seen: YYYY-MM-DD, or an age like 7d / 2w / 12h"),
    _F("modified", "date", "file modified: YYYY-MM-DD, or an age like 7d / 2w / 12h"),
    _F("is", "flag", "state", values=tuple(IS_SQL)),
    _F("has", "flag", "presence", values=tuple(HAS_SQL)),
    _F("sort", "sort", "order by a key; -key descending; several allowed", values=tuple(SORT_SQL)),
)})  # fmt: skip
FIELD_NAMES = {alias: f.name for f in FIELDS.values() for alias in (f.name, *f.aliases)}
TEXT_COLUMNS = {"name": "name", "title": "title", "path": "path", "author": "author",
                "description": "description", "notes": "notes", "hint": "base_model_hint",
                "network": "network_module", "optimizer": "optimizer"}  # fmt: skip
NUMERIC_COLUMNS = {"id": "l.id", "rating": "coalesce(l.rating, 0)", "rank": "l.rank", "alpha": "l.alpha",
                   "size": "l.size", "epochs": "l.epochs", "steps": "l.steps", "images": "l.images",
                   "weight": "l.preferred_weight", "tensors": "l.n_tensors", "modules": "l.n_modules"}  # fmt: skip
DATE_COLUMNS = {"added": "l.first_seen", "modified": "l.mtime"}
FREE_TEXT_COLUMNS = ("name", "title", "description", "path")
FREE_TEXT_LISTS = ("trigger_words", "training_tags", "user_tags")


def describe_syntax() -> str:
    """Plain-text help for the search language (for ``--help``, tooltips and the README)."""
    width = max(len(" ".join((f.name, *f.aliases))) for f in FIELDS.values()) + 5
    lines = [
        'Words and "quoted phrases" must all match (name, title, description, path, trigger words, tags).',
        'field:value filters; quote values with spaces: title:"my lora" (\\" escapes a quote).',
        "Numbers: rating:5 rating:>=4 rank:<16 rank:4..8 rank:4.. size:>1.5gb; rating:none = unrated.",
        "Dates: added:>=2026-01-01 modified:<2025-06-01 added:7d (last 7 days) added:>30d (older).",
        "-term excludes (also NOT term); a OR b; AND is optional; (a b) OR c groups.",
        "OR binds tighter than the implicit AND: a b OR c means a AND (b OR c).",
        "",
    ]
    for f in FIELDS.values():
        names = " ".join(f"{n}:" for n in (f.name, *f.aliases))
        values = f"  [{' '.join(f.values)}]" if f.kind in ("flag", "sort") else ""
        lines.append(f"  {names:<{width}}{f.help}{values}")
    return "\n".join(lines)


FACET_FIELDS: Mapping[str, bool] = MappingProxyType({
    "base_model": False, "base_model_hint": False, "algorithm": False, "format": False, "dtype": False,
    "status": False, "root": False, "folder": False, "author": False, "network_module": False,
    "optimizer": False, "rating": False, "rank": False, "favorite": False, "nsfw": False, "dora": False,
    "missing": False, "offline": False, "trigger_words": True, "training_tags": True, "user_tags": True,
    "sidecar_kinds": True,
})  # fmt: skip
"""Columns :func:`facets` can count (``True`` for list columns, counted per element)."""

DEFAULT_FACETS = ("base_model", "algorithm", "training_tags", "folder")
_CURATION_FACETS = frozenset({"rating", "favorite", "nsfw", "user_tags"})
MAX_FACET_LIMIT = 1000


def facets(
    conn: duckdb.DuckDBPyConnection,
    compiled: CompiledQuery,
    fields: Sequence[str] = DEFAULT_FACETS,
    limit: int = 20,
) -> dict[str, list[tuple[Any, int]]]:
    """The ``limit`` most common values of each field over the rows ``compiled`` matches.

    Returns ``{field: [(value, count), …]}``, most common first, ties by value; NULLs are left out and
    a list column counts each LoRA once per distinct element. ``fields`` must be in
    :data:`FACET_FIELDS`; ``compiled`` must come from :func:`~lorabench.catalog._query.compile_query`.
    """
    if isinstance(fields, str):
        fields = (fields,)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_FACET_LIMIT:
        raise CatalogError(f"Facet limit must be an integer from 1 to {MAX_FACET_LIMIT}, not {limit!r}")
    unknown = [name for name in fields if name not in FACET_FIELDS]
    if unknown:
        raise CatalogError(f"Unknown facet field {unknown[0]!r}", hint=f"Facet fields: {', '.join(FACET_FIELDS)}.")
    fields = list(dict.fromkeys(fields))
    if not fields:
        return {}
    # One statement: the WHERE is evaluated once into a materialised CTE and each field is counted from
    # it. Only allow-listed column names and the compiled WHERE (placeholders only) are formatted in.
    curated = compiled.source == "lora_view" or any(f in _CURATION_FACETS for f in fields)
    columns = ", ".join(f"l.{name}" for name in fields)
    parts = []
    for i, name in enumerate(fields):
        # List columns hold distinct values (writers and migration 3 see to it): unnest counts each LoRA once.
        value = f"unnest({name})" if FACET_FIELDS[name] else name
        top = (f"SELECT value, count(*) AS n FROM (SELECT {value} AS value FROM hits) "  # noqa: S608
               "WHERE value IS NOT NULL GROUP BY value ORDER BY n DESC, value LIMIT ?")  # fmt: skip
        parts.append(f"(SELECT list({{'v': value, 'n': n}} ORDER BY n DESC, value) FROM ({top})) AS f{i}")  # noqa: S608
    sql = (f"WITH hits AS MATERIALIZED (SELECT {columns} FROM {'lora_view' if curated else 'lora_core'} l "  # noqa: S608
           f"WHERE {compiled.where}) SELECT {', '.join(parts)}")  # fmt: skip
    row = conn.execute(sql, [*compiled.params, *[limit] * len(fields)]).fetchone() or ()
    return {name: [(pair["v"], int(pair["n"])) for pair in row[i] or []] for i, name in enumerate(fields)}

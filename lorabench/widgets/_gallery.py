"""``Gallery``: a virtualized, searchable grid of a catalog's LoRAs with a detail panel.

Python holds the truth (the query, sort, filters, selection and focus are traits); the browser
draws only the cards in view and asks for what it needs with custom messages:

=================  ==========================================================  ==========================
message            request                                                     reply
=================  ==========================================================  ==========================
``rows``           ``{start, count}`` (count ≤ 500)                            ``{generation, start,
                                                                               rows, total}``
``thumbs``         ``{ids, size}`` (≤ 48 ids; size ``card`` or ``large``)      ``{items}`` + WebP buffers
``facets``         ``{}``                                                      ``{generation, facets}``
``select``         ``{mode: "range", start, end, additive}`` or ``{mode:       ``{selected: n}``
                   "all"}``
``update``         ``{id, field, value}`` (curation fields only)               ``{ok: true}``
=================  ==========================================================  ==========================

Every request carries a ``uuid`` and gets one reply, with ``error`` when it was refused.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import traitlets as t

from lorabench.catalog import Catalog, compile_query
from lorabench.errors import CatalogError, NotFoundError, QuerySyntaxError
from lorabench.widgets._base import LorabenchWidget, MessageError, check_id_list, check_int
from lorabench.widgets._detail import EDITABLE, ROW_FIELDS, compact_row, curation_value, detail_of
from lorabench.widgets._thumbnails import SIZES, ThumbnailCache

__all__ = ["FACETS", "SORTS", "Gallery"]

logger = logging.getLogger("lorabench.widgets")
STATIC = Path(__file__).parent / "static"

#: Sort choices: value (the query language's ``sort:`` key) → label.
SORTS: dict[str, str] = {
    "name": "Name", "-added": "Newest", "-modified": "Recently modified", "-rating": "Rating",
    "base": "Base model", "algo": "Algorithm", "-size": "Largest", "-rank": "Highest rank",
}  # fmt: skip
#: Facet filters: catalog facet field → (query-language field, label).
FACETS: dict[str, tuple[str, str]] = {
    "base_model": ("base", "Base model"), "algorithm": ("algo", "Algorithm"),
    "training_tags": ("tag", "Tags"), "folder": ("folder", "Folder"),
}  # fmt: skip
_ROW_COLUMNS = ["id", "name", "title", "base_model", "algorithm", "rating", "favorite", "nsfw", "preview_path",
                "root", "status"]  # fmt: skip
MAX_ROWS = 500
MAX_THUMBS = 48
MAX_THUMB_BYTES = 6 * 1024 * 1024
MAX_SELECTION = 1_000_000
MAX_FILTER_VALUES = 50
FACET_LIMIT = 30
_QUERY_CHARS = 2000
_ID_TERMS = 90  # ids per "id:1 OR id:2 …" lookup (the query language allows 100 terms)
_KNOWN_LIMIT = 2_000_000
_ROW_MEMO = 20_000


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _id_query(ids: Iterable[int]) -> str:
    return " OR ".join(f"id:{int(i)}" for i in ids)


class Gallery(LorabenchWidget):
    """A virtualized grid of a catalog's LoRAs: search, facet filters, sorting, selection, detail.

    Parameters
    ----------
    catalog:
        A :class:`~lorabench.catalog.Catalog`, or the path of a catalog file.
    query:
        The initial search in lorabench's query language.
    thumbnails:
        Where thumbnails are cached; default ``<LORABENCH_HOME>/thumbnails``.
    **traits:
        Initial values of ``sort``, ``filters``, ``selected``, ``focused``, ``nsfw_blur``, ``height``.

    Traits
    ------
    query : str
        The search box (the query language; see ``lorabench.catalog.describe_syntax()``).
    sort : str
        One of :data:`SORTS` (``"name"``, ``"-rating"``, …); a ``sort:`` in the query takes precedence.
    filters : dict[str, list[str]]
        Facet filters, e.g. ``{"base_model": ["sdxl"], "training_tags": ["1girl"]}``; values of one
        field are OR-ed, fields are AND-ed with the query.
    total : int
        How many LoRAs match (read-only).
    selected : list[int]
        Selected catalog ids; observe it, or set it to select from Python.
    focused : int | None
        The id shown in the detail panel.
    nsfw_blur : bool
        Blur previews of LoRAs flagged NSFW (default on).
    error : str
        The query's syntax error, if any (the grid keeps showing the last valid search).
    """

    _esm = STATIC / "gallery.js"
    _css = STATIC / "gallery.css"

    query = t.Unicode("").tag(sync=True)
    sort = t.Unicode("name").tag(sync=True)
    filters = t.Dict().tag(sync=True)
    total = t.Int(0, read_only=True).tag(sync=True)
    selected = t.List(t.Int()).tag(sync=True)
    focused = t.Int(None, allow_none=True).tag(sync=True)
    nsfw_blur = t.Bool(True).tag(sync=True)
    height = t.Int(620, min=240, max=4000).tag(sync=True)
    error = t.Unicode("", read_only=True).tag(sync=True)
    error_position = t.Int(None, allow_none=True, read_only=True).tag(sync=True)
    sort_options = t.List(read_only=True).tag(sync=True)
    facet_fields = t.List(read_only=True).tag(sync=True)
    _generation = t.Int(0).tag(sync=True)
    _detail = t.Dict().tag(sync=True)
    _row_fields = t.List(list(ROW_FIELDS)).tag(sync=True)

    _handlers: ClassVar[dict[str, str]] = {"rows": "_on_rows", "thumbs": "_on_thumbs", "facets": "_on_facets",
                                           "select": "_on_select", "update": "_on_update"}  # fmt: skip
    _browser_writable: ClassVar[frozenset[str]] = frozenset(
        {"query", "sort", "filters", "selected", "focused", "nsfw_blur"}
    )

    def __init__(
        self,
        catalog: Catalog | str | os.PathLike[str],
        query: str = "",
        *,
        thumbnails: ThumbnailCache | None = None,
        **traits: Any,
    ) -> None:
        self._catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self._thumbs = thumbnails if thumbnails is not None else ThumbnailCache()
        self._active: str | None = None  # the last query that compiled (what the grid shows)
        self._known: set[int] = set()  # ids the catalog has confirmed
        self._rows: OrderedDict[int, tuple[str | None, str | None]] = OrderedDict()  # id -> (preview, root)
        self._browser_write = False
        self._ready = False
        super().__init__(query=query, **traits)
        self.set_trait("sort_options", [[k, v] for k, v in SORTS.items()])
        self.set_trait("facet_fields", [[k, label] for k, (_q, label) in FACETS.items()])
        self._ready = True
        self.refresh()
        if self.focused is not None:
            self._show_detail()

    def __repr__(self) -> str:
        return f"<Gallery {self.query!r}: {self.total} LoRAs, {len(self.selected)} selected>"

    @property
    def catalog(self) -> Catalog:
        """The catalog this gallery shows."""
        return self._catalog

    # -- the search ---------------------------------------------------------------------------------

    def effective_query(self, *, without: str | None = None, sort: bool = True) -> str:
        """The query the grid runs: the search box, the facet filters (less ``without``) and the sort."""
        parts = [self.query.strip()] if self.query.strip() else []
        for field, values in self.filters.items():
            if field == without or field not in FACETS:
                continue
            key = FACETS[field][0]
            terms = [f"{key}:{_quote(v)}" for v in values]
            parts.append(terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")")
        if sort:
            parts.append(f"sort:{self.sort}")
        return " ".join(parts)

    def refresh(self) -> None:
        """Run the search again (e.g. after an import) and redraw the grid."""
        if not self._ready:
            return
        try:
            compile_query(self.query)  # errors at positions of the user's own text
            query = self.effective_query()
            total = self._catalog.count(query)
        except QuerySyntaxError as exc:
            position = exc.position if exc.position is not None and exc.position <= len(self.query) else None
            with self.hold_sync():
                self.set_trait("error", exc.message)
                self.set_trait("error_position", position)
            return
        self._active = query
        with self.hold_sync():
            self.set_trait("error", "")
            self.set_trait("error_position", None)
            self.set_trait("total", total)
            self._generation += 1

    @t.observe("query", "sort", "filters")
    def _search_changed(self, _change: dict[str, Any]) -> None:
        self.refresh()

    # -- validation ---------------------------------------------------------------------------------

    def _from_browser(self, name: str, value: Any) -> Any:
        if name == "query":
            if not isinstance(value, str):
                raise MessageError("query must be a string")
            return value[:_QUERY_CHARS]
        if name == "sort":
            if value not in SORTS:
                raise MessageError(f"unknown sort {str(value)[:40]!r}")
            return value
        if name == "nsfw_blur":
            if not isinstance(value, bool):
                raise MessageError("nsfw_blur must be true or false")
            return value
        if name == "filters":
            if not isinstance(value, dict):
                raise MessageError("filters must be an object")
            return value
        if name == "focused":
            if value is None:
                return None
            return check_id_list([value], "focused", 1)[0]
        if name == "selected":
            ids = check_id_list(value, "selected", MAX_SELECTION)
            return [i for i in ids if i in self._existing(ids)]  # drop unknown ids (logged)
        return value

    def set_state(self, sync_data: dict[str, Any]) -> None:
        self._browser_write = True
        try:
            super().set_state(sync_data)
        finally:
            self._browser_write = False

    @t.validate("sort")
    def _valid_sort(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in SORTS:
            raise t.TraitError(f"sort must be one of {', '.join(SORTS)}, not {proposal['value']!r}")
        return proposal["value"]

    @t.validate("filters")
    def _valid_filters(self, proposal: dict[str, Any]) -> dict[str, list[str]]:
        clean: dict[str, list[str]] = {}
        for field, values in dict(proposal["value"]).items():
            if field not in FACETS:
                raise t.TraitError(f"unknown filter field {str(field)[:40]!r}; choose from {', '.join(FACETS)}")
            if isinstance(values, str) or not isinstance(values, list | tuple):
                raise t.TraitError(f"filters[{field!r}] must be a list of values")
            if len(values) > MAX_FILTER_VALUES:
                raise t.TraitError(f"filters[{field!r}] has more than {MAX_FILTER_VALUES} values")
            kept = [str(v)[:256] for v in values if isinstance(v, str | int | float) and str(v).strip()]
            if kept:
                clean[field] = list(dict.fromkeys(kept))
        return clean

    @t.validate("selected")
    def _valid_selected(self, proposal: dict[str, Any]) -> list[int]:
        ids = list(dict.fromkeys(int(i) for i in proposal["value"]))
        if len(ids) > MAX_SELECTION:
            raise t.TraitError(f"at most {MAX_SELECTION:,} LoRAs can be selected")
        existing = self._existing(ids)
        missing = [i for i in ids if i not in existing]
        if missing:
            if not self._browser_write:
                raise t.TraitError(f"no LoRA with id(s) {missing[:10]} in {self._catalog.path}")
            logger.warning("Dropped %d unknown id(s) from the browser's selection", len(missing))
        return [i for i in ids if i in existing]

    @t.validate("focused")
    def _valid_focused(self, proposal: dict[str, Any]) -> int | None:
        value = proposal["value"]
        if value is not None and not self._existing([value]):
            if self._browser_write:
                logger.warning("Ignored focus on unknown id %s from the browser", value)
                return self.focused
            raise t.TraitError(f"no LoRA with id {value} in {self._catalog.path}")
        return value

    def _existing(self, ids: list[int]) -> set[int]:
        """The subset of ``ids`` that are rows of the catalog."""
        unknown = [i for i in ids if i not in self._known]
        if unknown:
            if len(unknown) <= _ID_TERMS:
                found = self._catalog.search(_id_query(unknown), columns=["id"]).ids
            else:
                found = self._catalog.search("", columns=["id"]).ids
            self._remember(found)
        return {i for i in ids if i in self._known}

    def _remember(self, ids: Iterable[int]) -> None:
        if len(self._known) > _KNOWN_LIMIT:
            self._known.clear()
        self._known.update(int(i) for i in ids)

    # -- detail -------------------------------------------------------------------------------------

    @t.observe("focused")
    def _focus_changed(self, _change: dict[str, Any]) -> None:
        self._show_detail()

    def _show_detail(self, record: dict[str, Any] | None = None) -> None:
        if self.focused is None:
            self._detail = {}
            return
        try:
            record = record or self._catalog.get(self.focused)
        except NotFoundError:
            self._detail = {}
            return
        self._detail = detail_of(record)

    # -- message handlers ---------------------------------------------------------------------------

    def _thumb_key(self, preview: str | None) -> str | None:
        return self._thumbs.known_key(preview) if preview else None

    def _on_rows(self, msg: dict[str, Any], _buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        start = check_int(msg, "start", 0, 10**9)
        count = check_int(msg, "count", 1, MAX_ROWS)
        if self._active is None:
            return {"generation": self._generation, "start": start, "rows": [], "total": 0}, []
        if start > self.total:
            raise MessageError(f"start {start} is past the end ({self.total} rows)")
        result = self._catalog.search(self._active, limit=count, offset=start, columns=_ROW_COLUMNS)
        rows = []
        for record in result:
            lora_id = int(record["id"])
            self._rows[lora_id] = (record["preview_path"], record["root"])
            self._rows.move_to_end(lora_id)
            rows.append(compact_row(record, self._thumb_key(record["preview_path"])))
        while len(self._rows) > _ROW_MEMO:
            self._rows.popitem(last=False)
        self._remember(r[0] for r in rows)
        return {"generation": self._generation, "start": start, "rows": rows, "total": result.total}, []

    def _previews(self, ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
        out = {i: self._rows[i] for i in ids if i in self._rows}
        missing = [i for i in ids if i not in out]
        if missing:
            for record in self._catalog.search(_id_query(missing), columns=["id", "preview_path", "root"]):
                out[int(record["id"])] = (record["preview_path"], record["root"])
        absent = [i for i in ids if i not in out]
        if absent:
            raise MessageError(f"no LoRA with id(s) {absent[:10]}")
        return out

    def _on_thumbs(self, msg: dict[str, Any], _buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        ids = check_id_list(msg.get("ids"), "ids", MAX_THUMBS)
        size = msg.get("size", "card")
        if size not in SIZES:
            raise MessageError(f"size must be one of {', '.join(SIZES)}")
        previews = self._previews(ids)
        items: list[dict[str, Any]] = []
        buffers: list[bytes] = []
        slot: dict[str, int] = {}
        sent = 0
        for lora_id in ids:
            preview, root = previews[lora_id]
            if sent >= MAX_THUMB_BYTES:
                items.append({"id": lora_id, "key": None, "later": True})
                continue
            thumb = self._thumbs.get(preview, root, size) if preview else None
            if thumb is None:
                items.append({"id": lora_id, "key": None})
                continue
            if thumb.key not in slot:
                slot[thumb.key] = len(buffers)
                buffers.append(thumb.data)
                sent += len(thumb.data)
            items.append({"id": lora_id, "key": thumb.key, "buffer": slot[thumb.key], "mime": thumb.mime})
        return {"size": size, "items": items}, buffers

    def _on_facets(self, _msg: dict[str, Any], _buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        if self._active is None:
            return {"generation": self._generation, "facets": {}}, []
        facets: dict[str, list[list[Any]]] = {}
        shared = [f for f in FACETS if f not in self.filters]
        if shared:
            counts = self._catalog.facets(self.effective_query(sort=False), fields=shared, limit=FACET_LIMIT)
            facets.update({f: [[str(v), n] for v, n in counts[f]] for f in shared})
        for field in FACETS:
            if field in self.filters:  # a field's own filter is left out, so its other values stay choosable
                query = self.effective_query(without=field, sort=False)
                counts = self._catalog.facets(query, fields=[field], limit=FACET_LIMIT)
                listed = [[str(v), n] for v, n in counts[field]]
                seen = {v for v, _n in listed}
                listed += [[v, None] for v in self.filters[field] if v not in seen]
                facets[field] = listed
        return {"generation": self._generation, "facets": {f: facets[f] for f in FACETS}}, []

    def _on_select(self, msg: dict[str, Any], _buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        mode = msg.get("mode")
        if self._active is None:
            raise MessageError("the search has an error; nothing to select")
        if mode == "all":
            ids = self._catalog.search(self._active, limit=MAX_SELECTION, columns=["id"]).ids
        elif mode == "range":
            last = max(0, self.total - 1)
            start, end = check_int(msg, "start", 0, last), check_int(msg, "end", 0, last)
            low, high = min(start, end), max(start, end)
            if high - low + 1 > MAX_SELECTION:
                raise MessageError(f"a range holds at most {MAX_SELECTION:,} LoRAs")
            ids = self._catalog.search(self._active, limit=high - low + 1, offset=low, columns=["id"]).ids
            if msg.get("additive") is True:
                ids = list(dict.fromkeys([*self.selected, *ids]))
        else:
            raise MessageError('mode must be "range" or "all"')
        self._remember(ids)
        self.selected = ids[:MAX_SELECTION]
        return {"selected": len(self.selected)}, []

    def _on_update(self, msg: dict[str, Any], _buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        lora_id = check_int(msg, "id", 1, 2**63 - 1)
        field = msg.get("field")
        if field not in EDITABLE:
            raise MessageError(f"field must be one of {', '.join(EDITABLE)}")
        value = curation_value(field, msg.get("value"))
        try:
            record = self._catalog.update(lora_id, **{field: value})
        except NotFoundError as exc:
            raise MessageError(f"no LoRA with id {lora_id}") from exc
        except CatalogError as exc:
            raise MessageError(exc.message) from exc
        if self.focused == lora_id:
            self._show_detail(record)
        self.send({"type": "patch", "row": compact_row(record, self._thumb_key(record.get("preview_path")))})
        return {"ok": True, "id": lora_id, "field": field}, []

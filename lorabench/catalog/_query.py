"""The search language: compile a query string into bound-parameter DuckDB SQL.

``compile_query("base:sdxl rating:>=4 -tag:anime sort:-rating")`` returns a :class:`CompiledQuery` whose
``where`` is a boolean SQL expression over ``lora_view l`` and whose ``order_by`` is an ORDER BY body.
Every user value travels in ``params`` behind a ``?``; identifiers and SQL fragments come only from the
allow-lists in :mod:`lorabench.catalog._facets`, so no user text is ever spliced into SQL. Every condition
is wrapped in ``COALESCE(…, FALSE)`` so that negation also matches rows whose column is NULL.

OR joins the two terms on either side of it and binds tighter than the implicit AND (as in Gmail):
``a b OR c`` means ``a AND (b OR c)``; use parentheses for anything else. See :func:`describe_syntax`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from lorabench.catalog import _facets as vocab
from lorabench.catalog._facets import FIELDS, FieldInfo, describe_syntax, facets
from lorabench.errors import QuerySyntaxError

__all__ = ["FIELDS", "CompiledQuery", "FieldInfo", "Term", "compile_query", "describe_syntax", "facets"]

MAX_QUERY_CHARS = 2000
MAX_TERMS = 100
MAX_DEPTH = 16


@dataclass(frozen=True)
class Term:
    """One parsed term, for UI chips: ``text[start:end]`` is its source (``-`` included)."""

    field: str  # canonical field name; "text" for free text
    op: str  # ":" (match), "=", ">", ">=", "<", "<=" or ".." (range)
    value: str  # unquoted, without the operator ("4" for rating:>=4, "4..8" for a range)
    negated: bool  # the term's own leading "-" or NOT
    start: int
    end: int


@dataclass(frozen=True)
class CompiledQuery:
    """A compiled search: ``SELECT … FROM lora_view l WHERE {where} ORDER BY {order_by}`` with ``params``."""

    where: str
    params: list[Any]
    order_by: str
    terms: list[Term]
    text: str

    @property
    def source(self) -> str:
        """The view to read the rows from: ``lora_core`` (no curation join) unless the query needs curation.

        ``where`` and ``order_by`` are valid over ``lora_view`` in every case.
        """
        return "lora_view" if _CURATION_COLUMN.search(self.where + " " + self.order_by) else "lora_core"


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)
_INT = re.compile(r"[+-]?\d+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)?", re.ASCII | re.IGNORECASE)
_AGE = re.compile(r"(\d{1,6})([hdw])", re.ASCII | re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_HEX = re.compile(r"(?:0x)?([0-9a-f]+)", re.ASCII | re.IGNORECASE)
_MAX_INT = 2**63 - 1
# lora_view columns that come from the curation table (what lora_core lacks).
_CURATION_COLUMN = re.compile(r"\bl\.(?:favorite|rating|notes|user_tags|trigger_groups|preferred_weight|nsfw)\b")
# The user's tags live in curation; a semi-join on it keeps a search on lora_core (no join of every row).
_USER_TAGS_ANY = "l.id IN (SELECT c.lora_id FROM curation c WHERE {test})"


def _fail(problem: str, position: int, hint: str | None = None) -> QuerySyntaxError:
    return QuerySyntaxError(f"{problem} at position {position}", position=position, hint=hint)


def _clip(value: str, limit: int = 40) -> str:
    """A user value, shortened for an error message."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _unknown(what: str, value: str, choices: list[str], position: int, hint: str) -> QuerySyntaxError:
    close = difflib.get_close_matches(value.lower(), choices, n=3, cutoff=0.6)
    also = f"; did you mean {', '.join(close)}?" if close else ""
    return _fail(f'Unknown {what} "{_clip(value)}"{also}', position, hint)


# --- lexer -------------------------------------------------------------------------------------------


@dataclass
class _Token:
    kind: str  # "term", "OR", "AND", "NOT", "(", ")"
    start: int
    end: int = 0
    negated: bool = False
    key: str = "text"  # canonical field name
    value_start: int = 0
    segments: list[tuple[str, bool]] = field(default_factory=list)  # (text, quoted)

    @property
    def value(self) -> str:
        return "".join(text for text, _ in self.segments)


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """Read ``"…"`` starting at ``text[i] == '"'``; ``\\"`` and ``\\\\`` are escapes, other ``\\`` literal."""
    out, j = [], i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text) and text[j + 1] in '"\\':
            out.append(text[j + 1])
            j += 2
        elif ch == '"':
            return "".join(out), j + 1
        else:
            out.append(ch)
            j += 1
    raise _fail("Unterminated quote", i, 'Close the quote with ", or escape a quote inside it as \\".')


def _classify(tok: _Token) -> None:
    """Split a word into ``field:value`` when its bare first segment starts with ``identifier:``."""
    first, quoted = tok.segments[0] if tok.segments else ("", True)
    name, colon, rest = first.partition(":")
    if quoted or not colon or not _IDENT.fullmatch(name):
        if not tok.value:
            raise _fail("Empty quoted phrase", tok.start, 'Put words inside the quotes, or remove the "".')
        return
    canonical = vocab.FIELD_NAMES.get(name.lower())
    if canonical is None:
        if rest.startswith("//") or (len(name) == 1 and rest[:1] in ("/", "\\")):
            return  # a URL (https://…) or a Windows drive path (C:\…) is free text
        hint = f'Known fields: {", ".join(FIELDS)}. To search the text itself, quote it: "{_clip(name)}:…".'
        raise _unknown("search field", name, list(vocab.FIELD_NAMES), tok.start + tok.negated, hint)
    tok.key = canonical
    tok.value_start = tok.start + tok.negated + len(name) + 1
    tok.segments = ([(rest, False)] if rest else []) + tok.segments[1:]
    if not tok.value:
        hint = f'Write {name}:value, or quote values with spaces: {name}:"a b".'
        raise _fail(f'Empty value for "{name}:"', tok.start, hint)


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n, depth = 0, len(text), 0
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start, negated = i, False
        if text[i] == "-" and i + 1 < n and not text[i + 1].isspace() and text[i + 1] != ")":
            negated, i = True, i + 1
        if text[i] == "(":
            tokens.append(_Token("(", start, i + 1, negated))
            depth, i = depth + 1, i + 1
            continue
        if text[i] == ")":
            if depth == 0:
                raise _fail('Unbalanced ")" with no "(" before it', i, 'Remove it, or quote text that contains ")".')
            tokens.append(_Token(")", i, i + 1))
            depth, i = depth - 1, i + 1
            continue
        tok = _Token("term", start, negated=negated, value_start=i)
        bare: list[str] = []
        while i < n and not text[i].isspace() and not (text[i] == ")" and depth > 0):
            if text[i] == '"':
                if bare:
                    tok.segments.append(("".join(bare), False))
                    bare = []
                quoted, i = _read_quoted(text, i)
                tok.segments.append((quoted, True))
            else:
                bare.append(text[i])
                i += 1
        if bare:
            tok.segments.append(("".join(bare), False))
        tok.end = i
        if not negated and tok.segments in ([("OR", False)], [("AND", False)], [("NOT", False)]):
            tok.kind = tok.segments[0][0]
        else:
            _classify(tok)
        tokens.append(tok)
        if len(tokens) > MAX_TERMS * 2:
            raise _fail(f"Query has more than {MAX_TERMS} terms", start, "Search with fewer terms.")
    return tokens


# --- values ------------------------------------------------------------------------------------------


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _element_pattern(segments: list[tuple[str, bool]]) -> tuple[str, bool]:
    """A lower-cased LIKE pattern where bare ``*`` is a wildcard; also whether any wildcard was used."""
    parts = [_escape_like(t.lower()).replace("*", "%") if not q else _escape_like(t.lower()) for t, q in segments]
    return "".join(parts), any("*" in t for t, q in segments if not q)


def _comparisons(value: str, pos: int, name: str) -> list[tuple[str, str, int]]:
    """``>=4`` → [(">=", "4", pos+2)]; ``4..8`` → [(">=", "4", …), ("<=", "8", …)]; ``4`` → [("=", "4", pos)]."""
    usage = f"Write {name}:5, {name}:>=4, {name}:<16, {name}:4..8 or {name}:4.., and -{name}:… to negate."
    match = re.match(r"(>=|<=|>|<|=)", value)
    op, raw = (match.group(1), value[match.end() :]) if match else ("=", value)
    if raw[:1] in ("<", ">", "=", "!") or not raw:
        raise _fail(f'Bad comparison "{_clip(value)}" for {name}:', pos, usage)
    if match:
        return [(op, raw, pos + match.end())]
    if ".." in value:
        low, _, high = value.partition("..")
        bounds = [b for b in ((">=", low, pos), ("<=", high, pos + len(low) + 2)) if b[1] not in ("", "*")]
        if not bounds:
            raise _fail(f'Range "{_clip(value)}" for {name}: has no bounds', pos, usage)
        return bounds
    return [("=", value, pos)]


def _number(kind: str, raw: str, pos: int, name: str) -> int | float:
    if kind == "size":
        match = _SIZE.fullmatch(raw)
        if match:
            size = float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
            if size <= _MAX_INT:  # also False for inf and nan
                return round(size)
        expect, example = "a size", f"{name}:>100mb or {name}:1.5gb..2gb"
    elif kind == "int":
        if _INT.fullmatch(raw) and abs(int(raw)) <= _MAX_INT:
            return int(raw)
        expect, example = "a whole number", f"{name}:>=4"
    else:
        if _FLOAT.fullmatch(raw) and math.isfinite(float(raw)):
            return float(raw)
        expect, example = "a number", f"{name}:0.8 or {name}:>=0.5"
    raise _fail(f'"{_clip(raw)}" is not {expect} (for {name}:)', pos, f"Write e.g. {example}.")


def _date_conditions(column: str, op: str, raw: str, pos: int, now: dt.datetime) -> list[tuple[str, Any]]:
    age = _AGE.fullmatch(raw)
    if age:  # an age: "7d" means within the last 7 days; ">7d" older than 7 days
        unit = {"h": "hours", "d": "days", "w": "weeks"}[age.group(2).lower()]
        try:
            cutoff = now - dt.timedelta(**{unit: int(age.group(1))})
        except OverflowError:
            raise _fail(f'Age "{raw}" reaches back before year 1', pos, "Use a smaller age.") from None
        sql_op = {"=": ">=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
        return [(f"{column} {sql_op} ?", cutoff)]
    try:
        day = dt.datetime.strptime(raw, "%Y-%m-%d") if _DATE.fullmatch(raw) else None
    except ValueError:
        day = None
    if day is None:
        hint = "Write e.g. added:>=2026-01-01, added:2026-01-01..2026-01-31 or added:7d."
        raise _fail(f'"{_clip(raw)}" is not a date (YYYY-MM-DD) or an age (7d, 2w, 12h)', pos, hint)
    after = day + dt.timedelta(days=1) if day.date() < dt.date.max else dt.datetime.max
    return {"=": [(f"{column} >= ?", day), (f"{column} < ?", after)], ">=": [(f"{column} >= ?", day)],
            ">": [(f"{column} >= ?", after)], "<": [(f"{column} < ?", day)],
            "<=": [(f"{column} < ?", after)]}[op]  # fmt: skip


# --- terms -------------------------------------------------------------------------------------------


def _any_element(column: str, test: str) -> str:
    return f"len(list_filter(l.{column}, lambda x: {test})) > 0"


def _free_text(value: str) -> tuple[str, list[Any]]:
    # One scan of the pre-lowered search_text column (name, title, description, folder, trigger words,
    # training tags; see catalog._rows.search_text) plus the user's tags, which live in curation.
    pattern = f"%{_escape_like(value.lower())}%"
    user_tags = _USER_TAGS_ANY.format(test="array_to_string(c.user_tags, chr(31)) ILIKE ? ESCAPE '\\'")
    if "/" in value or "\\" in value:  # a pasted path: search_text has the folder, not the root
        return (f"(l.search_text LIKE ? ESCAPE '\\' OR l.path ILIKE ? ESCAPE '\\' OR {user_tags})",
                [pattern, pattern, pattern])  # fmt: skip
    return f"(l.search_text LIKE ? ESCAPE '\\' OR {user_tags})", [pattern, pattern]


def _list_match(columns: tuple[str, ...], segments: list[tuple[str, bool]]) -> tuple[str, list[Any]]:
    pattern, wild = _element_pattern(segments)
    # Tags are stored lower-cased and distinct (training tags by the importer, user tags by
    # Catalog.update), so an exact match is a plain list_contains instead of a lambda over every element.
    test = "len(list_filter({list}, lambda x: x LIKE ? ESCAPE '\\')) > 0" if wild else "list_contains({list}, ?)"
    parts = [_USER_TAGS_ANY.format(test=test.format(list="c.user_tags")) if c == "user_tags"
             else test.format(list=f"l.{c}") for c in columns]  # fmt: skip
    value = pattern if wild else "".join(t for t, _ in segments).lower()
    return " OR ".join(parts), [value] * len(parts)


def _flag(name: str, table: dict[str, tuple[str, list[Any]]], tok: _Token) -> tuple[str, list[Any]]:
    key = tok.value.lower()
    if key not in table:
        raise _unknown(f"{name}: value", tok.value, list(table), tok.value_start, f"{name}: takes {', '.join(table)}.")
    sql, params = table[key]
    return sql, list(params)


def _compile_term(tok: _Token, now: dt.datetime) -> tuple[str, list[Any], str]:
    """The SQL condition, its params and the Term op for one ``field:value`` or free-text term."""
    name, value, pos = tok.key, tok.value, tok.value_start
    if name == "text":
        return (*_free_text(value), ":")
    if name in vocab.TEXT_COLUMNS:
        return f"l.{vocab.TEXT_COLUMNS[name]} ILIKE ? ESCAPE '\\'", [f"%{_escape_like(value)}%"], ":"
    if name in ("format", "dtype", "status"):
        return f"lower(l.{name}) = ?", [value.lower()], ":"
    if name == "folder":
        return "starts_with(lower(l.folder), ?)", [value.lower()], ":"
    if name == "base":
        family = vocab.BASE_ALIASES.get(value.lower(), value.lower())
        return "lower(l.base_model) = ? OR lower(l.base_model_hint) = ?", [family, value.lower()], ":"
    if name == "algorithm":
        if value.lower() == "dora":
            return "l.dora", [], ":"
        if value.lower() == "lycoris":
            return f"lower(l.algorithm) IN ({', '.join('?' * len(vocab.LYCORIS))})", list(vocab.LYCORIS), ":"
        return "lower(l.algorithm) = ?", [value.lower()], ":"
    if name == "trigger":
        return _any_element("trigger_words", "x ILIKE ? ESCAPE '\\'"), [f"%{_escape_like(value)}%"], ":"
    if name in ("tag", "utag", "sidecar"):
        columns = {"tag": ("training_tags", "user_tags"), "utag": ("user_tags",), "sidecar": ("sidecar_kinds",)}
        return (*_list_match(columns[name], tok.segments), ":")
    if name == "hash":
        match = _HEX.fullmatch(value)
        if not match:
            raise _fail(f'"{_clip(value)}" is not a hexadecimal hash prefix', pos, "Write e.g. hash:a1b2c3d4.")
        # Hashes are stored as lower-case hex (the reader writes them so; migration 3 lower-cased older
        # rows), so no lower() per row.
        columns = ("sha256", "autov2", "autov3", "tensor_sha256")
        sql = " OR ".join(f"starts_with(l.{c}, ?)" for c in columns)
        return sql, [match.group(1).lower()] * len(columns), ":"
    if name in ("is", "has"):
        return (*_flag(name, vocab.IS_SQL if name == "is" else vocab.HAS_SQL, tok), ":")
    if name == "rating" and value.lower() == "none":
        return "l.rating IS NULL", [], ":"
    bounds = _comparisons(value, pos, name)
    op = ".." if len(bounds) == 2 or ".." in value else bounds[0][0]
    parts: list[str] = []
    params: list[Any] = []
    for bound_op, raw, raw_pos in bounds:
        if name in vocab.DATE_COLUMNS:
            for sql, param in _date_conditions(vocab.DATE_COLUMNS[name], bound_op, raw, raw_pos, now):
                parts.append(sql)
                params.append(param)
            continue
        kind = "size" if name == "size" else "float" if name in ("alpha", "weight") else "int"
        params.append(_number(kind, raw, raw_pos, name))
        parts.append(f"{vocab.NUMERIC_COLUMNS[name]} {bound_op} ?")
    return " AND ".join(parts), params, op


# --- parser ------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens.

    ``seq := or_expr ([AND] or_expr)*``, ``or_expr := unary (OR unary)*``, ``unary := NOT unary | term | ( seq )``.
    Each method returns ``(sql, params)``, or None for an item that is only ``sort:`` terms.
    """

    def __init__(self, text: str, now: dt.datetime) -> None:
        self.tokens, self.i, self.now = _lex(text), 0, now
        self.terms: list[Term] = []
        self.sorts: list[tuple[str, int]] = []  # (ORDER BY item, position)

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def seq(self, depth: int) -> tuple[str, list[Any]] | None:
        """AND of the items up to the end or a ")"; None when there are no conditions (only sorts)."""
        parts: list[str] = []
        params: list[Any] = []
        first = True
        while (tok := self.peek()) is not None and tok.kind != ")":
            if tok.kind == "AND":
                nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
                if first or nxt is None or nxt.kind in ("AND", "OR", ")"):
                    raise _fail("Stray AND: it needs a term on both sides", tok.start, "Remove the extra AND.")
                self.i += 1
            item = self.or_expr(depth)
            first = False
            if item is not None:
                parts.append(item[0])
                params += item[1]
        if not parts:
            return None
        return (parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"), params

    def or_expr(self, depth: int) -> tuple[str, list[Any]] | None:
        sorts_before = len(self.sorts)
        items = [self.unary(depth, negated=False)]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.i += 1
            nxt = self.peek()
            if nxt is None or nxt.kind in ("OR", "AND", ")"):
                raise _fail("Stray OR: it needs a term on both sides", tok.start, "Write a OR b, or remove the OR.")
            items.append(self.unary(depth, negated=False))
        if len(items) > 1 and len(self.sorts) > sorts_before:
            raise _fail("sort: cannot be part of an OR", self.sorts[sorts_before][1], "Put sort: terms on their own.")
        if items == [None]:
            return None
        sqls = [item for item in items if item is not None]
        params = [p for item in sqls for p in item[1]]
        return (sqls[0][0] if len(sqls) == 1 else "(" + " OR ".join(s for s, _ in sqls) + ")"), params

    def unary(self, depth: int, *, negated: bool) -> tuple[str, list[Any]] | None:
        tok = self.tokens[self.i]  # callers check there is one
        self.i += 1
        if tok.kind in ("OR", "AND"):
            raise _fail(f"Stray {tok.kind}: it needs a term on both sides", tok.start, f"Remove the extra {tok.kind}.")
        if tok.kind == "NOT":
            nxt = self.peek()
            if nxt is None or nxt.kind in ("OR", "AND", ")"):
                raise _fail("NOT must be followed by a term", tok.start, "Write NOT tag:x, or -tag:x.")
            return self._negate(self.unary(depth, negated=True), tok)
        if tok.kind == "(":
            if depth + 1 > MAX_DEPTH:
                raise _fail(f"Parentheses nested deeper than {MAX_DEPTH}", tok.start, "Simplify the query.")
            inner = self.seq(depth + 1)
            close = self.peek()
            if close is None:
                raise _fail('Unbalanced "(": no matching ")"', tok.end - 1, 'Add the missing ")".')
            self.i += 1
            if inner is None:
                raise _fail("Empty parentheses", tok.end - 1, "Put terms inside the parentheses, or remove them.")
            return self._negate(inner, tok) if tok.negated else inner
        if len(self.terms) >= MAX_TERMS:
            raise _fail(f"Query has more than {MAX_TERMS} terms", tok.start, "Search with fewer terms.")
        if tok.key == "sort":
            self._sort(tok, nested=depth > 0 or negated)
            return None
        sql, params, op = _compile_term(tok, self.now)
        value = tok.value[len(op) :] if op in ("=", ">", ">=", "<", "<=") and tok.value.startswith(op) else tok.value
        self.terms.append(Term(tok.key, op, value, tok.negated, tok.start, tok.end))
        result = (f"COALESCE({sql}, FALSE)", params)
        return self._negate(result, tok) if tok.negated else result

    def _negate(self, item: tuple[str, list[Any]] | None, tok: _Token) -> tuple[str, list[Any]]:
        if item is None:
            raise _fail("sort: cannot be negated or nested", tok.start, "Write sort:-key for descending order.")
        return f"(NOT {item[0]})", item[1]

    def _sort(self, tok: _Token, *, nested: bool) -> None:
        if nested or tok.negated:
            raise _fail("sort: cannot be negated or nested", tok.start, "Write sort:-key for descending order.")
        key, direction = tok.value.lower(), "ASC"
        if key[:1] in ("-", "+"):
            key, direction = key[1:], "DESC" if key[0] == "-" else "ASC"
        for suffix, word in (("-desc", "DESC"), ("-asc", "ASC")):
            if key.endswith(suffix):
                key, direction = key[: -len(suffix)], word
        key = vocab.SORT_ALIASES.get(key, key)
        if key not in vocab.SORT_SQL:
            hint = f"sort: takes {', '.join(vocab.SORT_SQL)}; prefix - for descending."
            raise _unknown("sort: key", tok.value, list(vocab.SORT_SQL), tok.value_start, hint)
        self.sorts.append((f"{vocab.SORT_SQL[key]} {direction} NULLS LAST", tok.start))
        self.terms.append(Term("sort", ":", tok.value, False, tok.start, tok.end))


def compile_query(text: str, *, now: dt.datetime | None = None) -> CompiledQuery:
    """Compile a search query into a bound-parameter WHERE expression and an ORDER BY body.

    ``now`` anchors ages such as ``added:7d``; it defaults to the current time, and an aware ``now`` is
    converted to naive UTC, as the catalog's timestamps are compared (pass a naive local ``now`` if the
    catalog stores local time). Raises
    :class:`~lorabench.errors.QuerySyntaxError`, with the character ``position``, for bad syntax.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise _fail(f"Query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS, "Shorten the query.")
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC).replace(tzinfo=None)
    parser = _Parser(text, now)
    result = parser.seq(0)
    tok = parser.peek()
    if tok is not None:  # only a ")" can stop the top-level sequence early
        raise _fail('Unbalanced ")" with no "(" before it', tok.start, 'Remove it, or quote text that contains ")".')
    where, params = result or ("TRUE", [])
    order = ", ".join([s for s, _ in parser.sorts] + ["l.id"]) if parser.sorts else vocab.DEFAULT_ORDER
    return CompiledQuery(where, params, order, parser.terms, text)

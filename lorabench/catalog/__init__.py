"""The DuckDB catalog: one file, one gateway, bound parameters only.

Only this package opens DuckDB. Everything else — the importer, widgets, the
queue — goes through :class:`Catalog` (and the importer through its store).
"""

from lorabench.catalog._catalog import SEARCH_COLUMNS, Catalog
from lorabench.catalog._history import History, NewImage, ResultRecord
from lorabench.catalog._query import FIELDS, CompiledQuery, FieldInfo, Term, compile_query, describe_syntax
from lorabench.catalog._results import ResultSet, SearchResult
from lorabench.catalog._schema import MIGRATIONS, SCHEMA_VERSION
from lorabench.catalog._store import Fingerprint, Store

__all__ = [
    "FIELDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "Catalog",
    "CompiledQuery",
    "FieldInfo",
    "Fingerprint",
    "History",
    "NewImage",
    "ResultRecord",
    "ResultSet",
    "SearchResult",
    "Store",
    "Term",
    "compile_query",
    "describe_syntax",
]

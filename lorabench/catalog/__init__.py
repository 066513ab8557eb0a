"""The DuckDB catalog: one file, one gateway, bound parameters only.

Only this package opens DuckDB. Everything else — the importer, widgets, the
queue — goes through :class:`Catalog` (and the importer through its store).
"""

from lorabench.catalog._catalog import SEARCH_COLUMNS, Catalog
from lorabench.catalog._query import CompiledQuery, compile_query
from lorabench.catalog._results import ResultSet, SearchResult
from lorabench.catalog._schema import MIGRATIONS, SCHEMA_VERSION
from lorabench.catalog._store import Fingerprint, Store

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "Catalog",
    "CompiledQuery",
    "Fingerprint",
    "ResultSet",
    "SearchResult",
    "Store",
    "compile_query",
]

"""Query results: a list of records that converts to a DataFrame or an Arrow table."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, overload

__all__ = ["ResultSet", "SearchResult"]

_JSON_COLUMNS = frozenset({"info", "trigger_groups", "options", "counts", "data"})


def _decode(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class ResultSet(Sequence[dict[str, Any]]):
    """Rows fetched from the catalog (the connection is already closed).

    Iterate it or index it for plain ``dict`` records; ``df()`` gives a pandas
    DataFrame and ``arrow()`` a pyarrow Table.
    """

    def __init__(self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        self.columns = list(columns)
        self.rows = list(rows)

    @classmethod
    def from_cursor(cls, cursor: Any) -> ResultSet:
        columns = [d[0] for d in cursor.description] if cursor.description else []
        return cls(columns, cursor.fetchall() if columns else [])

    def _record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {c: _decode(c, v) for c, v in zip(self.columns, row, strict=True)}

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._record(r) for r in self.rows[index]]
        return self._record(self.rows[index])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._record(r) for r in self.rows)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.rows)} rows x {len(self.columns)} columns>"

    def to_list(self) -> list[dict[str, Any]]:
        """All rows as plain dicts."""
        return list(self)

    def column(self, name: str) -> list[Any]:
        """One column's values."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def arrow(self) -> Any:
        """The rows as a ``pyarrow.Table``."""
        import pyarrow as pa

        return pa.table({c: [r[i] for r in self.rows] for i, c in enumerate(self.columns)})

    def df(self) -> Any:
        """The rows as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame.from_records(self.rows, columns=self.columns)


class SearchResult(ResultSet):
    """A page of search matches; ``total`` counts every match, not just this page."""

    def __init__(
        self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], *, total: int, query: str
    ) -> None:
        super().__init__(columns, rows)
        self.total = total
        self.query = query

    def __repr__(self) -> str:
        return f"<SearchResult {self.query!r}: {len(self.rows)} of {self.total}>"

    @property
    def ids(self) -> list[int]:
        """The ids of the rows in this page."""
        return self.column("id")

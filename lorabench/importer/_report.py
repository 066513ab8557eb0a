"""What an import did (or, for a dry run, would do)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ImportReport"]


@dataclass
class ImportReport:
    """The outcome of :func:`lorabench.importer.import_library`.

    The lists name files by path; ``moved`` holds ``{"from": …, "to": …}`` pairs and
    ``errors`` ``{"path", "code", "message"}`` entries. A dry run reports the exact plan
    with the same keys.
    """

    dry_run: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    moved: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    unchanged: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    roots: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
    run_id: int | None = None
    duration_s: float = 0.0
    status: str = "completed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        return asdict(self)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added), "changed": len(self.changed), "moved": len(self.moved),
            "missing": len(self.missing), "offline": len(self.offline), "restored": len(self.restored),
            "errors": len(self.errors), "skipped": len(self.skipped), "unchanged": self.unchanged,
            "hashed": self.hashed,
        }  # fmt: skip

    def table(self, *, limit: int = 20) -> str:
        """A readable summary with the first ``limit`` entries of each list."""
        title = "Dry run — nothing was changed" if self.dry_run else f"Import {self.status}"
        lines = [f"{title} ({self.duration_s:.2f} s)", ""]
        width = max(len(k) for k in self.counts)
        for key, value in self.counts.items():
            lines.append(f"  {key:<{width}}  {value:>7}")
        sections: list[tuple[str, list[str]]] = [
            ("added", self.added), ("changed", self.changed),
            ("moved", [f"{m['from']} -> {m['to']}" for m in self.moved]),
            ("missing", self.missing), ("offline", self.offline), ("restored", self.restored),
            ("unreachable folders (entries kept, marked offline)", self.unreachable),
            ("errors", [f"{e['path']}: [{e['code']}] {e['message']}" for e in self.errors]),
        ]  # fmt: skip
        for name, items in sections:
            if not items:
                continue
            lines += ["", f"{name}:"]
            lines += [f"  {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"  … and {len(items) - limit} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items() if v)
        return f"<ImportReport {'dry run' if self.dry_run else self.status}: {counts or 'nothing to do'}>"

    def _repr_html_(self) -> str:  # a notebook shows the text table, escaped
        import html

        return f"<pre>{html.escape(self.table())}</pre>"

"""``lorabench import``, ``search``, ``export``, ``backup``, ``restore`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lorabench.cli._inspect import clean

__all__ = ["register"]


def _catalog_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", metavar="FILE", default=None,
                   help="catalog file (default: $LORABENCH_CATALOG or $LORABENCH_HOME/catalog.duckdb)")  # fmt: skip


def _open(args: argparse.Namespace) -> Any:
    from lorabench.catalog import Catalog

    return Catalog(args.catalog)


def _dump(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    sys.stdout.write("\n")


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="import (or incrementally rescan) folders of LoRA files into the catalog",
                       description="Import LoRA folders into the catalog. Unchanged files cost a stat; curation "
                       "is never lost. Exit status 0 when the run completed (bad files are reported and "
                       "recorded), 1 with --strict if any file had an error, 2 if the run could not complete.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="library folders, or folders inside a known root")
    p.add_argument("--path", dest="extra_paths", action="append", default=[], metavar="DIR",
                   help="a library folder (same as a positional PATH; may be repeated)")
    _catalog_arg(p)
    p.add_argument("--force-resync", action="store_true", help="re-read and re-hash everything in scope")
    p.add_argument("--dry-run", action="store_true", help="change nothing; report exactly what would happen")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="hashing threads (default: cores)")
    p.add_argument("--no-hash", action="store_true", help="skip hashing (header facts only)")
    p.add_argument("--follow-symlinks", action="store_true", help="follow links that leave the library roots")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file could not be read")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_import)

    p = sub.add_parser("search", help="search the catalog with lorabench's query language",
                       description="Search the catalog. Query syntax: free words, field:value, rating:>=4, "
                       "size:>100mb, -tag:anime, is:favorite, has:preview, base:sdxl, algo:loha, sort:-rating.")
    p.add_argument("query", nargs="*", help="the query (words are joined with spaces)")
    _catalog_arg(p)
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N results (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON array of every match")
    p.set_defaults(func=run_search)

    p = sub.add_parser("export", help="export the rows matching a query to Parquet, CSV or JSON")
    p.add_argument("output", help="output file (.parquet, .csv, .json or .jsonl)")
    p.add_argument("query", nargs="*", help="the query (default: everything)")
    _catalog_arg(p)
    p.add_argument("--format", choices=["parquet", "csv", "json", "jsonl"], default=None)
    p.set_defaults(func=run_export)

    p = sub.add_parser("backup", help="write the whole catalog with curation to a portable JSON file")
    p.add_argument("output")
    _catalog_arg(p)
    p.set_defaults(func=run_backup)

    p = sub.add_parser("restore", help="apply a backup's curation to this catalog (matched by hash, then path)")
    p.add_argument("backup")
    _catalog_arg(p)
    p.set_defaults(func=run_restore)

    p = sub.add_parser("stats", help="catalog statistics")
    _catalog_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_stats)  # fmt: skip


def run_import(args: argparse.Namespace) -> int:
    from lorabench.errors import LorabenchError

    paths = list(args.paths) + list(args.extra_paths)
    if not paths:
        print("lorabench import: give at least one folder (PATH or --path DIR)", file=sys.stderr)
        return 2
    try:
        catalog = _open(args)
        with catalog:
            report = catalog.import_library(
                paths, force_resync=args.force_resync, dry_run=args.dry_run, jobs=args.jobs,
                progress=False if args.no_progress or args.json else None,
                follow_symlinks=args.follow_symlinks, hashes=not args.no_hash,
            )  # fmt: skip
    except LorabenchError as exc:
        print(clean(f"lorabench import: error [{exc.code}]: {exc}"), file=sys.stderr)
        return 2
    if args.json:
        _dump(report.to_dict())
    else:
        print(clean(report.table()))
    return 1 if args.strict and report.errors else 0


def run_search(args: argparse.Namespace) -> int:
    query = " ".join(args.query)
    with _open(args) as catalog:
        result = catalog.search(query, limit=args.limit)
    if args.json:
        _dump(result.to_list())
        return 0
    for r in result:
        stars = "*" * (r["rating"] or 0)
        fav = "♥" if r["favorite"] else " "
        flags = " [missing]" if r["missing"] else (" [error]" if r["status"] != "ok" else "")
        line = (f"{r['id']:>6} {fav} {stars:<5} {r['base_model'] or '-':<7} {r['algorithm'] or '-':<6} "
                f"{r['name']}{flags}")  # fmt: skip
        print(clean(line))
    print(f"{len(result)} of {result.total} match{'es' if result.total != 1 else ''}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        n = catalog.export(args.output, " ".join(args.query), format=args.format)
    print(f"wrote {n} rows to {args.output}")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        n = catalog.backup(args.output)
    print(f"backed up {n} rows with their curation to {args.output}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        result = catalog.restore(args.backup)
    print(f"restored curation: {result['matched']} matched now, {result['pending']} waiting for their files")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        stats = catalog.stats()
    if args.json:
        _dump(stats)
        return 0
    for key in ("path", "total", "ok", "errors", "unsafe", "missing", "offline", "hashed", "total_bytes",
                "favorites", "rated"):  # fmt: skip
        print(f"{key:>12}: {stats[key]}")
    print(f"{'base models':>12}: " + ", ".join(f"{k} {v}" for k, v in stats["base_models"].items()))
    print(f"{'algorithms':>12}: " + ", ".join(f"{k} {v}" for k, v in stats["algorithms"].items()))
    return 0

"""Helper processes for the catalog concurrency and durability tests.

Run as a script (``python tests/catalog/_workers.py COMMAND ...``). Each command
prints ``ready <pid>`` (flushed) once it is where the test wants it, and reports
machine-readable results as one JSON line prefixed with ``result``. A lorabench
error exits with status 2 after printing ``error <ExceptionClass> <message>`` to
stderr; any other exception exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _result(doc: dict[str, Any]) -> None:
    _say("result", json.dumps(doc, default=str))


def cmd_import(args: argparse.Namespace) -> None:
    """Import a library; ``ready`` once the catalog is open, ``result`` with the report's counts."""
    from lorabench.catalog import Catalog

    catalog = Catalog(args.catalog, deadline=args.deadline)
    _say("ready", os.getpid())
    report = catalog.import_library(args.paths, force_resync=args.force, progress=False, jobs=args.jobs)
    catalog.close()
    _result({"counts": report.counts, "run_id": report.run_id, "status": report.status})


def cmd_browse(args: argparse.Namespace) -> None:
    """A notebook beside an import: search, count, facets, get and rate in a loop until ``stop`` exists.

    Every failure is recorded (never raised); the exit status is 1 if there was any.
    """
    from lorabench.catalog import Catalog

    rng = random.Random(args.seed)
    stop = Path(args.stop)
    catalog = Catalog(args.catalog)
    _say("ready", os.getpid())
    ops: dict[str, int] = {}
    errors: list[str] = []
    counts: list[int] = []
    ratings: dict[int, int] = {}
    slowest = 0.0
    finished_at: float | None = None
    while True:
        if finished_at is None and stop.exists():
            finished_at = time.monotonic()
        # After the import has finished, one more full round, then stop.
        if finished_at is not None and ops and time.monotonic() - finished_at > 0.05:
            break
        op = rng.choice(("search", "count", "count", "facets", "get", "update", "fresh"))
        began = time.monotonic()
        try:
            if op == "search":
                result = catalog.search(rng.choice(("", "style", "sort:-rating", "base:sdxl", "rank:>=4")), limit=25)
                assert result.total >= len(result)
            elif op == "count":
                counts.append(catalog.count())
            elif op == "facets":
                catalog.facets()
            elif op in ("get", "update"):
                hits = catalog.search("", limit=50, columns=("id",))
                if len(hits):
                    lora_id = int(rng.choice(hits.to_list())["id"])
                    if op == "get":
                        assert catalog.get(lora_id)["id"] == lora_id
                    else:
                        rating = rng.randint(1, 5)
                        record = catalog.update(lora_id, rating=rating)
                        assert record["rating"] == rating
                        ratings[lora_id] = rating
            else:  # a second notebook cell that builds its own Catalog
                with Catalog(args.catalog) as other:
                    counts.append(other.count())
        except Exception as exc:
            errors.append(f"{op}: {type(exc).__name__}: {exc}")
        slowest = max(slowest, time.monotonic() - began)
        ops[op] = ops.get(op, 0) + 1
        time.sleep(rng.uniform(0.0, 0.02))
    catalog.close()
    _result({"ops": ops, "errors": errors, "counts": counts, "ratings": ratings, "slowest_s": slowest})
    sys.exit(1 if errors else 0)


def _pause(args: argparse.Namespace) -> None:
    stop = time.monotonic() + args.seconds
    while time.monotonic() < stop and not (args.until and Path(args.until).exists()):
        time.sleep(0.02)


def cmd_hold(args: argparse.Namespace) -> None:
    """Hold the catalog (until ``--until`` exists, at most ``seconds``): a lorabench write session,
    or (``--raw``) a plain DuckDB connection from a program that is not lorabench."""
    if args.raw:
        import duckdb

        conn = duckdb.connect(args.catalog, read_only=args.read_only)
        _say("ready", os.getpid())
        _pause(args)
        conn.close()
        return
    from lorabench.catalog import Catalog

    catalog = Catalog(args.catalog, linger=0)
    if args.after_rows:  # wait until an import elsewhere has committed its first batch
        _say("waiting", os.getpid())
        while catalog.count() < args.after_rows:
            time.sleep(0.05)
    with catalog._gateway.session(write=True) as conn:
        conn.execute("SELECT count(*) FROM loras").fetchone()
        _say("ready", os.getpid())
        _pause(args)
    catalog.close()


def cmd_commits(args: argparse.Namespace) -> None:
    """Commit numbered batches to a probe table forever, with checkpoints; ``ack k`` after each commit."""
    from lorabench.catalog import Catalog

    rng = random.Random(args.seed)
    catalog = Catalog(args.catalog)
    catalog.sql("CREATE TABLE IF NOT EXISTS probe (k INTEGER, i INTEGER, PRIMARY KEY (k, i))")
    row = catalog.sql("SELECT coalesce(max(k), 0) AS k FROM probe")[0]
    k = int(row["k"])
    _say("ready", os.getpid())
    while True:
        k += 1
        catalog.sql("INSERT INTO probe SELECT ?, range FROM range(?)", [k, args.batch])
        _say("ack", k)
        roll = rng.random()
        if roll < 0.15:
            catalog.sql("CHECKPOINT" if roll < 0.1 else "FORCE CHECKPOINT")  # runs the guarded checkpoint
            _say("checkpoint", k)
        elif roll < 0.25:
            catalog.release()


def cmd_leave_wal(args: argparse.Namespace) -> None:
    """Commit one note per id, then die without closing: the commits are only in the WAL."""
    from lorabench.catalog import Catalog

    catalog = Catalog(args.catalog)
    catalog._gateway.linger = catalog._gateway.max_hold = 3600.0  # never close (and checkpoint) before dying
    _say("ready", os.getpid())
    for lora_id in args.ids:
        catalog.update(lora_id, notes=f"{args.prefix} {lora_id}")
        _say("ack", lora_id)
    if args.die_in_checkpoint:  # the guard copy is written, then the process dies as DuckDB starts the checkpoint
        gateway = catalog._gateway

        class _DiesAtCheckpoint:
            def execute(self, sql: str) -> None:
                _say("checkpoint", sql)
                sys.stdout.flush()
                os._exit(0)

        with gateway._mutex:
            gateway._connection()
            gateway._checkpoint(_DiesAtCheckpoint())  # type: ignore[arg-type]
    sys.stdout.flush()
    os._exit(0)


def cmd_migrate_slow(args: argparse.Namespace) -> None:
    """Open a catalog whose migration ``--version`` ends in a very long statement (to be killed in it)."""
    from lorabench.catalog import _schema
    from lorabench.catalog._catalog import Catalog

    step = _schema.MIGRATIONS[args.version - 1]
    slow = "CREATE TABLE zz_slow AS SELECT sum(a.range * b.range) AS s FROM range(200000) a, range(200000) b"
    _schema.MIGRATIONS[args.version - 1] = _schema.Migration(step.version, step.name, (*step.statements, slow))
    _say("ready", os.getpid())
    Catalog(args.catalog)
    _say("finished")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="_workers")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import")
    p.add_argument("catalog")
    p.add_argument("paths", nargs="+")
    p.add_argument("--force", action="store_true")
    p.add_argument("--deadline", type=float, default=60.0)
    p.add_argument("--jobs", type=int, default=None)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("browse")
    p.add_argument("catalog")
    p.add_argument("stop")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_browse)

    p = sub.add_parser("hold")
    p.add_argument("catalog")
    p.add_argument("seconds", type=float)
    p.add_argument("--raw", action="store_true")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--after-rows", type=int, default=0)
    p.add_argument("--until", default=None)
    p.set_defaults(func=cmd_hold)

    p = sub.add_parser("commits")
    p.add_argument("catalog")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_commits)

    p = sub.add_parser("leave-wal")
    p.add_argument("catalog")
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--prefix", default="wal")
    p.add_argument("--die-in-checkpoint", action="store_true")
    p.set_defaults(func=cmd_leave_wal)

    p = sub.add_parser("migrate-slow")
    p.add_argument("catalog")
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(func=cmd_migrate_slow)

    args = parser.parse_args(argv)
    from lorabench.errors import LorabenchError

    try:
        args.func(args)
    except LorabenchError as exc:
        print("error", type(exc).__name__, exc, file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

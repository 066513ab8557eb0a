"""Checkpoints are lorabench's own, and guarded (security-reliability.md §3, checklist C 20).

A DuckDB checkpoint rewrites the live metadata block in place; ``kill -9`` can cut that ``pwrite``
short at a page boundary (Linux checks for fatal signals between pages), and the file then fails
its block checksum for good. The gateway switches DuckDB's own checkpoints off, copies the file to
``<catalog>.pre-checkpoint`` before each checkpoint, and puts the copy back when an open finds it
beside the same WAL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from _proc import Worker

from lorabench.catalog import Catalog
from lorabench.errors import CatalogError
from lorabench.samples import build_library

_METADATA_BLOCK = 12288  # the first block after DuckDB's three 4 KiB headers: the catalog's metadata


@pytest.fixture
def imported(tmp_path):
    lib = build_library(tmp_path / "lib", count=10, tiny=True, seed=41)
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as catalog:
        catalog.import_library([lib.root], progress=False)
    return db


def _notes(catalog: Catalog) -> dict[int, str]:
    return {r["lora_id"]: r["notes"] for r in catalog.sql("SELECT lora_id, notes FROM curation")}


def _guard_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if ".pre-checkpoint" in p.name)


def _tear(path: Path, offset: int) -> None:
    """What a kill -9 in the middle of rewriting a block leaves: its later pages hold other bytes."""
    with open(path, "r+b") as handle:
        handle.seek(offset + 8192)
        handle.write(bytes(range(256)) * 16)


def test_checkpoint_killed_after_a_torn_write_is_undone(imported, tmp_path):
    db = imported
    worker = Worker("leave-wal", db, 1, 2, 3, "--die-in-checkpoint")
    assert worker.wait() == 0, worker.stderr()
    assert worker.lines[-1] == "checkpoint CHECKPOINT"
    assert _guard_files(db) == ["catalog.duckdb.pre-checkpoint", "catalog.duckdb.pre-checkpoint.json"]
    # What DuckDB 2.0 does first in a checkpoint: append its checkpoint record to the WAL (synced), then
    # rewrite blocks. A kill there leaves a longer WAL than the copy was made with, and a torn block.
    with open(str(db) + ".wal", "ab") as wal:
        wal.write(bytes(60))
    _tear(db, _METADATA_BLOCK)

    # Without the guard the damage is final: DuckDB itself refuses the file (and its WAL).
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("catalog.duckdb", "catalog.duckdb.wal"):
        shutil.copy(db.parent / name, bare / name)
    with pytest.raises(duckdb.Error, match="Corrupt database file"):
        duckdb.connect(str(bare / "catalog.duckdb"))

    with Catalog(db) as catalog:
        assert _notes(catalog) == {1: "wal 1", 2: "wal 2", 3: "wal 3"}
        assert catalog.count() == 10
        assert _guard_files(db) == []
    assert not (db.parent / "quarantine").exists()
    with Catalog(db) as again:  # and the restored file checkpointed cleanly on close
        assert _notes(again) == {1: "wal 1", 2: "wal 2", 3: "wal 3"}


def test_copy_left_beside_another_wal_is_dropped_not_restored(imported):
    """A pre-checkpoint copy whose WAL is gone (the checkpoint finished, later commits made a new
    WAL) must not be put back: that would lose what the finished checkpoint folded in."""
    db = imported
    old_copy = db.read_bytes()
    with Catalog(db) as catalog:
        catalog.update(1, notes="folded in")
    assert not Path(str(db) + ".wal").exists()
    Path(str(db) + ".pre-checkpoint").write_bytes(old_copy)
    Path(str(db) + ".pre-checkpoint.json").write_text(json.dumps({"wal": "0" * 64}))
    worker = Worker("leave-wal", db, 2)
    assert worker.wait() == 0, worker.stderr()
    with Catalog(db) as catalog:
        assert _notes(catalog) == {1: "folded in", 2: "wal 2"}
    assert _guard_files(db) == []


def test_only_lorabench_checkpoints_and_sql_checkpoint_is_guarded(imported):
    db = imported
    wal = Path(str(db) + ".wal")
    catalog = Catalog(db)
    catalog.update(1, notes="one")
    catalog.release()  # DuckDB would checkpoint on close; lorabench keeps small WALs until later
    assert wal.stat().st_size > 0
    assert catalog.sql("CHECKPOINT").to_list() == []
    assert catalog._gateway.wal_size() == 0
    assert catalog.checkpoint() is False  # nothing left to fold
    catalog.update(2, notes="two")
    catalog._gateway.checkpoint_bytes = 1
    catalog.release()  # past the threshold: released files are checkpointed first
    assert catalog._gateway.wal_size() == 0
    catalog.update(3, notes="three")
    catalog.close()  # closing for good folds any WAL
    assert catalog._gateway.wal_size() == 0
    assert _guard_files(db) == []
    with Catalog(db) as again:
        assert _notes(again) == {1: "one", 2: "two", 3: "three"}


def test_a_failed_checkpoint_gives_the_file_up_and_the_next_open_restores_it(imported, monkeypatch):
    """DuckDB raising in CHECKPOINT (disk full, say) may leave the file half-written: the connection is
    dropped at once (lock released, nothing more written) and the next open puts the copy back."""
    db = imported
    catalog = Catalog(db)
    catalog.update(1, notes="before the failure")
    gateway = catalog._gateway

    class _FailsAtCheckpoint:
        def execute(self, sql: str) -> None:
            _tear(db, _METADATA_BLOCK)  # as if DuckDB had started writing
            raise duckdb.IOException("No space left on device")

    with gateway._mutex:
        gateway._connection()
        with pytest.raises(CatalogError, match="Could not checkpoint") as info:
            gateway._checkpoint(_FailsAtCheckpoint())  # type: ignore[arg-type]
    assert "WAL" in info.value.hint
    assert not gateway.is_open and not gateway._filelock.is_locked
    assert _guard_files(db) == ["catalog.duckdb.pre-checkpoint", "catalog.duckdb.pre-checkpoint.json"]
    assert _notes(catalog) == {1: "before the failure"}  # reopens: the copy is back, the WAL replayed
    assert _guard_files(db) == []
    catalog.close()
    with Catalog(db) as again:
        assert _notes(again) == {1: "before the failure"}


def test_a_process_that_only_read_does_not_copy_the_file_on_close(imported):
    """Folding another process's WAL costs a copy of the whole catalog: a reader leaves it to the
    writer (or the next writer's close)."""
    db = imported
    worker = Worker("leave-wal", db, 1)
    assert worker.wait() == 0, worker.stderr()
    wal = Path(str(db) + ".wal")
    size = wal.stat().st_size
    reader = Catalog(db)
    assert _notes(reader) == {1: "wal 1"}
    reader.close()
    assert wal.stat().st_size == size
    writer = Catalog(db)
    writer.update(2, notes="mine")
    writer.release()  # released below 4 MiB: the WAL stays …
    assert wal.exists()
    writer.close()  # … and closing for good folds it in, reopening the file to do so
    assert not wal.exists()
    with Catalog(db) as again:
        assert _notes(again) == {1: "wal 1", 2: "mine"}

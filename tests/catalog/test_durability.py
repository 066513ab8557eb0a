"""The catalog survives crashes and bad files (security-reliability.md §3, checklist B 15/19, C 20/23/26).

kill -9 at random points of imports, resyncs and commits; a damaged or stale
write-ahead log; migrations that fail or are killed half-way; incremental
rescans that must not re-read or re-hash; folder links, loops and hard links.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from pathlib import Path

import duckdb
import filelock
import pytest
from _proc import Worker

import lorabench.importer._read as read_module
import lorabench.importer._run as run_module
from lorabench.catalog import SCHEMA_VERSION, Catalog
from lorabench.catalog import _schema as schema
from lorabench.errors import CatalogError, SchemaVersionError
from lorabench.importer import scan
from lorabench.samples import build_library


def _duplicates(catalog: Catalog) -> list[dict]:
    return catalog.sql("SELECT path, count(*) AS n FROM loras GROUP BY path HAVING count(*) > 1").to_list()


def _expected_hashes(*libs) -> dict[str, str]:
    return {os.path.realpath(f.path): f.expected["sha256"] for lib in libs for f in lib.files}


_CURATION_KEYS = ("rating", "favorite", "notes", "user_tags")


def _curate(catalog: Catalog, count: int) -> dict[int, dict]:
    """Give ``count`` rows distinct curation; returns what each row must keep."""
    wanted: dict[int, dict] = {}
    for i, lora_id in enumerate(catalog.search("sort:name", limit=count).ids):
        record = catalog.update(lora_id, rating=i % 5 + 1, favorite=i % 2 == 0, notes=f"note {i}",
                                tags=[f"tag{i}", "kept"])  # fmt: skip
        wanted[lora_id] = {k: record[k] for k in _CURATION_KEYS}
    return wanted


def _check_catalog(db: Path, files: set[str], curated: dict[int, dict]) -> dict:
    """After a crash: the catalog opens, paths are unique and real, curation is intact."""
    with Catalog(db, deadline=10.0) as catalog:
        stats = catalog.stats()
        assert _duplicates(catalog) == []
        paths = set(catalog.sql("SELECT path FROM loras").column("path"))
        assert paths <= files, sorted(paths - files)[:5]
        for lora_id, wanted in curated.items():
            record = catalog.get(lora_id)
            assert {k: record[k] for k in _CURATION_KEYS} == wanted
        return stats


# -- 3. kill -9 during imports ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rounds", "max_delay", "extra"),
    [pytest.param(4, 0.8, 300, id="quick"), pytest.param(25, 2.0, 1000, id="many", marks=pytest.mark.slow)],
)
def test_import_killed_at_random_points_always_recovers(tmp_path, rounds, max_delay, extra):
    """Checklist 20 for imports. A library is imported and curated; more files arrive; imports of it
    (every third one a ``force_resync``) are SIGKILLed after a random delay that spans a whole run:
    interpreter start-up and the WAL replay of the previous victim, the scan, header batches,
    hashing and the hash commit. After every kill the catalog opens, paths are unique and real, rows
    never go away and curation is intact. A final plain import completes with one row per file,
    correct hashes for all, curation intact and no run left 'running'."""
    rng = random.Random(rounds * 1000 + extra)
    root = tmp_path / "lib"
    first = build_library(root / "first", count=40, tiny=True, seed=31)
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as catalog:
        catalog.import_library([root], progress=False)
        curated = _curate(catalog, 6)
    more = build_library(root / "more", count=extra, tiny=True, seed=32)
    files = set(_expected_hashes(first, more))

    history = []
    rows = 0
    for i in range(rounds):
        force = i % 3 == 2
        worker = Worker("import", db, root, *(["--force"] if force else []))
        if i % 4 == 3:  # from the very start: interpreter start-up, catalog open, WAL replay
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            worker.expect("ready")
            # A resync's first commit (an upsert of every row, ~1.5 ms a row) comes later: wait longer.
            time.sleep(rng.uniform(0.0, max_delay * (1.5 if force else 1.0)))
        killed = worker.kill()
        outcome = ("resync " if force else "") + ("killed" if killed else "finished")
        if i % 4 == 2:  # unchecked: the next victim replays this one's WAL (and is killed early)
            history.append(outcome)
            continue
        stats = _check_catalog(db, files, curated)
        assert stats["total"] >= rows, "a killed import lost rows"
        rows = stats["total"]
        history.append(f"{outcome} {stats['total']}/{stats['hashed']}")
    print("\nafter each round (rows/hashed):", history)

    with Catalog(db) as catalog:
        report = catalog.import_library([root], progress=False)
        assert report.status == "completed"
        assert report.errors == []
        assert _duplicates(catalog) == []
        rows = catalog.sql("SELECT path, sha256 FROM loras").to_list()
        assert {r["path"]: r["sha256"] for r in rows} == _expected_hashes(first, more)
        assert catalog.stats()["hashed"] == len(files)
        statuses = [r["status"] for r in catalog.runs(limit=1000)]
        assert statuses[0] == "completed"
        assert "running" not in statuses
    _check_catalog(db, files, curated)


@pytest.mark.parametrize(
    ("rounds", "max_delay"),
    [pytest.param(6, 0.3, id="quick"), pytest.param(40, 0.35, id="many", marks=pytest.mark.slow)],
)
def test_commits_killed_at_random_keep_exactly_the_acknowledged_ones(tmp_path, rounds, max_delay):
    """Checklist 20. A process commits numbered 200-row batches through Catalog.sql (with CHECKPOINT,
    FORCE CHECKPOINT and file releases in between) and prints ``ack k`` after each commit returns; it is
    SIGKILLed at random. Every reopen works; the batches are whole, numbered 1..n without gaps, and
    n is the last acknowledged batch or one more (committed, not yet acknowledged)."""
    rng = random.Random(rounds)
    db = tmp_path / "catalog.duckdb"
    last_ack = 0
    checkpoints = 0
    for i in range(rounds):
        worker = Worker("commits", db, "--seed", i)
        assert worker.expect("ready") is not None, worker.stderr()
        time.sleep(rng.uniform(0.0, max_delay))
        assert worker.kill(), "the committer cannot stop by itself"
        acks = [int(line.split()[1]) for line in worker.lines if line.startswith("ack ")]
        checkpoints += sum(line.startswith("checkpoint ") for line in worker.lines)
        last_ack = max([last_ack, *acks])
        with Catalog(db, deadline=10.0) as catalog:
            batches = catalog.sql("SELECT k, count(*) AS n FROM probe GROUP BY k ORDER BY k").to_list()
        ks = [b["k"] for b in batches]
        assert ks == list(range(1, len(ks) + 1))
        assert {b["n"] for b in batches} <= {200}
        assert last_ack <= len(ks) <= last_ack + 1
        last_ack = len(ks)
    print(f"\n{rounds} kills, {last_ack} batches committed, {checkpoints} checkpoints acknowledged")
    assert last_ack > rounds  # the kills landed among commits, not only during start-up


# -- 5. damaged write-ahead logs ----------------------------------------------------------------------------------


@pytest.fixture
def catalog_with_wal(tmp_path):
    """A catalog with 10 imported (checkpointed) rows, plus notes on rows 1-3 committed by a process
    that then died: those three commits exist only in ``catalog.duckdb.wal``."""
    lib = build_library(tmp_path / "lib", count=10, tiny=True, seed=41)
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as catalog:
        catalog.import_library([lib.root], progress=False)
    worker = Worker("leave-wal", db, 1, 2, 3)
    assert worker.wait() == 0, worker.stderr()
    assert [line for line in worker.lines if line.startswith("ack")] == ["ack 1", "ack 2", "ack 3"]
    wal = Path(str(db) + ".wal")
    assert wal.stat().st_size > 0
    return db, wal


def _notes(catalog: Catalog) -> dict[int, str]:
    return {r["lora_id"]: r["notes"] for r in catalog.sql("SELECT lora_id, notes FROM curation")}


def test_wal_of_a_killed_process_is_replayed(catalog_with_wal):
    db, _ = catalog_with_wal
    with Catalog(db) as catalog:
        assert _notes(catalog) == {1: "wal 1", 2: "wal 2", 3: "wal 3"}
        assert catalog.count() == 10
    assert not (db.parent / "quarantine").exists()


def test_torn_wal_tail_keeps_the_earlier_commits(catalog_with_wal):
    """A WAL cut short (a crash mid-write): DuckDB drops the torn last commit, replays the rest."""
    db, wal = catalog_with_wal
    data = wal.read_bytes()
    wal.write_bytes(data[:-8])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalog = Catalog(db)
    assert _notes(catalog) == {1: "wal 1", 2: "wal 2"}
    assert catalog.count() == 10
    catalog.close()
    assert not (db.parent / "quarantine").exists()


def test_corrupt_wal_is_quarantined_not_deleted(catalog_with_wal):
    """Checklist 23. A byte flipped inside a WAL entry fails DuckDB's checksum ("Corrupt WAL file: entry
    at byte position … computed checksum … does not match"): the catalog opens with a RuntimeWarning,
    the WAL (byte for byte) is kept in ``quarantine/<ts>/`` beside the catalog, checkpointed data is
    all there, and the WAL's commits are gone (the documented price)."""
    db, wal = catalog_with_wal
    data = bytearray(wal.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wal.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="quarantine"):
        catalog = Catalog(db)
    assert catalog.count() == 10
    assert _notes(catalog) == {}
    kept = list((db.parent / "quarantine").glob("*/catalog.duckdb.wal"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == bytes(data)
    catalog.update(1, notes="after")  # the catalog is writable again
    catalog.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Catalog(db) as again:
            assert _notes(again) == {1: "after"}


def test_garbage_wal_is_ignored_by_duckdb(catalog_with_wal):
    """A WAL of random bytes is not a DuckDB WAL at all: DuckDB 2.0.1 ignores it without an error (so
    lorabench neither warns nor quarantines), the checkpointed data is there, and the next write
    replaces the garbage."""
    db, wal = catalog_with_wal
    wal.write_bytes(random.Random(5).randbytes(4096))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        catalog = Catalog(db)
    assert catalog.count() == 10
    assert _notes(catalog) == {}
    catalog.update(2, notes="after garbage")
    catalog.close()
    assert not (db.parent / "quarantine").exists()
    with Catalog(db) as again:
        assert _notes(again) == {2: "after garbage"}


def test_stale_wal_beside_a_newer_catalog_is_quarantined(catalog_with_wal):
    """A WAL left over from an older state (a sync tool or a manual copy put it back): DuckDB refuses
    to replay it; lorabench must quarantine it and open the catalog, not fail."""
    db, wal = catalog_with_wal
    stale = wal.read_bytes()
    with Catalog(db) as catalog:  # replays the WAL …
        assert _notes(catalog) == {1: "wal 1", 2: "wal 2", 3: "wal 3"}
        assert catalog.checkpoint()  # … and folds it into the file (a reader's close leaves it)
    assert not wal.exists()
    wal.write_bytes(stale)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalog = Catalog(db)
    assert any(issubclass(w.category, RuntimeWarning) and "quarantine" in str(w.message) for w in caught)
    assert _notes(catalog) == {1: "wal 1", 2: "wal 2", 3: "wal 3"}
    catalog.close()
    assert [p.read_bytes() for p in (db.parent / "quarantine").glob("*/catalog.duckdb.wal")] == [stale]


def test_corrupt_database_file_leaves_a_healthy_wal_alone(catalog_with_wal):
    """The main file is damaged (a block checksum fails), the WAL is fine: the open fails with a
    CatalogError, and the WAL (the newest commits) stays where it is, with no WAL warning."""
    db, wal = catalog_with_wal
    wal_bytes = wal.read_bytes()
    with open(db, "r+b") as handle:
        handle.seek(100)
        chunk = handle.read(16)
        handle.seek(100)
        handle.write(bytes(b ^ 0xFF for b in chunk))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # today: the false quarantine warning, raised here
        with pytest.raises(CatalogError, match="Corrupt database file"):
            Catalog(db)
    assert wal.exists()
    assert wal.read_bytes() == wal_bytes
    assert not (db.parent / "quarantine").exists()


# -- 6. migrations ------------------------------------------------------------------------------------------------


def _schema_snapshot(db: Path) -> dict:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'main' ORDER BY ALL"
            ).fetchall(),
            "indexes": conn.execute("SELECT index_name, table_name, sql FROM duckdb_indexes() ORDER BY ALL").fetchall(),
            "views": conn.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
            ).fetchall(),
            "sequences": conn.execute("SELECT sequence_name FROM duckdb_sequences() ORDER BY ALL").fetchall(),
            "constraints": conn.execute(
                "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() ORDER BY ALL"
            ).fetchall(),
            "versions": conn.execute("SELECT version, name FROM _lorabench_migrations ORDER BY version").fetchall(),
        }
    finally:
        conn.close()


def _tables(db: Path) -> set[str]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        conn.close()


def test_fresh_catalog_equals_one_migrated_step_by_step(tmp_path):
    """Checklist 26: a catalog created at the latest version and one upgraded one migration per
    session (from a version-0 file) have the same tables, columns, indexes, views and sequences."""
    fresh = tmp_path / "fresh.duckdb"
    Catalog(fresh).close()
    old = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(old))
    assert schema.current_version(conn) == 0  # what an empty, version-0 catalog file holds
    conn.close()
    for version in range(1, SCHEMA_VERSION):
        conn = duckdb.connect(str(old))
        assert schema.migrate(conn, target=version) == version
        if version == 1:  # data written at version 1 survives the later migrations
            conn.execute("INSERT INTO roots (path, added_at) VALUES ('/library', now())")
        conn.close()
    with Catalog(old) as catalog:
        if SCHEMA_VERSION > 1:
            assert catalog.sql("SELECT path FROM roots").column("path") == ["/library"]
    if SCHEMA_VERSION > 1:
        conn = duckdb.connect(str(old))
        conn.execute("DELETE FROM roots")
        conn.close()
    assert _schema_snapshot(old) == _schema_snapshot(fresh)
    assert [v for v, _ in _schema_snapshot(fresh)["versions"]] == list(range(1, SCHEMA_VERSION + 1))


def test_migrate_to_version_zero_applies_nothing(tmp_path):
    conn = duckdb.connect(str(tmp_path / "zero.duckdb"))
    try:
        assert schema.migrate(conn, target=0) == 0
    finally:
        conn.close()


def test_catalog_from_a_newer_lorabench_is_refused_untouched(tmp_path):
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as catalog:
        catalog.sql("INSERT INTO roots (path, added_at) VALUES ('/library', now())")
        catalog.sql("INSERT INTO _lorabench_migrations VALUES (?, 'from the future', now())", [SCHEMA_VERSION + 1])
    before = _schema_snapshot(db)
    with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}"):
        Catalog(db)
    # The refused open released everything: the file lock, and DuckDB's instance (a read-only
    # connection in this process would fail with "different configuration" otherwise).
    lock = filelock.FileLock(str(db) + ".lock")
    lock.acquire(timeout=0)
    lock.release()
    assert _schema_snapshot(db) == before
    conn = duckdb.connect(str(db), read_only=True)
    assert conn.execute("SELECT path FROM roots").fetchall() == [("/library",)]
    conn.close()


def _at_version(db: Path, version: int) -> Path:
    """A catalog file holding exactly migrations 1..version (0: just the empty version table)."""
    conn = duckdb.connect(str(db))
    try:
        if version == 0:
            schema.current_version(conn)
        else:
            assert schema.migrate(conn, target=version) == version
    finally:
        conn.close()
    return db


def _fresh(tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh.duckdb"
    Catalog(fresh).close()
    return fresh


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_migration_failing_half_way_leaves_the_old_version(tmp_path, monkeypatch, version):
    """A statement in the middle of migration ``version`` fails: nothing of it stays (what it created
    before the failure is rolled back with it), the file is exactly at ``version - 1``; with the real
    migrations it then opens at the latest version."""
    db = _at_version(tmp_path / "catalog.duckdb", version - 1)
    before = _schema_snapshot(db)
    step = schema.MIGRATIONS[version - 1]
    half = max(1, len(step.statements) // 2)
    broken = schema.Migration(step.version, step.name,
                              (*step.statements[:half], "SELECT error('boom')", *step.statements[half:]))  # fmt: skip
    migrations = list(schema.MIGRATIONS)
    migrations[version - 1] = broken
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    with pytest.raises((CatalogError, duckdb.Error), match="boom"):
        Catalog(db)
    assert _schema_snapshot(db) == before
    monkeypatch.undo()
    Catalog(db).close()
    assert _schema_snapshot(db) == _schema_snapshot(_fresh(tmp_path))


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_migration_killed_half_way_leaves_the_old_version(tmp_path, version):
    """Checklist 26. A process is SIGKILLed inside a long statement at the end of migration
    ``version`` (after its tables were created in the same transaction): the file reopens exactly
    at ``version - 1``, never between, and then migrates normally."""
    db = _at_version(tmp_path / "catalog.duckdb", version - 1)
    before = _schema_snapshot(db)
    worker = Worker("migrate-slow", db, "--version", version)
    assert worker.expect("ready") is not None, worker.stderr()
    time.sleep(1.5)
    assert worker.kill(), f"the slow migration finished before it could be killed: {worker.stderr()}"
    assert "finished" not in worker.lines
    assert _schema_snapshot(db) == before
    assert "zz_slow" not in _tables(db)
    Catalog(db).close()
    assert _schema_snapshot(db) == _schema_snapshot(_fresh(tmp_path))


# -- 7. incremental rescans with malformed files ------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Count the files the importer reads (``inspect``) and hashes (``hash_files``); reads stay in this
    process (no reader processes) so that they can be counted."""
    calls: dict[str, list[str]] = {"read": [], "hashed": []}
    real_inspect, real_hash_files = read_module.inspect, run_module.hash_files

    def inspect(path, **kwargs):
        calls["read"].append(os.fspath(path))
        return real_inspect(path, **kwargs)

    def hash_files(items, **kwargs):
        items = list(items)
        calls["hashed"] += [os.fspath(p) for p, _ in items]
        return real_hash_files(items, **kwargs)

    monkeypatch.setattr(read_module, "inspect", inspect)
    monkeypatch.setattr(read_module, "POOL_MIN_FILES", 10**9)
    monkeypatch.setattr(run_module, "hash_files", hash_files)
    return calls


def _touch(path: Path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.mark.parametrize(
    ("good", "bad"),
    [pytest.param(95, 5, id="100-files"), pytest.param(990, 10, id="1000-files", marks=pytest.mark.slow)],
)
def test_rescans_with_malformed_files_read_and_hash_only_what_changed(tmp_path, counted, good, bad):
    """Checklist 19. 1 % malformed files (truncated copies and garbage) are recorded as errors and the
    run completes; an unchanged rescan reads and hashes nothing; a touched file is the only one
    re-read and re-hashed; a touched sidecar re-reads its LoRA without re-hashing it."""
    lib = build_library(tmp_path / "lib", count=good, tiny=True, seed=51)
    bad_dir = lib.root / "broken"
    bad_dir.mkdir()
    source = lib.files[0].path.read_bytes()
    rng = random.Random(51)
    broken = []
    for i in range(bad):
        path = bad_dir / f"broken_{i:02d}.safetensors"
        path.write_bytes(source[: len(source) // 2 + i] if i % 2 else rng.randbytes(200 + i))
        broken.append(os.path.realpath(path))
    total = good + bad
    catalog = Catalog(tmp_path / "catalog.duckdb")

    report = catalog.import_library([lib.root], progress=False)
    assert report.status == "completed"
    assert len(report.added) == total
    assert sorted(e["path"] for e in report.errors) == sorted(broken)
    errors = catalog.errors()
    assert sorted(r["path"] for r in errors) == sorted(broken)
    assert {r["status"] for r in errors} == {"error"}
    assert len(catalog.errors(report.run_id)) == bad
    assert catalog.stats()["ok"] == good
    assert len(counted["read"]) == total

    counted["read"].clear()
    counted["hashed"].clear()
    again = catalog.import_library([lib.root], progress=False)
    assert again.unchanged == total
    assert again.hashed == 0
    assert (again.added, again.changed, again.errors, again.moved, again.missing) == ([], [], [], [], [])
    assert counted == {"read": [], "hashed": []}
    assert len(catalog.errors()) == bad

    target = lib.files[good // 2].path
    before = catalog.search(f'name:"{target.stem}"').to_list()
    assert len(before) == 1
    _touch(target)
    touched = catalog.import_library([lib.root], progress=False)
    real = os.path.realpath(target)
    assert touched.changed == [real]
    assert touched.unchanged == total - 1
    assert touched.hashed == 1
    assert counted == {"read": [real], "hashed": [real]}
    after = catalog.get(before[0]["id"])
    assert after["sha256"] == before[0]["sha256"]

    with_sidecar = next(f for f in lib.files if f.sidecars)
    counted["read"].clear()
    counted["hashed"].clear()
    sidecar = next(p for p in with_sidecar.path.parent.glob(f"{with_sidecar.path.stem}.*") if p != with_sidecar.path)
    _touch(sidecar)
    resided = catalog.import_library([lib.root], progress=False)
    assert resided.changed == [os.path.realpath(with_sidecar.path)]
    assert counted == {"read": [os.path.realpath(with_sidecar.path)], "hashed": []}
    assert resided.hashed == 0
    assert len(catalog.errors()) == bad
    catalog.close()


# -- 8. links -----------------------------------------------------------------------------------------------------


@pytest.fixture
def linked_library(tmp_path):
    """A library with an outside file link, an outside folder link, a loop ``a/b -> ..``, a hard link
    to one of its files and an inside file link to another."""
    lib = build_library(tmp_path / "root" / "lib", count=12, tiny=True, seed=61)
    outside = build_library(tmp_path / "outside", count=2, tiny=True, seed=62)
    root = Path(os.path.realpath(lib.root))
    os.symlink(os.path.realpath(outside.files[0].path), root / "external.safetensors")
    os.symlink(os.path.realpath(outside.files[1].path.parent), root / "external_dir")
    (root / "a").mkdir()
    os.symlink("..", root / "a" / "b")
    os.link(lib.files[0].path, root / "a" / "hard_link.safetensors")
    os.symlink(os.path.realpath(lib.files[1].path), root / "a" / "inside_link.safetensors")
    return lib, root


def test_links_outside_loops_and_hard_links_give_one_row_per_file(tmp_path, linked_library):
    """Checklist 15: an outside file link is skipped as ``external_link``, folder links (outside, or the
    loop ``a/b -> ..``) are not followed, a file reached twice (hard link, inside link) is one row;
    a rescan changes nothing."""
    _lib, root = linked_library
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        report = catalog.import_library([root], progress=False)
        skipped = {(os.path.relpath(s["path"], root), s["code"]) for s in report.skipped}
        assert ("external.safetensors", "external_link") in skipped
        assert ("external_dir", "linked_folder") in skipped
        assert ("a/b", "linked_folder") in skipped
        assert sum(code == "duplicate_path" for _, code in skipped) == 2
        rows = catalog.sql("SELECT path, inode FROM loras").to_list()
        assert len(rows) == 12
        assert _duplicates(catalog) == []
        assert len({r["inode"] for r in rows}) == 12
        assert all(Path(r["path"]).is_relative_to(root) for r in rows)
        outside = os.path.realpath(tmp_path / "outside")
        assert not any(r["path"].startswith(outside) for r in rows)
        again = catalog.import_library([root], progress=False)
        assert again.unchanged == 12
        assert (again.added, again.changed, again.moved, again.missing) == ([], [], [], [])


def test_followed_links_still_give_one_row_per_file(tmp_path, linked_library):
    """With ``follow_symlinks=True`` the loop ``a/b -> ..`` is recorded as ``link_loop`` and not walked
    again; every file (including the outside one now followed) is one row."""
    _, root = linked_library
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        report = catalog.import_library([root], progress=False, follow_symlinks=True)
        skipped = {(os.path.relpath(s["path"], root), s["code"]) for s in report.skipped}
        assert ("a/b", "link_loop") in skipped
        assert _duplicates(catalog) == []
        rows = catalog.sql("SELECT path, device, inode FROM loras").to_list()
        assert len(rows) == len({(r["device"], r["inode"]) for r in rows}) == 14


def test_followed_link_to_an_ancestor_is_not_walked_twice(tmp_path):
    root = tmp_path / "lib"
    build_library(root, count=3, tiny=True, seed=63, subfolders=False)
    (root / "a").mkdir()
    os.symlink(root / "a", root / "a" / "self")
    result = scan([str(root)], [(str(root), str(root))], follow_symlinks=True)
    real_folders = sum(1 for _ in os.walk(root))
    assert result.folders == real_folders

"""The catalog is safe to share between processes (security-reliability.md §3, checklist C 21-22).

Everything here runs real processes (``_workers.py``): a notebook searching and
rating beside a scheduled import, a holder past the deadline, an import against
a held file. DuckDB itself never waits for a lock; lorabench's gateway must.
"""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

import duckdb
import filelock
import pytest
from _proc import REPO, Worker

from lorabench.catalog import Catalog
from lorabench.errors import CatalogError, CatalogLockedError
from lorabench.samples import build_library

N_NOTEBOOK = 4000  # files in the scheduled import (about 5 s of importing at 2 cores)
N_MID_RUN = 3000  # enough for several import batches (one a second)


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(*args: object, **kwargs: object) -> Worker:
        worker = Worker(*args, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


def _real_paths(lib) -> set[str]:
    return {os.path.realpath(f.path) for f in lib.files}


def _duplicates(catalog: Catalog) -> list[dict]:
    return catalog.sql("SELECT path, count(*) AS n FROM loras GROUP BY path HAVING count(*) > 1").to_list()


def _new_catalog(path: Path) -> None:
    Catalog(path).close()


# -- 1. a notebook beside a scheduled import ----------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_searches_and_rates_beside_a_scheduled_import(tmp_path, workers):
    """Process A runs ``lorabench import`` (the CLI) on 4,000 files while process B searches, counts,
    facets, gets and rates in a loop: neither sees an error, B watches the catalog fill up, and at the
    end every file has exactly one row and every one of B's ratings is there."""
    lib = build_library(tmp_path / "lib", count=N_NOTEBOOK, tiny=True, seed=11)
    db = tmp_path / "catalog.duckdb"
    _new_catalog(db)
    stop = tmp_path / "import-finished"

    browser = workers("browse", db, stop, "--seed", 7)
    browser.expect("ready")
    began = time.monotonic()
    importer = workers("lorabench", "import", "--catalog", db, "--json", "--no-progress", lib.root, module=True)
    rc = importer.wait(timeout=240)
    import_s = time.monotonic() - began
    stop.touch()
    browser_rc = browser.wait(timeout=120)

    assert rc == 0, importer.stderr()
    report = json.loads("\n".join(importer.lines))
    assert report["status"] == "completed"
    assert len(report["added"]) == N_NOTEBOOK
    assert report["errors"] == []
    assert report["hashed"] == N_NOTEBOOK

    seen = browser.result()
    print(f"\nimport {import_s:.1f} s; browser ops {seen['ops']}; slowest op {seen['slowest_s']:.2f} s; "
          f"counts seen {sorted(set(seen['counts']))[:8]}…")  # fmt: skip
    assert seen["errors"] == []
    assert browser_rc == 0, browser.stderr()
    assert sum(seen["ops"].values()) > 20
    counts = seen["counts"]
    assert counts == sorted(counts), "the row count went down while the import only adds rows"
    assert counts[-1] == N_NOTEBOOK
    assert any(0 < n < N_NOTEBOOK for n in counts), "B never saw the import in progress"
    assert seen["ratings"], "B never managed to rate anything"

    with Catalog(db) as catalog:
        assert _duplicates(catalog) == []
        rows = catalog.sql("SELECT path, sha256 FROM loras").to_list()
        assert {r["path"] for r in rows} == _real_paths(lib)
        expected = {os.path.realpath(f.path): f.expected["sha256"] for f in lib.files}
        assert {r["path"]: r["sha256"] for r in rows} == expected
        for lora_id, rating in seen["ratings"].items():
            assert catalog.get(int(lora_id))["rating"] == rating
        runs = catalog.runs().to_list()
        assert [r["status"] for r in runs] == ["completed"]


# -- 2. a holder past the deadline --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how", [(), ("--raw",), ("--raw", "--read-only")], ids=["lorabench-session", "raw-duckdb", "raw-duckdb-read-only"]
)
def test_holder_past_the_deadline_fails_cleanly_naming_its_pid(tmp_path, workers, how):
    """A notebook (or any other program with a DuckDB connection, even a read-only one) holds the
    file; a second process with ``deadline=1`` gets :class:`CatalogLockedError` naming the holder's
    PID after about a second, from a new Catalog and from a search on one opened earlier; once the
    holder is gone everything works again."""
    db = tmp_path / "catalog.duckdb"
    _new_catalog(db)
    earlier = Catalog(db, deadline=1.0)
    earlier.release()
    holder = workers("hold", db, 30, *how, "--until", tmp_path / "stop")
    holder.expect("ready")

    began = time.monotonic()
    with pytest.raises(CatalogLockedError, match=rf"\b{holder.pid}\b") as caught:
        Catalog(db, deadline=1.0)
    elapsed = time.monotonic() - began
    assert 0.7 <= elapsed <= 2.5, elapsed
    assert caught.value.code == "catalog_locked"
    assert "\n" not in str(caught.value)

    began = time.monotonic()
    with pytest.raises(CatalogLockedError, match=rf"\b{holder.pid}\b"):
        earlier.search("")
    assert 0.7 <= time.monotonic() - began <= 2.5

    (tmp_path / "stop").touch()
    assert holder.wait(timeout=30) == 0, holder.stderr()
    assert earlier.search("").total == 0  # nothing stale left behind by the failed attempt
    earlier.close()


@pytest.mark.parametrize("raw", [False, True], ids=["lorabench-session", "raw-duckdb"])
def test_import_against_a_held_catalog_fails_and_leaves_nothing(tmp_path, workers, raw):
    """Checklist 21: a scheduled import starting while the file is held backs off to its deadline,
    exits non-zero naming the holder's PID, and leaves no rows and no run behind."""
    lib = build_library(tmp_path / "lib", count=20, tiny=True, seed=12)
    db = tmp_path / "catalog.duckdb"
    _new_catalog(db)
    holder = workers("hold", db, 30, *(["--raw"] if raw else []), "--until", tmp_path / "stop")
    holder.expect("ready")

    importer = workers("import", db, lib.root, "--deadline", 1.0)
    rc = importer.wait(timeout=60)
    (tmp_path / "stop").touch()
    assert holder.wait(timeout=30) == 0

    assert rc == 2, importer.stderr()
    assert "CatalogLockedError" in importer.stderr()
    assert str(holder.pid) in importer.stderr()
    with Catalog(db) as catalog:
        assert catalog.count() == 0
        assert len(catalog.runs()) == 0
        assert len(catalog.sql("SELECT * FROM roots")) == 0


@pytest.mark.slow
def test_import_losing_the_file_mid_run_fails_cleanly_and_resumes(tmp_path, workers):
    """A notebook grabs the catalog half-way through an import and holds it: the import fails at its
    next batch with :class:`CatalogLockedError` naming the notebook's PID; committed batches are
    whole (no duplicate or foreign rows); the next run marks the dead run interrupted and completes."""
    lib = build_library(tmp_path / "lib", count=N_MID_RUN, tiny=True, seed=13)
    db = tmp_path / "catalog.duckdb"
    _new_catalog(db)
    holder = workers("hold", db, 60, "--after-rows", 1, "--until", tmp_path / "stop")
    holder.expect("waiting")  # polling for the import's first batch
    importer = workers("import", db, lib.root, "--deadline", 1.0)
    holder.expect("ready")
    rc = importer.wait(timeout=60)
    (tmp_path / "stop").touch()
    assert holder.wait(timeout=30) == 0

    assert rc == 2, importer.stderr() + "\n".join(importer.lines)
    assert "CatalogLockedError" in importer.stderr()
    assert str(holder.pid) in importer.stderr()

    with Catalog(db) as catalog:
        assert _duplicates(catalog) == []
        paths = set(catalog.sql("SELECT path FROM loras").column("path"))
        assert paths  # the batches committed before the notebook took over stay
        assert paths <= _real_paths(lib)
        assert [r["status"] for r in catalog.runs()] == ["running"]  # its finish could not be written
        report = catalog.import_library([lib.root], progress=False)
        assert report.status == "completed"
        assert report.unchanged + len(report.added) == N_MID_RUN
        assert _duplicates(catalog) == []
        assert set(catalog.sql("SELECT path FROM loras").column("path")) == _real_paths(lib)
        assert catalog.stats()["hashed"] == N_MID_RUN
        assert [r["status"] for r in catalog.runs()] == ["completed", "interrupted"]


# -- 4. same-process connections ----------------------------------------------------------------------------------


def test_same_process_read_only_connect_beside_the_gateway_is_a_clear_error(tmp_path):
    """Checklist 22. DuckDB refuses a second connection to an open file with another configuration
    ("Can't open a connection to same database file with a different configuration than existing
    connections", a ``duckdb.ConnectionException``); a plain second connection shares the instance.
    lorabench itself only ever connects in one configuration, through the gateway, and turns the
    reverse case (a user's read-only connection already open) into a :class:`CatalogError`."""
    db = tmp_path / "catalog.duckdb"
    catalog = Catalog(db)
    with catalog._gateway.session():
        with pytest.raises(duckdb.ConnectionException, match="different configuration"):
            duckdb.connect(str(db), read_only=True)
        with duckdb.connect(str(db)) as same:  # same configuration: the shared instance
            assert same.execute("SELECT count(*) FROM loras").fetchone() == (0,)
    catalog.release()

    user = duckdb.connect(str(db), read_only=True)
    try:
        with pytest.raises(CatalogError, match="different configuration"):
            catalog.count()
    finally:
        user.close()
    assert catalog.count() == 0
    catalog.close()

    connects = _duckdb_connect_calls(REPO / "lorabench")
    assert connects, "expected the gateway's duckdb.connect calls"
    assert {path for path, _ in connects} == {"lorabench/catalog/_gateway.py"}
    assert not [call for _, call in connects if any(k.arg in ("read_only", "config") for k in call.keywords)]


def _duckdb_connect_calls(package: Path) -> list[tuple[str, ast.Call]]:
    """Every ``duckdb.connect(...)`` call in the package's source."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "duckdb"
            ):
                found.append((path.relative_to(package.parent).as_posix(), node))
    return found


def test_two_catalog_objects_in_one_process_take_turns(tmp_path):
    """Two Catalog objects on one file in one process (two notebook cells) queue on the file lock
    instead of failing: each waits for the other's short linger."""
    lib = build_library(tmp_path / "lib", count=5, tiny=True, seed=14)
    db = tmp_path / "catalog.duckdb"
    first = Catalog(db, deadline=5.0)
    first.import_library([lib.root], progress=False)
    second = Catalog(db, deadline=5.0)
    ids = first.search("").ids
    for i, lora_id in enumerate(ids[:2]):
        second.update(lora_id, rating=i + 1)
        assert first.get(lora_id)["rating"] == i + 1
        assert second.count() == first.count() == 5
    first.close()
    second.close()
    lock = filelock.FileLock(str(db) + ".lock")
    lock.acquire(timeout=0)  # both released the file for good
    lock.release()

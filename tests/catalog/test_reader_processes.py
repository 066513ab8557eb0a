"""Large imports read files in worker processes: same rows, same order, no stray processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

import lorabench.importer._read as read_module
from lorabench.catalog import Catalog
from lorabench.importer import scan
from lorabench.samples import build_library


def _library(tmp_path: Path, count: int = 60) -> tuple[Path, list]:
    lib = build_library(tmp_path / "lib", count=count, tiny=True, seed=77)
    broken = lib.root / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    found = scan([str(lib.root)], [(str(lib.root), str(lib.root))])
    return lib.root, sorted(found.files.values(), key=lambda f: f.path)


def test_reader_processes_give_the_rows_of_an_in_process_read(tmp_path, monkeypatch):
    _, files = _library(tmp_path)
    now = datetime(2026, 11, 26, 12, 0)
    monkeypatch.setattr(read_module, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(read_module, "_CHUNK", 7)  # several chunks per worker, a short last one
    pooled = list(read_module.read_files(files, now, jobs=3))
    alone = [read_module.read_file(f, now) for f in files]
    assert [row["path"] for row, _ in pooled] == [f.path for f in files]
    assert pooled == alone
    errors = [error for _, error in pooled if error is not None]
    assert [e["path"] for e in errors] == [f.path for f in files if f.name == "broken"]


def test_import_with_reader_processes_matches_one_without(tmp_path, monkeypatch):
    root, files = _library(tmp_path)
    monkeypatch.setattr(read_module, "POOL_MIN_FILES", 1)
    with Catalog(tmp_path / "pooled.duckdb") as pooled, Catalog(tmp_path / "alone.duckdb") as alone:
        report = pooled.import_library([root], progress=False, jobs=2)
        monkeypatch.setattr(read_module, "POOL_MIN_FILES", 10**9)
        baseline = alone.import_library([root], progress=False, jobs=2)
        assert len(report.added) == len(baseline.added) == len(files)
        assert [e["code"] for e in report.errors] == [e["code"] for e in baseline.errors] == ["header_not_json"]
        columns = "path, name, base_model, algorithm, rank, alpha, training_tags, trigger_words, sha256, status"
        query = f"SELECT {columns} FROM loras ORDER BY path"
        assert pooled.sql(query).to_list() == alone.sql(query).to_list()


def test_a_script_without_a_main_guard_is_not_run_again_by_the_readers(tmp_path):
    """multiprocessing's spawn/forkserver would re-run the caller's script in each worker."""
    root, files = _library(tmp_path)
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(f"""
        import lorabench.importer._read as read_module
        from lorabench.catalog import Catalog
        print("script body ran", flush=True)
        read_module.POOL_MIN_FILES = 1
        with Catalog({str(tmp_path / "c.duckdb")!r}) as catalog:
            report = catalog.import_library([{str(root)!r}], progress=False, jobs=2)
        print("added", len(report.added), flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["script body ran", f"added {len(files)}"], out.stderr


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"LORABENCH_TEST_MARKER={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_readers_end_when_the_importer_is_killed(tmp_path):
    lib = build_library(tmp_path / "lib", count=1500, tiny=True, seed=78)
    marker = uuid.uuid4().hex
    code = textwrap.dedent(f"""
        from lorabench.catalog import Catalog
        with Catalog({str(tmp_path / "c.duckdb")!r}) as catalog:
            catalog.import_library([{str(lib.root)!r}], progress=False, jobs=2)
    """)
    importer = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "LORABENCH_TEST_MARKER": marker})
    deadline = time.monotonic() + 60
    while len(_processes_with(marker)) < 3 and time.monotonic() < deadline and importer.poll() is None:
        time.sleep(0.02)
    assert importer.poll() is None, "the import ended before its readers were seen"
    assert len(_processes_with(marker)) >= 3  # the importer and its two readers
    os.kill(importer.pid, signal.SIGKILL)
    importer.wait()
    deadline = time.monotonic() + 20
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []


def test_requests_larger_than_a_pipe_buffer_do_not_deadlock(tmp_path, monkeypatch):
    """Deep folders make one chunk's request (and reply) far larger than the 64 KiB a pipe holds; the
    importer must keep draining replies while it sends (a single thread doing both would hang)."""
    deep = tmp_path.joinpath(*(c * 250 for c in "fghijkl"))  # paths of about 2,000 characters
    lib = build_library(deep, count=300, tiny=True, seed=79)
    found = scan([str(lib.root)], [(str(lib.root), str(lib.root))])
    files = sorted(found.files.values(), key=lambda f: f.path)
    assert sum(len(f.path) for f in files[:50]) > 90_000  # one request: well over a pipe's 64 KiB
    monkeypatch.setattr(read_module, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(read_module, "_CHUNK", 50)  # six chunks: three per worker, two sent ahead
    now = datetime(2026, 11, 26, 12, 0)
    result: list = []
    reader = threading.Thread(target=lambda: result.extend(read_module.read_files(files, now, jobs=2)), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "reading deadlocked"
    assert [row["path"] for row, _ in result] == [f.path for f in files]


def test_stopping_early_ends_the_readers(tmp_path, monkeypatch):
    _, files = _library(tmp_path)
    monkeypatch.setattr(read_module, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(read_module, "_CHUNK", 5)
    started: list = []
    real_start = read_module._start_worker

    def start():
        started.append(real_start())
        return started[-1]

    monkeypatch.setattr(read_module, "_start_worker", start)
    rows = read_module.read_files(files, datetime(2026, 11, 26), jobs=2)
    assert next(rows)[0]["path"] == files[0].path
    rows.close()  # the consumer gives up after one row (an import that failed, say)
    assert len(started) == 2
    assert all(worker.poll() is not None for worker in started)

"""Result files and history: atomic writes, LoRA links, queries, deletion, the orphan sweep, migration 2."""

from __future__ import annotations

import asyncio
import io
import os
import time
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lorabench.catalog import SCHEMA_VERSION, Catalog
from lorabench.catalog import _schema as schema
from lorabench.catalog._history import History, NewImage
from lorabench.errors import CatalogError, NotFoundError
from lorabench.queue import Queue, RetryPolicy
from lorabench.queue._results import sweep, write_images
from lorabench.sdnext import GeneratedImage, SDNextClient, StandinServer, Txt2ImgRequest

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, down_min=0.2, down_max=0.5)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def library(tmp_path_factory, showcase):
    """The showcase library imported into a catalog file (shared, read-mostly)."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.duckdb"
    catalog = Catalog(path)
    catalog.import_library([showcase.root], progress=False)
    catalog.close()
    return showcase, path


def png_with_infotext(text: str, seed: int = 0) -> GeneratedImage:
    info = PngInfo()
    info.add_text("parameters", text)
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (seed % 255, 80, 120)).save(out, "PNG", pnginfo=info)
    return GeneratedImage.from_bytes(out.getvalue())


def all_rows_have_files(catalog: Catalog) -> bool:
    return all(os.path.exists(r["path"]) for r in catalog.sql("SELECT path FROM results"))


@pytest.mark.anyio
@pytest.mark.parametrize("hashes", [True, False], ids=["by-hash", "by-name"])
async def test_results_are_written_atomically_and_linked_to_catalog_loras(library, tmp_path, hashes):
    showcase, catalog_path = library
    catalog = Catalog(catalog_path)
    rows = catalog.sql("SELECT id, name, sha256 FROM loras WHERE status = 'ok' AND sha256 IS NOT NULL ORDER BY id")
    with StandinServer(lora_dir=showcase.root) as srv:
        url = srv.url
        async with SDNextClient(srv.url) as sd:
            served = {entry.name for entry in await sd.loras()}
            await sd.set_options({"lora_add_hashes_to_infotext": hashes})
        used = [r for r in rows if r["name"] in served and "." not in r["name"]][:2]
        assert len(used) == 2
        prompt = f"a fox <lora:{used[0]['name']}:0.8> <lora:{used[1]['name']}:0.35> <lora:not_in_library:0.5>"
        q = Queue(catalog, [srv.url], path=tmp_path / "q.sqlite", results_dir=tmp_path / "results", retry=FAST)
        job = q.submit(Txt2ImgRequest(prompt=prompt, seed=11, width=64, height=64, steps=2, n_iter=2))
        async with q:
            done = await q.wait(job.id, timeout=30)
    assert done.state == "succeeded" and len(done.result_ids) == 2
    results = q.results(job.id)
    assert [r.image_index for r in results] == [0, 1] and [r.seed for r in results] == [11, 12]
    folder = tmp_path / "results" / date.today().isoformat()
    assert sorted(p.name for p in folder.iterdir()) == [f"{job.id}_0.jpg", f"{job.id}_1.jpg"]  # no temp files
    for record in results:
        assert record.path == str(folder / f"{job.id}_{record.image_index}.jpg")
        assert record.format == "JPEG" and record.width == 64 and record.bytes == os.path.getsize(record.path)
        assert record.request["prompt"] == prompt and record.backend == url
        assert record.params["seed"] == record.seed and record.infotext.startswith("a fox")
        assert record.generation_s > 0 and record.total_s >= record.generation_s and record.queue_wait_s >= 0
        by_name = {item["name"]: item for item in record.loras}
        assert set(by_name) == {used[0]["name"], used[1]["name"], "not_in_library"}
        for row, weight in ((used[0], 0.8), (used[1], 0.35)):
            item = by_name[row["name"]]
            assert item["lora_id"] == row["id"] and item["weight"] == weight
            assert item["matched_by"] == ("hash" if hashes else "name")
            assert (item["hash"] is not None) == hashes and (not hashes or row["sha256"].startswith(item["hash"]))
        assert by_name["not_in_library"]["lora_id"] is None
    assert [r.id for r in q.history.search(lora=used[0]["name"], limit=None)] == [results[1].id, results[0].id]
    assert len(q.history.search(lora=used[1]["id"])) == 2
    q.history.delete_job(job.id)
    q.close()
    catalog.close()


def _record(history: History, tmp_path, job: str, day: date, n: int = 1, lora: str = "ink") -> list[int]:
    folder = tmp_path / "results" / day.isoformat()
    images = [png_with_infotext(f"cat <lora:{lora}:0.5>\nSteps: 3, Seed: {i}", seed=i) for i in range(n)]
    written_day, files = write_images(tmp_path / "results", job, images, list(range(n)), day=day)
    assert written_day == day and all(os.path.dirname(f.path) == str(folder) for f in files)
    return [r.id for r in history.record(job, "k" + job, {"prompt": f"cat <lora:{lora}:0.5>"}, files, day=day)]


def test_history_queries_rating_favourite_and_deletion(tmp_path):
    catalog = Catalog(":memory:")
    history = History(catalog, results_dir=tmp_path / "results")
    today, earlier = date.today(), date.today() - timedelta(days=3)
    a = _record(history, tmp_path, "a" * 16, today, n=2, lora="ink")
    b = _record(history, tmp_path, "b" * 16, earlier, n=1, lora="fox")
    assert history.count() == 3 and history.count(lora="ink") == 2 and history.count(lora="none") == 0
    assert [r.id for r in history.search(day=earlier)] == b
    assert [r.id for r in history.search(day=today.isoformat(), newest_first=False)] == a
    assert [r.id for r in history.search(since=today)] == [a[1], a[0]]
    assert [r.id for r in history.search(until=earlier)] == b
    assert len(history.search(since=datetime.now(UTC) - timedelta(minutes=5))) == 3
    assert history.rate(a[0], 5).rating == 5
    history.rate(b[0], 2)
    assert history.set_favorite(a[1]).favorite
    assert [r.id for r in history.search(min_rating=3)] == [a[0]]
    assert [r.id for r in history.search(rating=2)] == b
    assert [r.id for r in history.search(favorite=True)] == [a[1]]
    assert history.rate(a[0], None).rating is None
    with pytest.raises(CatalogError):
        history.rate(a[0], 6)
    with pytest.raises(NotFoundError):
        history.get(999)
    assert history.search(prompt="CAT <LORA:FOX")[0].id == b[0]
    paths = [history.get(i).path for i in a]
    assert history.delete(a) == 2
    assert not any(os.path.exists(p) for p in paths) and history.count() == 1
    # a row pointing outside the results folder loses its row, never its file
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x")
    image = NewImage(path=str(outside), format="PNG", index=0, nbytes=1, sha256="0" * 64)
    [stray] = history.record("c" * 16, "kc", {"prompt": "p"}, [image], day=today)
    assert history.delete([stray.id]) == 1 and outside.exists()
    assert all_rows_have_files(catalog)


def test_sweep_adopts_removes_and_keeps(tmp_path):
    catalog = Catalog(":memory:")
    q = Queue(catalog, ["http://127.0.0.1:9"], path=tmp_path / "q.sqlite", results_dir=tmp_path / "results")
    root, today = tmp_path / "results", date.today()
    image = png_with_infotext("a cat <lora:ink:0.7>\nSteps: 3, Seed: 5, LoRA networks: ink", seed=5)

    def claimed(i: int, lease: float, submitted: bool = True):
        job = q.submit(Txt2ImgRequest(prompt=f"cat {i}", seed=i))
        q.store.claim(f"otherhost:{i}:w", "http://127.0.0.1:9", lease)
        if submitted:
            q.store.mark_submitted(job.id, f"otherhost:{i}:w")
        return job

    dead = claimed(1, lease=-1)  # a worker on another host, killed after writing its image
    write_images(root, dead.id, [image], [5])
    alive = claimed(2, lease=60)  # still running elsewhere: its file is about to be recorded
    write_images(root, alive.id, [image], [5])
    never_sent = claimed(3, lease=-1, submitted=False)
    write_images(root, "f" * 16, [image], [5])  # no such job
    stale_temp = root / today.isoformat() / f".tmp-{'e' * 16}_0.png.123"
    stale_temp.write_bytes(b"half")
    os.utime(stale_temp, (time.time() - 3600, time.time() - 3600))
    done = q.submit(Txt2ImgRequest(prompt="cat 4", seed=4))  # succeeded, then its result deleted half-way
    q.store.claim(q.worker_id, "http://127.0.0.1:9", 30)
    q.store.finish(done.id, q.worker_id, "succeeded")
    write_images(root, done.id, [image], [5])

    changed = {j.id: j.state for j in q.recover()}
    assert changed == {dead.id: "succeeded", never_sent.id: "queued"}
    assert q.get(never_sent.id).attempt == 0
    [adopted] = q.results(dead.id)
    assert adopted.seed is not None and adopted.width == 16 and adopted.loras[0]["name"] == "ink"
    assert q.get(dead.id).result_ids == [adopted.id]
    names = sorted(p.name for p in (root / today.isoformat()).iterdir())
    assert names == sorted([f"{dead.id}_0.png", f"{alive.id}_0.png"])
    assert q.get(alive.id).state == "running" and q.results(alive.id) == []
    assert all_rows_have_files(catalog)
    report = sweep(root, q.store, q.history)
    assert (report.adopted, report.removed, report.temp_removed) == (0, 0, 0)
    q.close()


@pytest.mark.anyio
async def test_save_failure_leaves_an_orphan_that_the_next_start_adopts(tmp_path, monkeypatch):
    catalog = Catalog(":memory:")
    with StandinServer() as srv:
        q = Queue(catalog, [srv.url], path=tmp_path / "q.sqlite", results_dir=tmp_path / "results", retry=FAST)
        real_record = q.history.record

        def crash(*args, **kwargs):
            raise OSError("disk vanished between the rename and the insert")

        monkeypatch.setattr(q.history, "record", crash)
        job = q.submit(Txt2ImgRequest(prompt="x", seed=1, width=64, height=64, steps=2))
        async with q:
            done = await q.wait(job.id, timeout=20)
        assert done.state == "interrupted" and done.error_code == "save_failed"
        assert len(list((tmp_path / "results").rglob(f"{job.id}_0.jpg"))) == 1 and q.results(job.id) == []
        monkeypatch.setattr(q.history, "record", real_record)
        async with q:  # a runner start sweeps and adopts
            await asyncio.sleep(0.2)
        assert q.get(job.id).state == "succeeded" and len(q.results(job.id)) == 1
        assert len(srv.generation_log) == 1 and all_rows_have_files(catalog)
    q.close()


def test_migration_2_adds_the_results_tables(tmp_path):
    assert SCHEMA_VERSION >= 2 and schema.MIGRATIONS[1].name == "generation results"
    db = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(db))
    schema.migrate(conn, target=1)
    conn.execute("INSERT INTO roots (path, added_at) VALUES ('/lib', now())")
    conn.close()
    Catalog(db).close()
    conn = duckdb.connect(str(db), read_only=True)
    tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"results", "result_loras", "result_deliveries", "loras", "roots"} <= tables
    assert conn.execute("SELECT path FROM roots").fetchall() == [("/lib",)]
    assert conn.execute("SELECT max(version) FROM _lorabench_migrations").fetchone()[0] == SCHEMA_VERSION
    conn.close()

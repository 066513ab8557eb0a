"""Importer behaviour: incremental, dry-run exact, curation never lost, roots offline, moves."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from lorabench.catalog import Catalog
from lorabench.errors import CatalogError, NotFoundError
from lorabench.samples import build_library


@pytest.fixture
def lib(tmp_path):
    return build_library(tmp_path / "lib", count=60, tiny=True, seed=3)


@pytest.fixture
def cat(tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as c:
        yield c


def _ids_by_path(cat):
    return {r["path"]: r["id"] for r in cat.search("")}


def test_first_import_then_nothing_to_do(lib, cat):
    report = cat.import_library([lib.root], progress=False)
    assert len(report.added) == 60 and report.hashed == 60 and not report.errors
    assert cat.count() == 60 and cat.count("has:hash") == 60
    again = cat.import_library([lib.root], progress=False)
    assert again.unchanged == 60 and again.hashed == 0
    assert again.added == again.changed == again.missing == [] and again.moved == []


def test_dry_run_reports_exactly_what_the_run_does(lib, cat, tmp_path):
    cat.import_library([lib.root], progress=False)
    files = sorted(f.path for f in lib.files)
    # one changed, one renamed (same inode), one copied across "devices" (new inode), one deleted, one added
    with files[0].open("ab") as f:
        f.write(b"")
    os.utime(files[0], ns=(time.time_ns(), time.time_ns()))
    renamed = files[1].with_name("renamed_" + files[1].name)
    files[1].rename(renamed)
    copied = tmp_path / "lib" / "moved_copy.safetensors"
    shutil.copy2(files[2], copied)
    files[2].unlink()
    files[3].unlink()
    extra = build_library(tmp_path / "extra", count=1, tiny=True, seed=99).files[0].path
    shutil.copy2(extra, tmp_path / "lib" / "brand_new.safetensors")
    plan = cat.import_library([lib.root], dry_run=True, progress=False)
    done = cat.import_library([lib.root], progress=False)
    for key in ("added", "changed", "missing", "errors"):
        assert sorted(getattr(plan, key)) == sorted(getattr(done, key)), key
    assert sorted(map(str, plan.moved)) == sorted(map(str, done.moved))
    assert plan.unchanged == done.unchanged
    assert {m["to"] for m in done.moved} == {str(renamed), str(copied)}
    assert done.missing == [str(files[3])]
    assert done.added == [str(tmp_path / "lib" / "brand_new.safetensors")]
    assert done.changed == [str(files[0])]


def test_curation_survives_reimport_force_resync_move_rename_and_disappearance(lib, cat, tmp_path):
    cat.import_library([lib.root], progress=False)
    ids = _ids_by_path(cat)
    target = sorted(ids)[5]
    lid = ids[target]
    cat.update(lid, rating=5, favorite=True, notes="best", tags=["Ink"], preferred_weight=0.7,
               trigger_groups=[{"name": "look", "words": ["red coat"]}])  # fmt: skip

    def check(expected_path):
        rec = cat.get(lid)
        assert rec["path"] == expected_path
        assert (rec["rating"], rec["favorite"], rec["notes"], rec["user_tags"]) == (5, True, "best", ["ink"])
        assert rec["preferred_weight"] == 0.7
        assert rec["trigger_groups"] == [{"name": "look", "words": ["red coat"]}]

    cat.import_library([lib.root], progress=False)
    check(target)
    cat.import_library([lib.root], force_resync=True, progress=False)
    check(target)
    renamed = os.path.join(os.path.dirname(target), "renamed.safetensors")
    os.rename(target, renamed)
    cat.import_library([lib.root], progress=False)
    check(renamed)
    elsewhere = tmp_path / "lib" / "zzz" / "copy.safetensors"
    elsewhere.parent.mkdir()
    shutil.copyfile(renamed, elsewhere)  # new inode and mtime: only the content hash links it
    os.unlink(renamed)
    report = cat.import_library([lib.root], progress=False)
    assert {"from": renamed, "to": str(elsewhere)} in report.moved
    check(str(elsewhere))
    parked = tmp_path / "parked.safetensors"
    shutil.move(str(elsewhere), parked)
    report = cat.import_library([lib.root], progress=False)
    assert report.missing == [str(elsewhere)]
    assert cat.get(lid)["missing"] is True and cat.count("is:missing") == 1
    shutil.move(parked, elsewhere)
    report = cat.import_library([lib.root], progress=False)
    assert report.restored == [str(elsewhere)]
    check(str(elsewhere))
    assert cat.get(lid)["missing"] is False
    assert cat.count() == 60


def test_unplugged_root_goes_offline_and_is_never_pruned(lib, cat, tmp_path):
    cat.import_library([lib.root], progress=False)
    some = sorted(_ids_by_path(cat).items())[0][1]
    cat.update(some, rating=3)
    unplugged = tmp_path / "unplugged"
    os.rename(lib.root, unplugged)
    report = cat.import_library([lib.root], progress=False)
    assert len(report.offline) == 60 and report.missing == []
    assert cat.count("is:offline") == 60 and cat.count() == 60
    os.rename(unplugged, lib.root)
    back = cat.import_library([lib.root], progress=False)
    assert len(back.restored) == 60 and cat.count("is:offline") == 0
    assert cat.get(some)["rating"] == 3


def test_scoped_run_touches_only_its_folder(lib, cat):
    cat.import_library([lib.root], progress=False)
    folders = sorted({f.path.parent for f in lib.files})
    assert len(folders) >= 2
    scope, other = folders[0], folders[1]
    victim = next(f.path for f in lib.files if f.path.parent == other)
    victim.unlink()
    report = cat.import_library([scope], progress=False)
    assert report.roots == [str(lib.root)] and report.scope == [str(scope)]
    assert report.missing == []
    full = cat.import_library([lib.root], progress=False)
    assert full.missing == [str(victim)]


def test_sidecar_change_beside_unchanged_lora_is_picked_up(showcase, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(showcase.root, lib)
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.import_library([lib], progress=False)
        target = next(r for r in cat.search("") if r["status"] == "ok")
        stem = target["path"][: -len(".safetensors")]
        with open(stem + ".json", "w") as f:
            f.write('{"description": "now with notes", "activation text": "zzqtrigger", "preferred weight": 0.6}')
        report = cat.import_library([lib], progress=False)
        assert report.changed == [target["path"]] and report.hashed == 0
        rec = cat.get(target["id"])
        assert "zzqtrigger" in rec["trigger_words"]
        assert rec["sha256"] == target["sha256"]
        assert rec["preferred_weight"] == 0.6


def test_bad_files_are_error_rows_and_the_run_completes(tmp_path, cat):
    lib = build_library(tmp_path / "lib", count=20, tiny=True, seed=5)
    broken = lib.files[0].path
    broken.write_bytes(broken.read_bytes()[:50])
    (tmp_path / "lib" / "pickle.ckpt").write_bytes(b"\x80\x04\x95" + b"\0" * 100)
    report = cat.import_library([lib.root], progress=False)
    codes = {e["path"]: e["code"] for e in report.errors}
    assert codes[str(broken)] in ("incomplete_buffer", "invalid_header_length", "header_not_json")
    assert codes[str(tmp_path / "lib" / "pickle.ckpt")] == "unsafe_format"
    assert cat.count("is:error") == 1 and cat.count("is:unsafe") == 1
    errors = cat.errors()
    assert {r["path"] for r in errors} == set(codes)
    run = cat.runs()[0]
    assert run["status"] == "completed" and run["counts"]["errors"] == 2
    assert {r["path"] for r in cat.errors(run["id"])} == set(codes)


def test_update_validates_and_unknown_ids_fail(lib, cat):
    cat.import_library([lib.root], progress=False, hashes=False)
    lid = cat.search("")[0]["id"]
    for bad in ({"rating": 6}, {"rating": True}, {"favorite": "yes"}, {"tags": "a,b"},
                {"preferred_weight": float("nan")}, {"trigger_groups": [{"name": "x"}]}):  # fmt: skip
        with pytest.raises(CatalogError):
            cat.update(lid, **bad)
    with pytest.raises(NotFoundError):
        cat.update(10**9, rating=2)
    with pytest.raises(NotFoundError):
        cat.get(10**9)
    assert cat.update(lid, rating=None)["rating"] is None


def test_search_results_as_records_dataframe_and_arrow(lib, cat):
    cat.import_library([lib.root], progress=False)
    result = cat.search("sort:name", limit=10)
    assert len(result) == 10 and result.total == 60
    names = [r["name"] for r in result]
    assert names == sorted(names)
    assert list(result.df()["name"]) == names
    assert result.arrow().num_rows == 10
    page2 = cat.search("sort:name", limit=10, offset=10)
    assert not set(page2.ids) & set(result.ids)
    facets = cat.facets("")
    assert sum(c for _, c in facets["base_model"]) == 60
    sql = cat.sql("SELECT count(*) AS n FROM loras WHERE size > ?", [0])
    assert sql[0]["n"] == 60


def test_memory_catalog_for_scripts(lib):
    with Catalog(":memory:") as cat:
        cat.import_library([lib.root], progress=False, hashes=False)
        assert cat.count() == 60 and cat.stats()["hashed"] == 0


def test_catalog_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORABENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORABENCH_CATALOG", raising=False)
    with Catalog() as cat:
        assert cat.path == str(tmp_path / "home" / "catalog.duckdb")
    monkeypatch.setenv("LORABENCH_CATALOG", str(tmp_path / "x.duckdb"))
    with Catalog() as cat:
        assert cat.path == str(tmp_path / "x.duckdb")
    assert (tmp_path / "x.duckdb").exists()

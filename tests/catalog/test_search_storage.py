"""Migration 3 and what search relies on: distinct lists, lower-case hashes, lora_core, search_text storage."""

from __future__ import annotations

import json

import duckdb
import pytest

from lorabench.catalog import Catalog, compile_query
from lorabench.catalog import _schema as schema
from lorabench.catalog._guard import backup_before_migration
from lorabench.catalog._rows import lora_row, search_text
from lorabench.files import inspect
from lorabench.samples import build_library

_SHA = "ABCDEF" + "0" * 58
_TENSOR = "FEDCBA" + "1" * 58


def _version2_catalog(path) -> None:
    """A catalog as lorabench wrote it before migration 3: duplicates in lists, upper-case hashes,
    search_text with the full path."""
    conn = duckdb.connect(str(path))
    assert schema.migrate(conn, target=2) == 2
    conn.execute(
        "INSERT INTO loras (path, root, folder, name, title, description, status, trigger_words, training_tags, "
        "sidecar_kinds, sha256, autov2, autov3, tensor_sha256, legacy_hash, base_model, algorithm, search_text, "
        "first_seen) VALUES (?, '/lib', 'styles/ink', 'inkwash', 'Ink Wash', 'Brush strokes', 'ok', ?, ?, ?, ?, ?, "
        "?, ?, 'ABCD1234', 'sdxl', 'lora', ?, now())",
        ["/lib/styles/ink/inkwash.safetensors", ["inkw", "inkw"], ["ink", "wash", "ink"], ["txt", "txt"],
         _SHA, _SHA[:10], _TENSOR[:12], _TENSOR, "inkwash\x1fink wash\x1f/lib/styles/ink/inkwash.safetensors"],
    )  # fmt: skip
    conn.execute("INSERT INTO curation (lora_id, user_tags, rating, updated_at) VALUES (1, ['mine', 'mine'], 4, now())")
    conn.close()


def test_migration_3_brings_old_rows_in_line(tmp_path):
    db = tmp_path / "catalog.duckdb"
    _version2_catalog(db)
    with Catalog(db) as catalog:
        row = catalog.sql("SELECT * FROM loras").to_list()[0]
        assert row["trigger_words"] == ["inkw"]
        assert sorted(row["training_tags"]) == ["ink", "wash"]
        assert row["sidecar_kinds"] == ["txt"]
        assert (row["sha256"], row["autov2"], row["autov3"], row["tensor_sha256"], row["legacy_hash"]) == (
            _SHA.lower(), _SHA[:10].lower(), _TENSOR[:12].lower(), _TENSOR.lower(), "abcd1234")
        assert row["search_text"] == search_text("inkwash", "Ink Wash", "Brush strokes", "styles/ink", ["inkw"],
                                                 row["training_tags"])  # fmt: skip
        assert catalog.sql("SELECT user_tags FROM curation").column("user_tags") == [["mine"]]
        # Hash prefixes are matched case-blind by lower-casing the query, not every row.
        for query in ("hash:ABCDEF", "hash:abcdef00", f"hash:{_TENSOR[:12]}", "hash:0xFEDCBA1"):
            assert catalog.search(query).ids == [1], query
        assert catalog.facets("", fields=["training_tags", "user_tags"]) == {
            "training_tags": [("ink", 1), ("wash", 1)], "user_tags": [("mine", 1)]}
        assert catalog.search("mine").ids == [1]  # free text reaches the user's tags in curation
        assert catalog.search("styles/ink").ids == [1]  # the folder is in search_text
        assert catalog.search("/lib/styles").ids == [1]  # a pasted path is looked up in path too
        assert catalog.search("lib").ids == []  # but the root alone is not free text
        catalog.checkpoint()
        storage = catalog.sql("SELECT DISTINCT compression FROM pragma_storage_info('loras') "
                              "WHERE column_name = 'search_text' AND compression <> 'Constant'").column("compression")
        assert storage == ["Uncompressed"]


def test_importer_writes_distinct_lower_case_lists(tmp_path):
    lib = build_library(tmp_path / "lib", count=8, tiny=True, seed=5)
    info = inspect(lib.files[0].path)
    info.tags = {**dict.fromkeys(info.tags), "Smile": 3, "smile": 2}  # the same tag twice, by case
    info.trigger_words = [*info.trigger_words, *info.trigger_words]
    row = lora_row(info, root=str(lib.root), folder="", inode=1, device=1, sidecar_fingerprint="", now=None)
    assert row["training_tags"].count("smile") == 1
    assert len(row["training_tags"]) == len(set(row["training_tags"]))
    assert len(row["trigger_words"]) == len(set(row["trigger_words"]))


@pytest.mark.parametrize(
    ("query", "source"),
    [("", "lora_core"), ("base:sdxl forest", "lora_core"), ("tag:ink", "lora_core"), ("utag:mine", "lora_core"),
     ("rating:>=4", "lora_view"), ("is:favorite", "lora_view"), ("sort:-rating", "lora_view"),
     ("has:tags", "lora_view")],
)  # fmt: skip
def test_queries_read_the_curation_join_only_when_they_need_it(query, source):
    assert compile_query(query).source == source


def test_restored_user_tags_are_stored_lower_case_and_distinct(tmp_path):
    """A backup edited by hand (or written before tags were normalised) cannot break facet counts."""
    lib = build_library(tmp_path / "lib", count=3, tiny=True, seed=6)
    with Catalog(tmp_path / "a.duckdb") as catalog:
        catalog.import_library([lib.root], progress=False)
        catalog.update(1, tags=["ink"])
        catalog.backup(tmp_path / "backup.json")
    doc = json.loads((tmp_path / "backup.json").read_text())
    doc["curation"][0]["user_tags"] = ["Ink", "ink", " INK ", "Wash"]
    (tmp_path / "backup.json").write_text(json.dumps(doc))
    with Catalog(tmp_path / "b.duckdb") as catalog:
        catalog.import_library([lib.root], progress=False)
        assert catalog.restore(tmp_path / "backup.json")["matched"] == 1
        [row] = catalog.search("utag:ink").to_list()
        assert row["user_tags"] == ["ink", "wash"]
        assert dict(catalog.facets("", fields=["user_tags"])["user_tags"]) == {"ink": 1, "wash": 1}
        assert catalog.facets("", fields=[]) == {}


def test_an_older_catalog_is_copied_aside_before_it_is_migrated(tmp_path):
    db = tmp_path / "catalog.duckdb"
    _version2_catalog(db)
    Catalog(db).close()
    [copy] = (tmp_path / "backups").glob("catalog-schema2-*.duckdb")
    conn = duckdb.connect(str(copy), read_only=True)
    try:
        assert conn.execute("SELECT max(version) FROM _lorabench_migrations").fetchone() == (2,)
        assert conn.execute("SELECT name, training_tags FROM loras").fetchall() == [("inkwash", ["ink", "wash", "ink"])]
    finally:
        conn.close()
    Catalog(db).close()  # already current: no second copy
    assert len(list((tmp_path / "backups").glob("*.duckdb"))) == 1
    for _ in range(4):
        backup_before_migration(str(db), 3)
    assert len(list((tmp_path / "backups").glob("catalog-schema*.duckdb"))) == 3  # the newest three are kept

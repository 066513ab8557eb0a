"""Checklist C 24/25: a nearly full disk fails cleanly; network, FUSE and sync folders are warned about."""

from __future__ import annotations

import shutil
import warnings
from collections import namedtuple
from pathlib import Path

import pytest

import lorabench.catalog._storage as storage
from lorabench.catalog import Catalog
from lorabench.errors import CatalogError, DiskFullError
from lorabench.samples import build_library

_Usage = namedtuple("_Usage", "total used free")


@pytest.fixture
def disk(monkeypatch):
    """Set the free space lorabench sees: ``disk["free"] = bytes`` (None = the real value)."""
    state: dict[str, int | None] = {"free": None}
    real = shutil.disk_usage

    def disk_usage(path):
        usage = real(path)
        return usage if state["free"] is None else _Usage(usage.total, usage.used, state["free"])

    monkeypatch.setattr(storage.shutil, "disk_usage", disk_usage)
    return state


def test_import_on_a_full_disk_fails_before_writing(tmp_path, disk):
    lib = build_library(tmp_path / "lib", count=5, tiny=True, seed=3)
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as catalog:
        catalog.import_library([lib.root], progress=False)
        before = catalog.stats()
    more = build_library(tmp_path / "lib" / "more", count=3, tiny=True, seed=4)
    assert more.files
    disk["free"] = 10 << 20
    with Catalog(db) as catalog:
        with pytest.raises(DiskFullError, match=r"to import into the catalog: 10 MiB free") as info:
            catalog.import_library([lib.root], progress=False)
        assert info.value.code == "disk_full" and "Free some disk space" in info.value.hint
        assert catalog.stats()["total"] == before["total"]
        assert [r["status"] for r in catalog.runs().to_list()] == ["completed"]  # no run was started
    disk["free"] = None
    with Catalog(db) as catalog:
        assert len(catalog.import_library([lib.root], progress=False).added) == 3


def test_checkpoint_on_a_full_disk_changes_nothing_and_keeps_the_wal(tmp_path, disk):
    lib = build_library(tmp_path / "lib", count=5, tiny=True, seed=3)
    db = tmp_path / "catalog.duckdb"
    catalog = Catalog(db)
    catalog.import_library([lib.root], progress=False)
    catalog.update(1, notes="kept in the WAL")
    before = db.read_bytes()
    disk["free"] = 1 << 20
    with pytest.raises(DiskFullError, match="to checkpoint the catalog"):
        catalog.checkpoint()
    assert db.read_bytes() == before
    assert Path(str(db) + ".wal").stat().st_size > 0
    assert not list(tmp_path.glob("*.pre-checkpoint*"))
    catalog.close()  # closing cannot fold the WAL in either: it logs, it does not raise
    assert Path(str(db) + ".wal").exists()
    disk["free"] = None
    with Catalog(db) as again:
        assert again.get(1)["notes"] == "kept in the WAL"
        assert again.checkpoint()  # with room again, the WAL is folded in
    assert not Path(str(db) + ".wal").exists()


@pytest.mark.parametrize(
    ("kind", "folder", "reason"),
    [("nfs4", "", "a network filesystem (nfs4)"), ("cifs", "", "a network filesystem (cifs)"),
     ("fuse.sshfs", "", "a network filesystem (fuse.sshfs)"),
     ("fuse.gocryptfs", "", "a FUSE filesystem (fuse.gocryptfs)"),
     ("ext4", "Dropbox/models", "a sync folder (dropbox)"),
     ("ext4", "OneDrive - Work", "a sync folder (onedrive - work)")],
)  # fmt: skip
def test_catalog_on_a_network_fuse_or_sync_folder_is_warned_about(tmp_path, monkeypatch, kind, folder, reason):
    monkeypatch.setattr(storage, "_mounts", lambda: [("/", "ext4"), (str(tmp_path), kind)])
    monkeypatch.setattr(storage, "_warned", set())
    db = tmp_path / folder / "catalog.duckdb"
    with pytest.warns(RuntimeWarning, match="keep it on a local disk") as caught:
        Catalog(db).close()
    assert reason in str(caught[0].message)
    with warnings.catch_warnings():  # once per catalog and process
        warnings.simplefilter("error")
        Catalog(db).close()


def test_local_catalog_is_not_warned_about(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_mounts", lambda: [("/", "ext4"), ("/mnt/nas", "nfs4"), ("/media/usb", "fuseblk")])
    monkeypatch.setattr(storage, "_warned", set())
    assert storage.filesystem_type("/mnt/nas/loras/catalog.duckdb") == "nfs4"
    assert storage.filesystem_type("/mnt/nasty/catalog.duckdb") == "ext4"  # a prefix of a name is not a parent
    assert storage.check_folder("/media/usb/catalog.duckdb") is None  # NTFS or exFAT through fuseblk: a local disk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Catalog(tmp_path / "catalog.duckdb").close()


def test_disk_full_is_a_catalog_error():
    assert issubclass(DiskFullError, CatalogError)

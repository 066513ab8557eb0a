"""Pre-checkpoint copies: what makes a checkpoint safe against ``kill -9``.

A DuckDB checkpoint rewrites live metadata blocks in place, and Linux lets a
fatal signal cut a large buffered ``pwrite`` short at a page boundary; a process
killed at that instant leaves a block whose checksum no longer matches
("Corrupt database file"), and the file never opens again. So before each
checkpoint the catalog file is copied to ``<catalog>.pre-checkpoint`` (synced,
then renamed into place), with a fingerprint of the WAL it goes with. An open
that finds the copy beside that same WAL puts it back: the copy plus the WAL
are exactly the committed state. Beside another WAL (or none) the copy is stale
and dropped: the checkpoint finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["backup_before_migration", "drop_guard", "restore_interrupted_checkpoint", "wal_size", "write_guard"]

logger = logging.getLogger("lorabench.catalog")

_GUARD = ".pre-checkpoint"
_WAL_PREFIX = 1 << 16


def wal_size(path: str) -> int:
    """Bytes in the catalog's write-ahead log (0 when there is none)."""
    try:
        return os.stat(path + ".wal").st_size
    except FileNotFoundError:
        return 0


def _wal_fingerprint(path: str, size: int) -> str:
    """What identifies a WAL: a hash of its first ``size`` bytes (at most 64 KiB; DuckDB's WAL header
    names the database and the checkpoint it follows). The WAL only grows during a checkpoint (DuckDB
    appends its checkpoint record first), so the recorded prefix stays the same."""
    with open(path + ".wal", "rb") as handle:
        return hashlib.sha256(handle.read(min(size, _WAL_PREFIX))).hexdigest()


def write_guard(path: str, wal: int) -> None:
    """Copy the catalog file aside before a checkpoint (``wal`` = the current WAL's size)."""
    guard = Path(path + _GUARD)
    partial = Path(path + _GUARD + ".tmp")
    shutil.copyfile(path, partial)
    _fsync(partial)
    _write_synced(Path(path + _GUARD + ".json"), json.dumps({"wal_size": wal, "wal": _wal_fingerprint(path, wal)}))
    os.replace(partial, guard)
    _fsync(guard.parent)


def drop_guard(path: str) -> None:
    """After a checkpoint has returned: the copy is no longer needed."""
    for suffix in (_GUARD, _GUARD + ".json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def restore_interrupted_checkpoint(path: str) -> bool:
    """Before opening: undo a checkpoint that a killed process left half-written; True if it did."""
    guard = Path(path + _GUARD)
    for leftover in (_GUARD + ".tmp", _GUARD + ".json.tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + leftover)
    if not guard.exists():
        return False
    wal = wal_size(path)
    try:
        record = json.loads(Path(path + _GUARD + ".json").read_text())
        recorded = int(record["wal_size"])
        same_wal = 0 < recorded <= wal and _wal_fingerprint(path, recorded) == record["wal"]
    except (OSError, ValueError, KeyError, TypeError):
        same_wal = False
    if not same_wal:
        drop_guard(path)
        return False
    os.replace(guard, path)
    _fsync(guard.parent)
    drop_guard(path)
    logger.warning("lorabench: a checkpoint of %s was interrupted; restored the file from its "
                   "pre-checkpoint copy (the WAL replays every commit since).", path)  # fmt: skip
    return True


def _write_synced(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


KEEP_MIGRATION_BACKUPS = 3


def backup_before_migration(path: str, version: int) -> Path:
    """Copy the catalog (and its WAL) to ``backups/`` beside it before migrations change its schema.

    The copy is what the catalog was at schema ``version``; the newest three are kept. Returns the
    copy's path.
    """
    folder = Path(path).parent / "backups"
    folder.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{Path(path).stem}-schema{version}-{stamp}{Path(path).suffix}"
    partial = target.with_name(target.name + ".tmp")
    shutil.copyfile(path, partial)
    _fsync(partial)
    if wal_size(path):
        shutil.copyfile(path + ".wal", str(target) + ".wal")
        _fsync(Path(str(target) + ".wal"))
    os.replace(partial, target)
    _fsync(folder)
    old = sorted(folder.glob(f"{Path(path).stem}-schema*{Path(path).suffix}"), key=lambda p: p.name)
    for stale in old[:-KEEP_MIGRATION_BACKUPS]:
        for leftover in (stale, Path(str(stale) + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    logger.info("lorabench: backed up %s (schema %d) to %s before migrating it", path, version, target)
    return target

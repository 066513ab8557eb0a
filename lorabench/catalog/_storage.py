"""Where the catalog file lives: free space before big writes, and folders DuckDB should not use.

security-reliability.md §3: unrecoverable opens cluster on low disk and on network or
sync folders (NFS, SMB, FUSE, Dropbox …), where file locks and fsync cannot be trusted.
lorabench fails cleanly before a write that would not fit (the catalog stays as it was)
and warns once per catalog about such folders.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

from lorabench.errors import DiskFullError

__all__ = ["check_folder", "ensure_free_space", "filesystem_type"]

logger = logging.getLogger("lorabench.catalog")

_NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "9p", "ceph", "glusterfs", "lustre",
                            "gpfs", "beegfs", "davfs", "webdav", "sshfs", "virtiofs"})  # fmt: skip
_SYNC_FOLDERS = ("dropbox", "onedrive", "google drive", "googledrive", "icloud", "icloud drive",
                 "mobile documents", "nextcloud", "owncloud", "box sync", "pcloud")  # fmt: skip
_warned: set[str] = set()


def ensure_free_space(path: str, needed: int, what: str) -> None:
    """Raise :class:`DiskFullError` unless the folder of ``path`` has ``needed`` bytes free."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # cannot tell: let the write itself report
        return
    if free < needed:
        raise DiskFullError(
            f"Not enough free disk space to {what}: {free / 2**20:.0f} MiB free in {folder}, "
            f"{needed / 2**20:.0f} MiB needed. The catalog was not changed"
        )


def _mounts() -> list[tuple[str, str]]:
    """``(mount point, filesystem type)`` from /proc/self/mounts (empty where there is none)."""
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding ``path`` (``ext4``, ``nfs4``, ``fuse.sshfs`` …), if known."""
    target = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    best: tuple[int, str] | None = None
    for point, kind in _mounts():
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), kind)
    return best[1] if best else None


def check_folder(path: str) -> str | None:
    """Warn (once per catalog and process) when the catalog sits on a network, FUSE or sync folder.

    Returns the reason, or ``None`` for an ordinary local disk.
    """
    kind = filesystem_type(path) or ""
    base = kind.split(".", 1)[0]
    if base in _NETWORK_TYPES or kind.split(".")[-1] in _NETWORK_TYPES:
        reason = f"a network filesystem ({kind})"
    elif base == "fuse":  # sshfs, rclone, gcsfuse …; not fuseblk (NTFS or exFAT on a local disk)
        reason = f"a FUSE filesystem ({kind})"
    else:
        parts = [p.lower() for p in Path(os.path.abspath(path)).parts]
        synced = next((p for p in parts if p in _SYNC_FOLDERS or p.startswith(("dropbox", "onedrive"))), None)
        reason = f"a sync folder ({synced})" if synced else None
    if reason and path not in _warned:
        _warned.add(path)
        message = (
            f"lorabench: the catalog {path} is on {reason}. DuckDB's file locks and fsync are not reliable "
            "there, and a catalog can be damaged beyond repair; keep it on a local disk (LORABENCH_CATALOG)."
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return reason

"""Walk library folders safely and cheaply.

One ``scandir`` pass per folder gives every LoRA's fingerprint (size, mtime,
inode) and the fingerprint of its sidecars and preview, so an unchanged
library costs a ``stat`` per file and nothing else. Directory symlinks are not
followed and file symlinks must stay inside a root (unless asked); loops and
the same file reached twice are detected by ``(device, inode)``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LORA_SUFFIXES", "PICKLE_SUFFIXES", "Found", "ScanResult", "scan"]

LORA_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_PARTIAL = (".part", ".tmp", ".crdownload", ".download", ".partial", ".aria2")
_SIDECAR_SUFFIXES = (
    ".civitai.info", ".metadata.json", ".cm-info.json", ".description.txt", ".json", ".txt", ".md",
    *(f".preview.{e}" for e in ("png", "jpg", "jpeg", "webp", "gif")),
    *(f".thumb.{e}" for e in ("png", "jpg", "jpeg", "webp")),
    ".png", ".jpg", ".jpeg", ".webp", ".gif",
)  # fmt: skip
_SIDECAR_SET = frozenset(_SIDECAR_SUFFIXES)


@dataclass(slots=True)
class Found:
    """A model file seen on disk."""

    path: str
    root: str
    folder: str
    name: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    kind: str  # "lora" | "pickle"
    sidecar_fingerprint: str = ""


class ScanResult:
    """What a walk found: files by path, skipped entries, and roots that could not be reached."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int, int, str]] = []
        """``(path, size, mtime_ns, inode, sidecar_fingerprint)`` per file, for a columnar diff."""
        self.skipped: list[tuple[str, str, str]] = []
        self.unreachable: list[str] = []
        self.folders = 0
        self._entries: dict[str, tuple[Any, ...]] = {}
        self.files: Mapping[str, Found] = _Files(self._entries)
        """Each file as a :class:`Found`, by path (made when asked for: a rescan needs few)."""


class _Files(Mapping[str, Found]):
    def __init__(self, entries: dict[str, tuple[Any, ...]]) -> None:
        self._entries = entries
        self._made: dict[str, Found] = {}

    def __getitem__(self, path: str) -> Found:
        found = self._made.get(path)
        if found is None:
            found = self._made[path] = Found(path, *self._entries[path])
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries


def _fingerprint(parts: list[tuple[str, int, int]]) -> str:
    if not parts:
        return ""
    text = ";".join(f"{s}:{size}:{mtime}" for s, size, mtime in sorted(parts))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def scan(
    roots: Sequence[str],
    scopes: Sequence[tuple[str, str]],
    *,
    follow_symlinks: bool = False,
    max_depth: int = 64,
    max_entries: int = 5_000_000,
) -> ScanResult:
    """Walk each ``(root, scope)`` folder and return what is there.

    ``roots`` are all known library roots (for the "stays inside a root" rule);
    ``scopes`` are the folders to walk, each with the root it belongs to.
    """
    result = ScanResult()
    seen_files: set[tuple[int, int]] = set()
    real_roots = [os.path.realpath(r) for r in roots]
    entries = 0
    for root, scope in scopes:
        try:
            st = os.stat(scope)
        except OSError:
            result.unreachable.append(scope)
            continue
        if not stat.S_ISDIR(st.st_mode):
            result.unreachable.append(scope)
            continue
        seen_dirs: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
        stack: list[tuple[str, int]] = [(scope, 0)]
        while stack:
            folder, depth = stack.pop()
            result.folders += 1
            try:
                with os.scandir(folder) as it:
                    listing = list(it)
            except OSError as exc:
                result.skipped.append((folder, "unreadable_folder", exc.strerror or str(exc)))
                continue
            entries += len(listing)
            if entries > max_entries:
                result.skipped.append((folder, "too_many_entries", f"stopped after {max_entries} entries"))
                return result
            models: list[tuple[os.DirEntry[str], str]] = []
            others: list[os.DirEntry[str]] = []
            for entry in listing:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if follow_symlinks:  # followed links may lead back here: remember every folder
                        try:
                            dst = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if (dst.st_dev, dst.st_ino) in seen_dirs:
                            continue
                        seen_dirs.add((dst.st_dev, dst.st_ino))
                    if depth < max_depth:
                        stack.append((entry.path, depth + 1))
                    continue
                if entry.is_symlink():
                    _symlink(entry, stack, depth, max_depth, real_roots, follow_symlinks, seen_dirs,
                             models, others, result)  # fmt: skip
                    continue
                low = name.lower()
                if low.endswith(_PARTIAL):
                    continue
                if low.endswith(LORA_SUFFIXES):
                    models.append((entry, "lora"))
                elif low.endswith(PICKLE_SUFFIXES):
                    models.append((entry, "pickle"))
                else:
                    others.append(entry)
            if models:
                _collect(models, others, root, folder, seen_files, result)
    return result


def _symlink(
    entry: os.DirEntry[str], stack: list[tuple[str, int]], depth: int, max_depth: int,
    real_roots: list[str], follow: bool, seen_dirs: set[tuple[int, int]],
    models: list[tuple[os.DirEntry[str], str]], others: list[os.DirEntry[str]], result: ScanResult,
) -> None:  # fmt: skip
    target = os.path.realpath(entry.path)
    try:
        st = os.stat(entry.path)
    except OSError:
        result.skipped.append((entry.path, "broken_link", "the link's target does not exist"))
        return
    if stat.S_ISDIR(st.st_mode):
        if not follow:
            result.skipped.append((entry.path, "linked_folder", "folder links are not followed"))
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            result.skipped.append((entry.path, "link_loop", f"already visited {target}"))
            return
        seen_dirs.add(key)
        if depth < max_depth:
            stack.append((entry.path, depth + 1))
        return
    if not follow and not _inside(target, real_roots):
        result.skipped.append((entry.path, "external_link", f"points outside the library: {target}"))
        return
    low = entry.name.lower()
    if low.endswith(LORA_SUFFIXES):
        models.append((entry, "lora"))
    elif low.endswith(PICKLE_SUFFIXES):
        models.append((entry, "pickle"))
    else:
        others.append(entry)


def _collect(
    models: list[tuple[os.DirEntry[str], str]], others: list[os.DirEntry[str]], root: str, folder: str,
    seen_files: set[tuple[int, int]], result: ScanResult,
) -> None:  # fmt: skip
    stems = {entry.name.rpartition(".")[0] for entry, _ in models}
    sidecars: dict[str, list[tuple[str, int, int]]] = {}
    for entry in others:
        name = entry.name
        if not name.lower().endswith(_SIDECAR_SUFFIXES):
            continue
        # The shortest stem that is a model's comes first, so "x.preview.png" is x's ".preview.png".
        i = name.find(".")
        while i > 0:
            stem = name[:i]
            if stem in stems and name[i:].lower() in _SIDECAR_SET:
                try:
                    st = entry.stat()
                except OSError:
                    break
                sidecars.setdefault(stem, []).append((name[i:].lower(), st.st_size, st.st_mtime_ns))
                break
            i = name.find(".", i + 1)
    rel = os.path.relpath(folder, root)
    rel = "" if rel == "." else rel
    entries, rows, skipped = result._entries, result.rows, result.skipped
    is_regular = stat.S_ISREG
    for entry, kind in models:
        try:
            st = entry.stat()
        except OSError:
            continue
        if not is_regular(st.st_mode):
            skipped.append((entry.path, "not_regular_file", "not a regular file"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_files:
            skipped.append((entry.path, "duplicate_path", "the same file was reached by another path"))
            continue
        seen_files.add(key)
        path = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
        stem = entry.name.rpartition(".")[0]
        parts = sidecars.get(stem)
        fingerprint = _fingerprint(parts) if parts else ""
        size, mtime_ns, inode = st.st_size, st.st_mtime_ns, st.st_ino
        entries[path] = (root, rel, stem, size, mtime_ns, inode, st.st_dev, kind, fingerprint)
        rows.append((path, size, mtime_ns, inode, fingerprint))

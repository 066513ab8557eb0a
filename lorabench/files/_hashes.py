"""File hashes used across the Stable Diffusion ecosystem, from one read pass.

- ``sha256``: the whole file (Civitai "SHA256").
- ``autov2``: the first 10 hex digits of ``sha256`` (A1111 "Model hash").
- ``tensor_sha256``: sha256 of everything after the ``8 + N`` header bytes
  (kohya / A1111 "addnet" hash); ``autov3`` is its first 12 hex digits.
- ``legacy``: 8 hex digits of sha256 over the 64 KiB at offset 0x100000
  (A1111's old model hash; files under 1 MiB give ``e3b0c442``).

Embedded hashes (``sshs_model_hash``, ``sshs_legacy_hash``,
``modelspec.hash_sha256``) are compared against these as hints, never trusted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lorabench.errors import FileReadError, UnstableFileError
from lorabench.files._header import open_regular

__all__ = ["CHUNK_SIZE", "FileHashes", "compare_hash_hints", "hash_file", "hash_files"]

CHUNK_SIZE = 4 * 1024 * 1024
_LEGACY_START, _LEGACY_END = 0x100000, 0x110000


@dataclass(frozen=True, slots=True)
class FileHashes:
    """All hashes of one file."""

    sha256: str
    tensor_sha256: str | None
    legacy: str
    size: int

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @property
    def autov3(self) -> str | None:
        return self.tensor_sha256[:12] if self.tensor_sha256 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "autov2": self.autov2,
            "autov3": self.autov3,
            "tensor_sha256": self.tensor_sha256,
            "legacy": self.legacy,
        }


def hash_file(path: str | os.PathLike[str], data_start: int | None = None) -> FileHashes:
    """Hash a file in one pass.

    Parameters
    ----------
    data_start:
        Where tensor data begins (``8 + N``); when ``None`` it is read from the
        file's first 8 bytes if they form a plausible safetensors length, else
        no tensor hash is computed.
    """
    p = os.fspath(path)
    fd, st = open_regular(p)
    try:
        if data_start is None:
            first = os.pread(fd, 8, 0)
            n = int.from_bytes(first, "little") if len(first) == 8 else -1
            data_start = 8 + n if n >= 0 and 8 + n <= st.st_size else None
        whole = hashlib.sha256()
        tensor = hashlib.sha256() if data_start is not None else None
        legacy = hashlib.sha256()
        offset = 0
        buf = bytearray(max(1, min(CHUNK_SIZE, st.st_size)))  # small files: no 4 MiB buffer to zero
        view = memoryview(buf)
        while True:
            got = os.readv(fd, [buf])
            if got == 0:
                break
            chunk = view[:got]
            whole.update(chunk)
            end = offset + got
            if tensor is not None and end > data_start:  # type: ignore[operator]
                tensor.update(chunk[max(0, data_start - offset) :])  # type: ignore[operator]
            if offset < _LEGACY_END and end > _LEGACY_START:
                legacy.update(chunk[max(0, _LEGACY_START - offset) : _LEGACY_END - offset])
            offset = end
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if offset != st.st_size or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise UnstableFileError(f"{p} changed while it was hashed", path=p, code="unstable")
    return FileHashes(
        sha256=whole.hexdigest(),
        tensor_sha256=tensor.hexdigest() if tensor is not None else None,
        legacy=legacy.hexdigest()[:8],
        size=offset,
    )


def hash_files(
    items: Iterable[tuple[str, int | None]],
    *,
    jobs: int | None = None,
    on_done: Callable[[str, int], None] | None = None,
) -> Iterator[tuple[str, FileHashes | FileReadError]]:
    """Hash many files on a thread pool (hashlib releases the GIL), yielding as they finish.

    ``items`` are ``(path, data_start)`` pairs. Errors are yielded, not raised.
    """
    workers = max(1, jobs or os.cpu_count() or 1)

    def work(item: tuple[str, int | None]) -> tuple[str, FileHashes | FileReadError]:
        path, start = item
        try:
            result: FileHashes | FileReadError = hash_file(path, start)
        except FileReadError as exc:
            result = exc
        if on_done is not None:
            on_done(path, result.size if isinstance(result, FileHashes) else 0)
        return path, result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lorabench-hash") as pool:
        yield from pool.map(work, items)


def _norm(value: str) -> str:
    return value.strip().lower().removeprefix("0x")


def compare_hash_hints(metadata: dict[str, str], hashes: FileHashes | None) -> dict[str, dict[str, Any]]:
    """Embedded hash claims, each with whether it matches what was computed.

    ``matches`` is ``None`` when nothing was computed to compare against.
    """
    hints: dict[str, dict[str, Any]] = {}
    targets = {
        "sshs_model_hash": hashes.tensor_sha256 if hashes else None,
        "modelspec.hash_sha256": hashes.tensor_sha256 if hashes else None,
        "sshs_legacy_hash": hashes.legacy if hashes else None,
    }
    for key, computed in targets.items():
        claimed = metadata.get(key)
        if not claimed:
            continue
        value = _norm(claimed)
        matches = None if computed is None else bool(value) and computed.startswith(value)
        hints[key] = {"value": claimed[:200], "matches": matches}
    return hints

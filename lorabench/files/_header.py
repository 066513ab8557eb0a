"""A strict, bounded reader for safetensors headers.

Reads only the 8-byte length and the JSON header with plain ``os.read`` calls
(never ``mmap``), refuses special files without opening them, and applies every
check of the reference implementation plus the strict ones it skips (leading
``{``, duplicate keys, NaN, a closed entry schema, caps on sizes and counts).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabench.errors import (
    FileReadError,
    FileTooLargeError,
    InvalidHeaderError,
    NotARegularFileError,
    UnsafeFormatError,
    UnstableFileError,
    UnsupportedFormatError,
)

__all__ = [
    "DEFAULT_HEADER_CAP",
    "DTYPE_BITS",
    "MAX_HEADER_CAP",
    "PICKLE_SUFFIXES",
    "HeaderLimits",
    "SafetensorsHeader",
    "TensorInfo",
    "open_regular",
    "read_header",
    "sniff_pickle",
]

#: The reference implementation's hard limit (``MAX_HEADER_SIZE``).
MAX_HEADER_CAP = 100_000_000
#: lorabench's default cap on the JSON header; headers with inline thumbnails reach MBs.
DEFAULT_HEADER_CAP = 16 * 1024 * 1024

#: Bits per element of every dtype the safetensors format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}  # fmt: skip

_U64_MAX = 2**64 - 1
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_MAX_SCALARS = 16
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Caps applied while reading a header.

    Attributes
    ----------
    max_header_bytes:
        Largest JSON header accepted (default 16 MiB, at most 100 MB).
    max_tensors:
        Largest number of tensor entries.
    max_metadata_bytes:
        Largest total size of ``__metadata__`` keys and values.
    max_rank:
        Largest number of dimensions of one tensor.
    """

    max_header_bytes: int = DEFAULT_HEADER_CAP
    max_tensors: int = 100_000
    max_metadata_bytes: int = DEFAULT_HEADER_CAP
    max_rank: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.max_header_bytes <= MAX_HEADER_CAP:
            raise ValueError(f"max_header_bytes must be in 1..{MAX_HEADER_CAP}")


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor entry of a header (offsets relative to the data start)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    """The validated facts of a safetensors header."""

    path: str
    size: int
    header_len: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    dev: int = 0
    ino: int = 0
    mtime_ns: int = 0
    values: dict[str, float] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        """Offset of the tensor data region (``8 + N``)."""
        return 8 + self.header_len


def _fail(cls: type[FileReadError], code: str, message: str, path: str) -> FileReadError:
    return cls(message, path=path, code=code)


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only if and only if it is a regular file.

    The file is checked with ``lstat`` before it is opened, so FIFOs, sockets and
    devices are never opened (and cannot block); it is then opened with
    ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` must show the same file.
    """
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise _fail(NotARegularFileError, "not_found", f"No such file: {p}", p) from None
    except OSError as exc:
        raise _fail(NotARegularFileError, "unreadable", f"Cannot stat {p}: {exc.strerror}", p) from exc
    if not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        raise _fail(NotARegularFileError, "not_regular_file", f"{p} is a {kind}, not a regular file", p)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise _fail(UnstableFileError, "unreadable", f"Cannot open {p}: {exc.strerror}", p) from exc
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise _fail(UnstableFileError, "unstable", f"{p} was replaced while it was opened", p)
    return fd, fst


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _read_exact(fd: int, count: int, path: str) -> bytes:
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise _fail(UnstableFileError, "truncated", f"{path} ended while its header was read", path)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def sniff_pickle(first_bytes: bytes) -> str | None:
    """Name the pickle container ``first_bytes`` start, or ``None``.

    ``PK\\x03\\x04`` is a torch zip archive holding ``data.pkl``; ``\\x80`` is the
    PROTO opcode that starts every pickle of protocol 2 or later.
    """
    if first_bytes.startswith(b"PK\x03\x04"):
        return "torch zip archive (pickle inside)"
    if first_bytes[:1] == b"\x80" and len(first_bytes) > 1 and 2 <= first_bytes[1] <= 5:
        return "pickle"
    return None


def read_header(
    path: str | os.PathLike[str],
    *,
    limits: HeaderLimits | None = None,
    follow_symlinks: bool = True,
    scalars: Callable[[dict[str, TensorInfo], dict[str, str]], list[str]] | None = None,
) -> SafetensorsHeader:
    """Read and strictly validate the header of a safetensors file.

    Parameters
    ----------
    path:
        The file. With ``follow_symlinks`` a symbolic link is resolved first; the
        target must still be a regular file.
    limits:
        Caps (header size, tensor count, metadata size); see :class:`HeaderLimits`.
    scalars:
        Optional chooser of a few 0-d float tensors (such as one ``alpha``) whose
        values are read with bounded ``pread`` calls into ``header.values``.

    Raises
    ------
    NotARegularFileError, FileTooLargeError, InvalidHeaderError,
    UnsafeFormatError, UnsupportedFormatError, UnstableFileError
        Each with a stable ``code``; nothing else escapes.
    """
    lim = limits or HeaderLimits()
    p = os.fspath(path)
    if follow_symlinks and Path(p).is_symlink():
        p = os.path.realpath(p)
    fd, st = open_regular(p)
    try:
        head = os.read(fd, 8)
        try:
            header = _parse(fd, head, st, p, lim, scalars)
        except (InvalidHeaderError, UnsupportedFormatError) as exc:
            if Path(p).suffix.lower() in PICKLE_SUFFIXES:
                msg = f"{p} is a pickle-based {Path(p).suffix} file; it was not loaded"
                raise _fail(UnsafeFormatError, "unsafe_format", msg, p) from exc
            raise
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise _fail(UnstableFileError, "unstable", f"{p} changed while it was read", p)
    return header


def _parse(
    fd: int,
    head: bytes,
    st: os.stat_result,
    p: str,
    lim: HeaderLimits,
    scalars: Callable[[dict[str, TensorInfo], dict[str, str]], list[str]] | None,
) -> SafetensorsHeader:
    size = st.st_size
    kind = sniff_pickle(head)
    if kind is not None:
        raise _fail(UnsafeFormatError, "unsafe_format", f"{p} is a {kind}; it was not loaded", p)
    if len(head) < 8:
        if size >= 8:
            raise _fail(UnstableFileError, "truncated", f"{p} shrank while it was read", p)
        raise _fail(InvalidHeaderError, "header_too_small", f"{p} has {size} bytes, fewer than 8", p)
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_CAP:
        code, msg = "header_too_large", f"{p} declares a {n}-byte header (format limit 100 MB)"
        if Path(p).suffix.lower() in PICKLE_SUFFIXES:
            raise _fail(UnsupportedFormatError, "unsupported_format", f"{p} is not safetensors", p)
        raise _fail(InvalidHeaderError, code, msg, p)
    if 8 + n > size:
        msg = f"{p} declares a {n}-byte header but has only {size} bytes"
        raise _fail(InvalidHeaderError, "invalid_header_length", msg, p)
    if n > lim.max_header_bytes:
        msg = f"{p} has a {n}-byte header, over the {lim.max_header_bytes}-byte cap"
        raise _fail(FileTooLargeError, "header_too_large", msg, p)
    raw = _read_exact(fd, n, p)
    doc = _decode_json(raw, p)
    metadata, tensors = _validate(doc, p, lim)
    _check_layout(tensors, n, size, p)
    values: dict[str, float] = {}
    if scalars is not None:
        for name in scalars(tensors, metadata)[:_MAX_SCALARS]:
            info = tensors.get(name)
            if info is not None and info.shape in ((), (1,)) and info.dtype in _SCALAR_DTYPES:
                values[name] = _read_scalar(fd, info, 8 + n, p)
    return SafetensorsHeader(
        path=p, size=size, header_len=n, metadata=metadata, tensors=tensors,
        dev=st.st_dev, ino=st.st_ino, mtime_ns=st.st_mtime_ns, values=values,
    )  # fmt: skip


_SCALAR_FORMATS = {"F16": "<e", "F32": "<f", "F64": "<d"}
_SCALAR_DTYPES = frozenset({*_SCALAR_FORMATS, "BF16"})


def _read_scalar(fd: int, info: TensorInfo, data_start: int, p: str) -> float:
    """Read one 0-d float tensor with a bounded ``pread``."""
    raw = os.pread(fd, info.nbytes, data_start + info.begin)
    if len(raw) != info.nbytes:
        raise _fail(UnstableFileError, "truncated", f"{p} ended while a value was read", p)
    if info.dtype == "BF16":
        return float(struct.unpack("<f", b"\0\0" + raw)[0])
    return float(struct.unpack(_SCALAR_FORMATS[info.dtype], raw)[0])


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _decode_json(raw: bytes, p: str) -> Any:
    if raw[:1] != b"{":
        raise _fail(InvalidHeaderError, "header_not_object", f"{p}: header does not start with '{{'", p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(InvalidHeaderError, "header_not_utf8", f"{p}: header is not valid UTF-8", p) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise _fail(InvalidHeaderError, "duplicate_key", f"{p}: header repeats key {exc}", p) from None
    except RecursionError:
        raise _fail(InvalidHeaderError, "nesting_too_deep", f"{p}: header nests too deeply", p) from None
    except ValueError as exc:
        msg = f"{p}: header is not valid JSON ({str(exc)[:120]})"
        raise _fail(InvalidHeaderError, "header_not_json", msg, p) from None


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _U64_MAX


def _validate(doc: Any, p: str, lim: HeaderLimits) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    if not isinstance(doc, dict):
        raise _fail(InvalidHeaderError, "header_not_object", f"{p}: header is not a JSON object", p)
    metadata: dict[str, str] = {}
    raw_meta = doc.get("__metadata__")
    if raw_meta is not None or "__metadata__" in doc:
        if not isinstance(raw_meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
        ):
            msg = f"{p}: __metadata__ must map strings to strings"
            raise _fail(InvalidHeaderError, "bad_metadata", msg, p)
        total = sum(len(k) + len(v) for k, v in raw_meta.items())
        if total > lim.max_metadata_bytes:
            msg = f"{p}: metadata holds {total} characters, over the {lim.max_metadata_bytes} cap"
            raise _fail(FileTooLargeError, "metadata_too_large", msg, p)
        metadata = raw_meta
    count = len(doc) - ("__metadata__" in doc)
    if count > lim.max_tensors:
        msg = f"{p}: header lists {count} tensors, over the {lim.max_tensors} cap"
        raise _fail(FileTooLargeError, "too_many_tensors", msg, p)
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        tensors[name] = _entry(name, entry, p, lim)
    return metadata, tensors


def _entry(name: str, entry: Any, p: str, lim: HeaderLimits) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        msg = f"{p}: tensor {name!r} must have exactly dtype, shape and data_offsets"
        raise _fail(InvalidHeaderError, "bad_tensor_entry", msg, p)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _fail(InvalidHeaderError, "unknown_dtype", f"{p}: tensor {name!r} has dtype {dtype!r}", p)
    if (
        not isinstance(shape, list)
        or len(shape) > lim.max_rank
        or not all(_is_uint(d) for d in shape)
    ):
        raise _fail(InvalidHeaderError, "bad_tensor_entry", f"{p}: tensor {name!r} has a bad shape", p)
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
        msg = f"{p}: tensor {name!r} has bad data_offsets"
        raise _fail(InvalidHeaderError, "bad_tensor_entry", msg, p)
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(tensors: dict[str, TensorInfo], n: int, size: int, p: str) -> None:
    end = 0
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != end or info.end < info.begin:
            msg = f"{p}: tensor {info.name!r} leaves a gap or overlaps (offsets {info.begin}..{info.end})"
            raise _fail(InvalidHeaderError, "invalid_offset", msg, p)
        elements = 1
        for dim in info.shape:
            elements *= dim
        bits = elements * DTYPE_BITS[info.dtype]
        if bits > _U64_MAX:
            msg = f"{p}: tensor {info.name!r} size overflows"
            raise _fail(InvalidHeaderError, "size_overflow", msg, p)
        if bits % 8:
            msg = f"{p}: tensor {info.name!r} does not fill whole bytes"
            raise _fail(InvalidHeaderError, "misaligned_slice", msg, p)
        if info.end - info.begin != bits // 8:
            msg = (
                f"{p}: tensor {info.name!r} spans {info.end - info.begin} bytes but "
                f"{info.dtype}{list(info.shape)} needs {bits // 8}"
            )
            raise _fail(InvalidHeaderError, "tensor_size_mismatch", msg, p)
        end = info.end
    if end + 8 + n != size:
        how = "is truncated" if end + 8 + n > size else "has trailing bytes"
        msg = f"{p} {how}: data ends at {end + 8 + n}, file has {size} bytes"
        raise _fail(InvalidHeaderError, "incomplete_buffer", msg, p)

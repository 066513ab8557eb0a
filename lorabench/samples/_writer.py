"""A small, dependency-light safetensors writer that matches the reference writer.

The reference (``safetensors/src/tensor.rs`` ``prepare``) sorts tensors by dtype
descending in its enum order, then by name; writes ``__metadata__`` first as compact
JSON; makes ``data_offsets`` relative to the start of the data buffer, contiguous
from 0; and pads the header with spaces to a multiple of 8.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "DTYPE_SIZES",
    "TensorSpec",
    "encode_header",
    "legacy_hash",
    "lycoris_hash",
    "random_tensor_bytes",
    "scalar_bytes",
    "serialize",
    "tensor_nbytes",
    "tensor_region",
    "write_safetensors",
]

#: ``(dtype, shape, data)``; ``data=None`` means deterministic pseudo-random bytes.
TensorSpec = tuple[str, tuple[int, ...], bytes | None]

# safetensors' Dtype enum order (tensor.rs); the writer sorts by this, descending.
_DTYPE_ORDER = (
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
    "F64", "I64", "U64",
)  # fmt: skip
_DTYPE_RANK = {name: i for i, name in enumerate(_DTYPE_ORDER)}

#: Bytes per element of every whole-byte dtype this writer supports.
DTYPE_SIZES: Mapping[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip

_LEGACY_START = 0x100000
_LEGACY_LEN = 0x10000
_NP_INT = {"I8": "<i1", "U8": "<u1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
           "I64": "<i8", "U64": "<u8"}  # fmt: skip


def tensor_nbytes(dtype: str, shape: Iterable[int]) -> int:
    """Byte length of a tensor of ``dtype`` and ``shape``."""
    try:
        size = DTYPE_SIZES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}") from None
    return size * math.prod(shape)


def _floats_to(values: np.ndarray, dtype: str) -> bytes:
    """Encode float32 ``values`` as little-endian ``dtype`` bytes."""
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    if dtype == "BF16":
        bits = values.astype("<f4").view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype("<u2").tobytes()
    if dtype == "F64":
        return values.astype("<f8").tobytes()
    if dtype == "C64":
        pairs = np.stack([values, np.zeros_like(values)], axis=-1)
        return pairs.astype("<f4").tobytes()
    if dtype == "BOOL":
        return (values > 0).astype(np.uint8).tobytes()
    if dtype in _NP_INT:
        return np.round(values * 100).clip(0 if dtype[0] == "U" else -100, 100).astype(_NP_INT[dtype]).tobytes()
    if dtype.startswith("F8_"):
        # small finite codes only: sign bit + exponent/mantissa below the NaN/inf range
        codes = (np.abs(values) * 2000).astype(np.int64).clip(0, 0x3F)
        codes |= (values < 0).astype(np.int64) << 7
        return codes.astype(np.uint8).tobytes()
    raise ValueError(f"unsupported dtype {dtype!r}")


def scalar_bytes(dtype: str, value: float) -> bytes:
    """The bytes of a 0-d tensor holding ``value`` in ``dtype`` (alpha, on_input, …)."""
    if dtype in _NP_INT:
        return np.array([int(value)], dtype=_NP_INT[dtype]).tobytes()
    if dtype == "BOOL":
        return b"\x01" if value else b"\x00"
    return _floats_to(np.array([value], dtype=np.float32), dtype)


def _seed_for(name: str, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def random_tensor_bytes(name: str, dtype: str, shape: tuple[int, ...], seed: int = 0) -> bytes:
    """Deterministic, finite, small-valued pseudo-random tensor data seeded from ``name``."""
    count = math.prod(shape)
    if count == 0:
        return b""
    rng = np.random.default_rng(_seed_for(name, seed))
    values = rng.standard_normal(count, dtype=np.float32) * np.float32(0.02)
    return _floats_to(values, dtype)


def _resolved(name: str, spec: TensorSpec) -> bytes:
    dtype, shape, data = spec
    expected = tensor_nbytes(dtype, shape)
    if data is None:
        return random_tensor_bytes(name, dtype, tuple(shape))
    if len(data) != expected:
        raise ValueError(f"tensor {name!r}: {len(data)} bytes given, {expected} expected")
    return data


def _sorted_names(tensors: Mapping[str, TensorSpec]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        dtype = tensors[name][0]
        if dtype not in _DTYPE_RANK:
            raise ValueError(f"unsupported dtype {dtype!r}")
        return (-_DTYPE_RANK[dtype], name)

    return sorted(tensors, key=key)


def _entries_json(tensors: Mapping[str, TensorSpec], names: list[str]) -> str:
    parts = []
    offset = 0
    for name in names:
        dtype, shape, _ = tensors[name]
        end = offset + tensor_nbytes(dtype, shape)
        info = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
        parts.append(_dumps(name) + ":" + _dumps(info))
        offset = end
    return ",".join(parts)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_header(metadata: Mapping[str, str] | None, entries_json: str) -> bytes:
    """``u64 N`` + the padded JSON header, given the pre-rendered tensor entries."""
    body = ""
    if metadata is not None:
        body = '"__metadata__":' + _dumps(dict(metadata))
        if entries_json:
            body += ","
    raw = ("{" + body + entries_json + "}").encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _check_metadata(metadata: Mapping[str, str] | None) -> None:
    if metadata is None:
        return
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str; got {key!r}: {type(value).__name__}")


def tensor_region(tensors: Mapping[str, TensorSpec]) -> bytes:
    """The data buffer exactly as it follows the header (writer order)."""
    return b"".join(_resolved(name, tensors[name]) for name in _sorted_names(tensors))


def serialize(tensors: Mapping[str, TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The complete bytes of a safetensors file."""
    _check_metadata(metadata)
    names = _sorted_names(tensors)
    header = encode_header(metadata, _entries_json(tensors, names))
    return header + b"".join(_resolved(name, tensors[name]) for name in names)


def legacy_hash(file_bytes: bytes) -> str:
    """sd-webui-additional-networks' legacy hash: sha256 of 64 KiB at 1 MiB, 8 hex."""
    window = file_bytes[_LEGACY_START : _LEGACY_START + _LEGACY_LEN]
    return hashlib.sha256(window).hexdigest()[:8]


def lycoris_hash(tensors: Mapping[str, TensorSpec]) -> str:
    """LyCORIS' ``sshs_model_hash``: ``0x`` + sha256 of raw tensor bytes in insertion order."""
    digest = hashlib.sha256()
    for name, spec in tensors.items():
        digest.update(_resolved(name, spec))
    return "0x" + digest.hexdigest()


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, TensorSpec],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a valid safetensors file atomically (temporary file, then rename).

    ``tensors`` maps names to ``(dtype, shape, data)``; ``data=None`` fills the tensor
    with deterministic pseudo-random values seeded from its name.
    """
    target = Path(path)
    payload = serialize(tensors, metadata)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

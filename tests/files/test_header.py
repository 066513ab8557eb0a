"""The strict header reader against valid, malformed and hostile files."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from lorabench.errors import (
    FileTooLargeError,
    InvalidHeaderError,
    NotARegularFileError,
    UnsafeFormatError,
    UnstableFileError,
)
from lorabench.files import HeaderLimits, read_header
from lorabench.files import _header as header_module


def write_st(path: Path, header: dict | bytes, data: bytes = b"", *, pad: bool = True) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def lora_header(rank: int = 4) -> tuple[dict, bytes]:
    """A two-module kohya header (F16) with alpha scalars, and its data."""
    down = rank * 768 * 2
    up = 320 * rank * 2
    entries = {}
    offset = 0
    for mod in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj"):  # fmt: skip
        for param, shape, size in (("alpha", [], 2), ("lora_down.weight", [rank, 768], down),
                                   ("lora_up.weight", [320, rank], up)):  # fmt: skip
            entries[f"{mod}.{param}"] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
    header = {"__metadata__": {"ss_network_dim": str(rank), "ss_network_alpha": "None"}, **entries}
    alpha = struct.pack("<e", 2.0)
    data = bytearray(offset)
    for entry in entries.values():
        if entry["shape"] == []:
            data[entry["data_offsets"][0] : entry["data_offsets"][1]] = alpha
    return header, bytes(data)


def test_valid_file_matches_reference(tmp_path):
    header, data = lora_header()
    path = write_st(tmp_path / "ok.safetensors", header, data)
    result = read_header(path)
    with safe_open(str(path), "np") as ref:
        assert sorted(ref.keys()) == sorted(result.tensors)
        for key in ref.keys():  # noqa: SIM118 (safe_open is not iterable)
            assert list(ref.get_slice(key).get_shape()) == list(result.tensors[key].shape)
        assert ref.metadata() == result.metadata
    assert result.size == path.stat().st_size
    assert result.data_start == 8 + result.header_len


def test_reads_alpha_scalar_with_bounded_pread(tmp_path):
    header, data = lora_header()
    path = write_st(tmp_path / "a.safetensors", header, data)
    name = next(k for k in header if k.endswith(".alpha"))
    result = read_header(path, scalars=lambda tensors, meta: [name])
    assert result.values == {name: 2.0}


def _entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# (case id, header (dict or raw bytes), data, expected error class, expected code, reference rejects it)
MALFORMED = [
    ("n_2_63", None, b"", InvalidHeaderError, "header_too_large", True),
    ("n_beyond_size", None, b"", InvalidHeaderError, "invalid_header_length", True),
    ("not_json", b"{this is not json}", b"", InvalidHeaderError, "header_not_json", True),
    ("not_utf8", b'{"a\xff":1}', b"", InvalidHeaderError, "header_not_utf8", True),
    ("array", b"[1,2,3]", b"", InvalidHeaderError, "header_not_object", True),
    ("leading_space", b'  {"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8,
     InvalidHeaderError, "header_not_object", False),
    ("nan", b'{"__metadata__":{"a":"b"},"t":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}',
     b"\0" * 8, InvalidHeaderError, "header_not_json", True),
    ("deep", b"{" + b'"a":[' * 1 + b"[" * 100_000 + b"]" * 100_000 + b"]}", b"",
     InvalidHeaderError, "nesting_too_deep", True),
    ("metadata_not_str", {"__metadata__": {"ss_network_dim": 4}, "t": _entry()}, b"\0" * 8,
     InvalidHeaderError, "bad_metadata", True),
    ("metadata_not_map", {"__metadata__": ["x"], "t": _entry()}, b"\0" * 8,
     InvalidHeaderError, "bad_metadata", True),
    ("overlap", {"a": _entry(), "b": _entry(begin=4, end=12)}, b"\0" * 12,
     InvalidHeaderError, "invalid_offset", True),
    ("hole", {"a": _entry(), "b": _entry(begin=12, end=20)}, b"\0" * 20,
     InvalidHeaderError, "invalid_offset", True),
    ("end_before_begin", {"a": _entry(begin=8, end=0)}, b"\0" * 8, InvalidHeaderError, "invalid_offset", True),
    ("overflow", {"a": _entry(shape=(2**62, 2**62), end=8)}, b"\0" * 8,
     InvalidHeaderError, "size_overflow", True),
    ("size_mismatch", {"a": _entry(shape=(3,), end=8)}, b"\0" * 8,
     InvalidHeaderError, "tensor_size_mismatch", True),
    ("bad_dtype", {"a": _entry(dtype="F128")}, b"\0" * 8, InvalidHeaderError, "unknown_dtype", True),
    ("misaligned", {"a": _entry(dtype="F4", shape=(3,), end=2)}, b"\0" * 2,
     InvalidHeaderError, "misaligned_slice", True),
    ("negative_shape", {"a": _entry(shape=(-2,))}, b"\0" * 8, InvalidHeaderError, "bad_tensor_entry", True),
    ("bool_shape", {"a": _entry(shape=(True, 2))}, b"\0" * 8, InvalidHeaderError, "bad_tensor_entry", True),
    ("extra_key", {"a": {**_entry(), "evil": 1}}, b"\0" * 8, InvalidHeaderError, "bad_tensor_entry", False),
    ("missing_key", {"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8,
     InvalidHeaderError, "bad_tensor_entry", True),
    ("empty", b"", b"", InvalidHeaderError, "header_too_small", True),
    ("truncated", {"a": _entry(end=8)}, b"\0" * 5, InvalidHeaderError, "incomplete_buffer", True),
    ("trailing", {"a": _entry(end=8)}, b"\0" * 12, InvalidHeaderError, "incomplete_buffer", True),
    ("duplicate", b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
     b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8,
     InvalidHeaderError, "duplicate_key", False),
    ("duplicate_metadata", b'{"__metadata__":{"k":"1","k":"2"}}', b"", InvalidHeaderError, "duplicate_key", False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "header", "data", "cls", "code", "ref_rejects"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])  # fmt: skip
def test_malformed_headers_give_exact_codes(tmp_path, case, header, data, cls, code, ref_rejects):
    path = tmp_path / f"{case}.safetensors"
    if case == "n_2_63":
        path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    elif case == "n_beyond_size":
        path.write_bytes(struct.pack("<Q", 4096) + b'{"a": 1}')
    elif case == "empty":
        path.write_bytes(b"")
    else:
        write_st(path, header, data, pad=case not in ("leading_space",))
    started = time.perf_counter()
    with pytest.raises(cls) as info:
        read_header(path)
    assert time.perf_counter() - started < 1.0
    assert info.value.code == code
    assert "\n" not in str(info.value)
    assert info.value.path == str(path)
    if ref_rejects:
        with pytest.raises(Exception), safe_open(str(path), "np"):  # noqa: B017, PT011
            pass
    elif case != "duplicate_metadata":
        with safe_open(str(path), "np"):  # the reference accepts what we refuse
            pass


def test_empty_header_with_no_tensors_is_valid(tmp_path):
    path = write_st(tmp_path / "empty.safetensors", {})
    result = read_header(path)
    assert result.tensors == {}
    assert result.metadata == {}


def test_huge_header_rejected_by_cap_without_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    n = 59 * 1024 * 1024
    with path.open("wb") as f:
        f.write(struct.pack("<Q", n) + b"{")
        f.truncate(8 + n)
    started = time.perf_counter()
    with pytest.raises(FileTooLargeError) as info:
        read_header(path)
    assert info.value.code == "header_too_large"
    assert time.perf_counter() - started < 0.5


def test_tensor_count_cap(tmp_path):
    count = 2_000
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)}
    path = write_st(tmp_path / "many.safetensors", header)
    assert len(read_header(path).tensors) == count
    with pytest.raises(FileTooLargeError) as info:
        read_header(path, limits=HeaderLimits(max_tensors=1_000))
    assert info.value.code == "too_many_tensors"


def test_million_tensor_header_rejected_fast_with_low_memory(tmp_path):
    """The 1M zero-size-tensor header (≈59 MB) that costs safe_open 935 MB is refused by the cap."""
    path = tmp_path / "million.safetensors"
    entry = '"t%07d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    body = ("{" + ",".join(entry % i for i in range(1_000_000)) + "}").encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    code = (
        "import sys, time; from lorabench.files import read_header\n"
        "t = time.perf_counter()\n"
        "try:\n    read_header(sys.argv[1])\nexcept Exception as e:\n    print(e.code)\n"
        "print(time.perf_counter() - t)\n"
        "print(next(x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    err_code, seconds, rss_kb = out.stdout.split()
    assert err_code == "header_too_large"
    assert float(seconds) < 1.0
    assert int(rss_kb) < 200 * 1024


def test_metadata_size_cap(tmp_path):
    path = write_st(tmp_path / "meta.safetensors", {"__metadata__": {"x": "a" * 5000}})
    with pytest.raises(FileTooLargeError) as info:
        read_header(path, limits=HeaderLimits(max_metadata_bytes=1000))
    assert info.value.code == "metadata_too_large"


def test_header_cap_is_configurable_and_bounded():
    with pytest.raises(ValueError, match="max_header_bytes"):
        HeaderLimits(max_header_bytes=200_000_000)


def _no_block(fn, timeout: float = 2.0):
    box: dict = {}

    def target():
        try:
            fn()
        except Exception as exc:
            box["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "reader blocked on a special file"
    return box.get("exc")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    exc = _no_block(lambda: read_header(fifo))
    assert isinstance(exc, NotARegularFileError)
    assert exc.code == "not_regular_file"


def test_socket_and_device_are_refused(tmp_path):
    sock_path = tmp_path / "sock.safetensors"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        exc = _no_block(lambda: read_header(sock_path))
    assert isinstance(exc, NotARegularFileError)
    dev = tmp_path / "dev.safetensors"
    dev.symlink_to("/dev/zero")
    exc = _no_block(lambda: read_header(dev))
    assert isinstance(exc, NotARegularFileError)
    assert "device" in exc.message
    with pytest.raises(NotARegularFileError):
        read_header(dev, follow_symlinks=False)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(NotARegularFileError) as info:
        read_header(tmp_path)
    assert "directory" in info.value.message
    with pytest.raises(NotARegularFileError) as info:
        read_header(tmp_path / "nope.safetensors")
    assert info.value.code == "not_found"


def test_file_truncated_while_read_is_an_error_not_a_crash(tmp_path, monkeypatch):
    header, data = lora_header()
    path = write_st(tmp_path / "shrink.safetensors", header, data)
    real_read = os.read
    calls = {"n": 0}

    def truncating_read(fd, count):
        calls["n"] += 1
        if calls["n"] == 2:  # after the 8-byte length, before the JSON
            os.truncate(path, 20)
        return real_read(fd, count)

    monkeypatch.setattr(header_module.os, "read", truncating_read)
    with pytest.raises(UnstableFileError) as info:
        read_header(path)
    assert info.value.code in ("truncated", "unstable")


def test_file_modified_while_read_is_unstable(tmp_path, monkeypatch):
    header, data = lora_header()
    path = write_st(tmp_path / "grow.safetensors", header, data)
    real_read = os.read

    def appending_read(fd, count):
        out = real_read(fd, count)
        if count > 8:
            with path.open("ab") as f:
                f.write(b"\0" * 16)
        return out

    monkeypatch.setattr(header_module.os, "read", appending_read)
    with pytest.raises((UnstableFileError, InvalidHeaderError)):
        read_header(path)


PICKLE_SCRIPT = r"""
import os, pickle, sys, zipfile
marker = sys.argv[1]
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + marker,))
payload = pickle.dumps({"state_dict": Evil()}, protocol=2)
open(sys.argv[2], "wb").write(payload)
open(sys.argv[3], "wb").write(payload)  # a pickle disguised as .safetensors
with zipfile.ZipFile(sys.argv[4], "w") as z:  # torch zip format
    z.writestr("archive/data.pkl", payload)
open(sys.argv[5], "wb").write(pickle.dumps(Evil(), protocol=0))  # protocol 0: no PROTO opcode
"""

CHECK_SCRIPT = r"""
import sys
from lorabench.files import inspect
codes = []
for p in sys.argv[1:]:
    try:
        inspect(p)
        codes.append("loaded")
    except Exception as e:
        codes.append(e.code)
print(",".join(codes))
print("torch" in sys.modules, "safetensors" in sys.modules, "pickle" in sys.modules)
"""


def test_pickles_are_never_loaded(tmp_path):
    marker = tmp_path / "PWNED"
    files = [tmp_path / n for n in ("a.ckpt", "b.safetensors", "c.pt", "d.bin")]
    subprocess.run([sys.executable, "-c", PICKLE_SCRIPT, str(marker), *map(str, files)], check=True)
    out = subprocess.run([sys.executable, "-c", CHECK_SCRIPT, *map(str, files)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    codes, modules = out.stdout.splitlines()
    assert codes == "unsafe_format,unsafe_format,unsafe_format,unsafe_format"
    assert modules == "False False False"
    assert not marker.exists()


def test_pickle_error_advises_conversion(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(UnsafeFormatError) as info:
        read_header(path)
    assert "safetensors" in info.value.hint
    assert "never loads" in info.value.hint

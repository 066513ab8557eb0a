"""Benchmark the file reader: header-only inspection rate and hashing throughput.

Prints one JSON line. Hashing is reported as ratios against ``sha256sum`` over the
same (page-cached) bytes in the same run; never as absolute timing goals.

lorabench computes two SHA-256 digests per file (whole file and tensor region)
in one read pass; ``file_ratio_*`` compares file bytes per second (what a user
waits for), ``digest_ratio_per_core`` counts digested bytes (two per file byte).
Goal: ``file_ratio_per_core`` ≥ 0.9.

Usage: python benchmarks/bench_files.py [--files 3000] [--hash-mb 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from lorabench.files import hash_file, hash_files, inspect
from lorabench.samples import build_library


def _big_file(path: Path, nbytes: int) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        block = os.urandom(1 << 20)
        for _ in range(nbytes >> 20):
            f.write(block)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--hash-mb", type=int, default=256)
    parser.add_argument("--hash-files", type=int, default=8)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="lorabench-bench-"))
    try:
        lib = build_library(tmp / "lib", count=args.files, tiny=True, seed=1)
        paths = [str(f.path) for f in lib.files if str(f.path).endswith(".safetensors")]
        for p in paths:  # warm the page cache; measure the reader, not the disk
            Path(p).read_bytes()
        header_s = _time(lambda: [inspect(p, sidecars=False) for p in paths])
        full_s = _time(lambda: [inspect(p) for p in paths])

        per_file = (args.hash_mb << 20) // args.hash_files
        big = [tmp / f"big{i}.safetensors" for i in range(args.hash_files)]
        for p in big:
            _big_file(p, per_file)
        total = sum(p.stat().st_size for p in big)
        names = [str(p) for p in big]
        subprocess.run(["sha256sum", *names], check=True, capture_output=True)  # warm
        ref_1 = _time(lambda: subprocess.run(["sha256sum", *names], check=True, capture_output=True))
        ours_1 = _time(lambda: [hash_file(p) for p in names])
        ref_n = _time(lambda: subprocess.run(
            ["xargs", "-P", str(cores), "-n", "1", "sha256sum"], input="\n".join(names).encode(),
            check=True, capture_output=True))  # fmt: skip
        ours_n = _time(lambda: list(hash_files([(p, None) for p in names], jobs=cores)))
        result = {
            "bench": "files",
            "cores": cores,
            "library_files": len(paths),
            "header_only_files_per_s": round(len(paths) / header_s, 1),
            "with_sidecars_files_per_s": round(len(paths) / full_s, 1),
            "hash_bytes": total,
            "sha256sum_mb_per_s_1core": round(total / ref_1 / 1e6, 1),
            "lorabench_mb_per_s_1core": round(total / ours_1 / 1e6, 1),
            "file_ratio_per_core": round(ref_1 / ours_1, 3),
            "digest_ratio_per_core": round(2 * ref_1 / ours_1, 3),
            "sha256sum_mb_per_s_all_cores": round(total / ref_n / 1e6, 1),
            "lorabench_mb_per_s_all_cores": round(total / ours_n / 1e6, 1),
            "file_ratio_all_cores": round(ref_n / ours_n, 3),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark the importer: cold import of a generated library, hashing against sha256sum, no-change rescan.

Prints one JSON line:

- ``read_files_per_s``: a cold import with ``hashes=False`` (scan, header + sidecar reading, batched
  catalog writes) — the "header-only" read phase.
- ``hash_phase_*``: the same catalog imported again with hashes on: nothing to read, every file to
  hash, so this is the hash pass alone (hashing and writing the hashes to the catalog).
- ``full_files_per_s`` / ``full_s``: a cold import with hashing into a fresh catalog.
- hashing ratios against ``sha256sum`` over the same files in the same run, page cache warm for both
  (``xargs -P1`` vs ``hash_files(jobs=1)`` per core, ``xargs -P<cores>`` vs ``jobs=<cores>``).
  lorabench computes two SHA-256 digests per file in one pass (whole file + tensor region):
  ``*_file_ratio`` compares file bytes per second, ``*_digest_ratio`` digested bytes.
  ``import_hash_phase_ratio`` compares the importer's whole hash phase
  with all-core ``sha256sum``. Ratios > 1 mean faster than ``sha256sum``.
- ``rescan_*``: a no-change rescan of the imported library, run 3 times: min and median seconds and
  files/s, with the goal (≤ 0.3 s at 50,000 files) and a linear projection to 50,000 files.

Usage: python benchmarks/bench_import.py [--files 5000] (full size: --files 50000)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from _common import emit, environment, scratch, timed, warm_page_cache

from lorabench.catalog import Catalog
from lorabench.files import hash_files
from lorabench.samples import build_library

RESCAN_GOAL_S = 0.3
RESCAN_GOAL_FILES = 50_000


def _sha256sum(paths: list[str], procs: int) -> float:
    """Seconds for ``xargs -0 -P procs sha256sum`` over ``paths``."""
    per_call = max(1, min(256, len(paths) // procs + 1))
    data = b"\0".join(p.encode() for p in paths)
    cmd = ["xargs", "-0", "-P", str(procs), "-n", str(per_call), "sha256sum"]
    seconds, _ = timed(lambda: subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, check=True))
    return seconds


def _ours(paths: list[str], jobs: int) -> float:
    def run() -> None:
        for path, result in hash_files([(p, None) for p in paths], jobs=jobs):
            if isinstance(result, Exception):
                raise RuntimeError(f"{path}: {result}")

    seconds, _ = timed(run)
    return seconds


def _digest_bytes(paths: list[str]) -> int:
    """Bytes fed to SHA-256 by lorabench: the whole file plus the tensor region (legacy window aside)."""
    total = 0
    for path in paths:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            n = int.from_bytes(handle.read(8), "little")
        total += size + (size - 8 - n if 8 + n <= size else 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="library size (full size: 50000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rescans", type=int, default=3)
    parser.add_argument("--dir", default=None, help="work folder to keep (default: a temp folder, removed)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with scratch("lorabench-bench-import-", args.dir) as tmp:
        build_s, lib = timed(lambda: build_library(tmp / "lib", count=args.files, tiny=True, seed=args.seed))
        paths = sorted(str(f.path) for f in lib.files)
        file_bytes = warm_page_cache(paths)

        with Catalog(tmp / "read.duckdb") as catalog:
            read_s, read = timed(lambda: catalog.import_library([lib.root], hashes=False, progress=False))
            catalog.release()
            time.sleep(0.1)
            # The same catalog again with hashes: every file is known and unchanged but unhashed,
            # so this run is the hash phase alone (hashing + writing the hashes to the catalog).
            hash_s, hashed = timed(lambda: catalog.import_library([lib.root], progress=False))
        with Catalog(tmp / "full.duckdb") as catalog:
            full_s, full = timed(lambda: catalog.import_library([lib.root], progress=False))
            rescans = []
            for _ in range(args.rescans):
                catalog.release()
                time.sleep(0.1)  # past the gateway's yield pause: time the rescan, not the courtesy wait
                seconds, again = timed(lambda: catalog.import_library([lib.root], progress=False))
                rescans.append((seconds, again.unchanged == len(paths) and not again.added))
            rows = catalog.count()

        warm_page_cache(paths)
        _sha256sum(paths, cores)  # warm-up
        ref_1, ours_1 = _sha256sum(paths, 1), _ours(paths, 1)
        ref_n, ours_n = _sha256sum(paths, cores), _ours(paths, cores)
        digest_bytes = _digest_bytes(paths)
        rescan_s = [s for s, _ in rescans]
        best, median = min(rescan_s), statistics.median(rescan_s)
        emit({
            "bench": "import", **environment(),
            "files": len(paths), "library_bytes": file_bytes, "build_s": round(build_s, 2),
            "read_s": round(read_s, 3), "read_files_per_s": round(len(paths) / read_s, 1),
            "read_errors": len(read.errors),
            "full_s": round(full_s, 3), "full_files_per_s": round(len(paths) / full_s, 1),
            "full_hashed": full.hashed, "full_errors": len(full.errors), "catalog_rows": rows,
            "hash_phase_s": round(hash_s, 3), "hash_phase_hashed": hashed.hashed,
            "hash_phase_mb_per_s": round(hashed.hashed_bytes / hash_s / 1e6, 1),
            "import_hash_phase_ratio": round(ref_n / hash_s * hashed.hashed_bytes / file_bytes, 3),
            "sha256sum_mb_per_s_1core": round(file_bytes / ref_1 / 1e6, 1),
            "lorabench_mb_per_s_1core": round(file_bytes / ours_1 / 1e6, 1),
            "per_core_file_ratio": round(ref_1 / ours_1, 3),
            "per_core_digest_ratio": round(digest_bytes / file_bytes * ref_1 / ours_1, 3),
            "sha256sum_mb_per_s_all_cores": round(file_bytes / ref_n / 1e6, 1),
            "lorabench_mb_per_s_all_cores": round(file_bytes / ours_n / 1e6, 1),
            "all_core_file_ratio": round(ref_n / ours_n, 3),
            "all_core_digest_ratio": round(digest_bytes / file_bytes * ref_n / ours_n, 3),
            "rescan_runs_s": [round(s, 4) for s in rescan_s],
            "rescan_min_s": round(best, 4), "rescan_median_s": round(median, 4),
            "rescan_files_per_s": round(len(paths) / best, 1),
            "rescan_all_unchanged": all(ok for _, ok in rescans),
            "rescan_projected_s_at_50k": round(best * RESCAN_GOAL_FILES / len(paths), 3),
            "rescan_goal_s_at_50k": RESCAN_GOAL_S,
        })  # fmt: skip


if __name__ == "__main__":
    main()

"""Benchmark two real processes on one catalog file: an import beside a searching notebook.

This process imports a generated library (cold, with hashes) and then force-resyncs it; a second
Python process searches the same catalog file in a loop for the whole time. Prints one JSON line:
errors in each process (goal 0), searches completed, search latency (max, p95), and rows lost
(model files on disk minus catalog rows; goal 0).

Usage: python benchmarks/bench_concurrent.py [--files 1000] (larger: --files 3000)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import emit, environment, percentile, scratch, timed

from lorabench.catalog import Catalog
from lorabench.samples import build_library

SEARCHES = ("", "base:sdxl", "forest", "rank:>=16 sort:-size", "-tag:1girl", "algo:lycoris", "is:error",
            "tag:score_* sort:name")  # fmt: skip


def searcher(catalog_path: str, ready: Path, stop: Path) -> None:
    """The notebook side: search in a loop until ``stop`` exists; print one JSON line of counts."""
    catalog = Catalog(catalog_path)
    catalog.search("", limit=1)
    ready.write_text(str(os.getpid()))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    last_total = -1
    shrank = 0
    i = 0
    while not stop.exists():
        q = SEARCHES[i % len(SEARCHES)]
        i += 1
        started = time.perf_counter()
        try:
            result = catalog.search(q, limit=50)
            if i % 4 == 0:
                catalog.facets(q)
        except Exception as exc:  # every failure counts; the goal is none
            errors[type(exc).__name__] += 1
            continue
        finally:
            latencies.append(time.perf_counter() - started)
        if q == "":
            shrank += result.total < last_total  # a reader must never see committed rows vanish
            last_total = result.total
    catalog.close()
    print(json.dumps({"searches": len(latencies), "errors": sum(errors.values()), "error_types": dict(errors),
                      "max_ms": round(max(latencies, default=0) * 1000, 1),
                      "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                      "p95_ms": round(percentile(latencies, 95) * 1000, 1),
                      "total_shrank": shrank}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000, help="library size (e.g. 3000)")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--dir", default=None, help="work folder to keep (default: a temp folder, removed)")
    parser.add_argument("--role", choices=("importer", "searcher"), default="importer", help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--stop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "searcher":
        searcher(args.catalog, Path(args.ready), Path(args.stop))
        return
    with scratch("lorabench-bench-concurrent-", args.dir) as tmp:
        lib = build_library(tmp / "lib", count=args.files, tiny=True, seed=args.seed)
        catalog_path = tmp / "catalog.duckdb"
        Catalog(catalog_path).close()  # create and migrate before the searcher opens it
        ready, stop = tmp / "searcher.ready", tmp / "searcher.stop"
        child = subprocess.Popen(
            [sys.executable, __file__, "--role", "searcher", "--catalog", str(catalog_path),
             "--ready", str(ready), "--stop", str(stop)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        import_errors: Counter[str] = Counter()
        phases: dict[str, float] = {}
        try:
            while not ready.exists():
                if child.poll() is not None:
                    raise RuntimeError("the searcher process exited before it was ready")
                time.sleep(0.01)
            catalog = Catalog(catalog_path)
            for name, force in (("import_s", False), ("force_resync_s", True)):
                try:
                    seconds, report = timed(
                        lambda force=force: catalog.import_library([lib.root], force_resync=force, progress=False)
                    )
                    phases[name] = round(seconds, 2)
                    for error in report.errors:
                        import_errors[error["code"]] += 1
                except Exception as exc:  # every failure counts; the goal is none
                    import_errors[type(exc).__name__] += 1
        finally:
            stop.write_text("stop")
            out, _ = child.communicate(timeout=120)
        search = json.loads(out.strip().splitlines()[-1]) if child.returncode == 0 and out.strip() else {}
        files = list(lib.root.rglob("*.safetensors"))
        stats = catalog.stats()
        catalog.close()
        emit({
            "bench": "concurrent", **environment(), "files": len(files), **phases,
            "import_errors": sum(import_errors.values()), "import_error_types": dict(import_errors),
            "searcher_exit_code": child.returncode,
            "search_errors": search.get("errors"), "search_error_types": search.get("error_types"),
            "searches": search.get("searches"), "search_p50_ms": search.get("p50_ms"),
            "search_p95_ms": search.get("p95_ms"), "search_max_ms": search.get("max_ms"),
            "search_total_shrank": search.get("total_shrank"),
            "catalog_rows": stats["total"], "rows_ok": stats["ok"], "rows_hashed": stats["hashed"],
            "rows_lost": len(files) - stats["total"], "unhashed": len(files) - stats["hashed"],
        })  # fmt: skip


if __name__ == "__main__":
    main()

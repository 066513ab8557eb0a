"""Shared helpers for the benchmarks: one JSON line out, temp folders, timing and percentiles.

Benchmarks report quantities and ratios, never pass/fail on time; goals are printed beside the
measurement (``*_goal_*`` keys) so a reader can compare.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["emit", "environment", "percentile", "scratch", "timed", "warm_page_cache"]


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's single JSON line (and flush, so a parent process sees it)."""
    print(json.dumps(result, sort_keys=False, default=str), flush=True)


def environment() -> dict[str, Any]:
    """Where the numbers were taken."""
    import duckdb

    return {"cores": os.cpu_count() or 1, "python": platform.python_version(), "duckdb": duckdb.__version__,
            "platform": sys.platform}  # fmt: skip


@contextlib.contextmanager
def scratch(prefix: str, keep: str | None = None) -> Iterator[Path]:
    """A temporary folder removed afterwards, or ``keep`` (created, left in place) when given."""
    if keep:
        path = Path(keep).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def warm_page_cache(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Read every file once so timings measure the CPU, not the disk; returns the bytes read."""
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                total += len(chunk)
    return total

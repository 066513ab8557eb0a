"""The import run: scan → plan → read headers in batches → hash in a pool.

Header facts are committed first (the catalog is searchable at once), then the
hashes are filled in. Each batch is one transaction and the file is released
between batches, so a notebook can search while an import runs; a run killed at
any point leaves every committed batch, and the next run completes it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lorabench.catalog._storage import ensure_free_space
from lorabench.catalog._store import Fingerprint
from lorabench.errors import FileReadError, ImportRunError, LorabenchError
from lorabench.files import hash_file, hash_files, inspect
from lorabench.importer._read import read_files
from lorabench.importer._report import ImportReport
from lorabench.importer._scan import Found, scan

if TYPE_CHECKING:
    from lorabench.catalog import Catalog

__all__ = ["import_library"]

_BATCH_FILES = 1000  # rows per transaction: bounds how long another process waits for the file
_BATCH_SECONDS = 0.5
# The import keeps the file between batches (handing it over when another process asks) and folds
# its WAL in when it passes this size and at the end; each checkpoint first copies the file aside.
_CHECKPOINT_BYTES = 64 << 20
_FOLD_BYTES = 1 << 20  # at the end of a run; a no-change rescan writes only its run record
_MIN_FREE_BYTES = 64 << 20


def _between_batches(gateway: Any) -> None:
    gateway.offer_turn(checkpoint_bytes=_CHECKPOINT_BYTES)
    if gateway.wal_size() >= _CHECKPOINT_BYTES:
        gateway.checkpoint()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass
class _Plan:
    new: list[Found] = field(default_factory=list)
    changed: list[tuple[Found, bool]] = field(default_factory=list)  # (file, bytes changed)
    moved: list[tuple[Fingerprint, Found]] = field(default_factory=list)
    missing: list[Fingerprint] = field(default_factory=list)
    offline: list[Fingerprint] = field(default_factory=list)
    restored: list[Fingerprint] = field(default_factory=list)
    unhashed: list[Found] = field(default_factory=list)
    unchanged: int = 0


def _resolve_scopes(paths: Iterable[str | os.PathLike[str]], known_roots: list[str]) -> list[tuple[str, str]]:
    scopes: list[tuple[str, str]] = []
    for raw in paths:
        path = os.path.realpath(os.path.abspath(os.fspath(raw)))
        root = next((r for r in sorted(known_roots, key=len, reverse=True) if _under(path, r)), path)
        if (root, path) not in scopes:
            scopes.append((root, path))
    return scopes


def _plan(
    attention: list[tuple[Found, Fingerprint | None]], vanished: list[Fingerprint], offline: list[Fingerprint],
    total: int, force: bool, found: dict[str, Found],
) -> _Plan:  # fmt: skip
    """Sort what the catalog diff flagged into new / changed / moved / missing / restored."""
    plan = _Plan(offline=offline)
    flagged: set[str] = set()
    for f, fp in attention:
        flagged.add(f.path)
        if fp is None:
            plan.new.append(f)
            continue
        same_bytes = (fp.size, fp.mtime_ns, fp.inode) == (f.size, f.mtime_ns, f.inode)
        if force or not same_bytes:
            plan.changed.append((f, True))
            continue
        if fp.sidecar_fingerprint != f.sidecar_fingerprint and (fp.sidecar_fingerprint or f.sidecar_fingerprint):
            plan.changed.append((f, False))
        else:
            plan.unchanged += 1
        if fp.missing or fp.offline:
            plan.restored.append(fp)
        if fp.sha256 is None:
            plan.unhashed.append(f)
    if force:
        plan.changed += [(f, True) for path, f in found.items() if path not in flagged]
    plan.unchanged += total - len(flagged) if not force else 0
    by_identity = {(fp.device, fp.inode, fp.size, fp.mtime_ns): fp for fp in vanished}
    still_new: list[Found] = []
    for f in plan.new:
        old = by_identity.pop((f.device, f.inode, f.size, f.mtime_ns), None)
        if old is not None:
            plan.moved.append((old, f))
        else:
            still_new.append(f)
    plan.new = still_new
    plan.missing = list(by_identity.values())
    return plan


class _Progress:
    def __init__(self, enabled: bool | None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty() or "ipykernel" in sys.modules
        self.enabled = enabled

    def bar(self, total: int, desc: str, unit: str = "file", scale: bool = False) -> Any:
        if not self.enabled or total == 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                    leave=True, dynamic_ncols=True)  # fmt: skip


def import_library(
    catalog: Catalog,
    paths: Iterable[str | os.PathLike[str]],
    *,
    force_resync: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
    follow_symlinks: bool = False,
    hashes: bool = True,
) -> ImportReport:
    """Import LoRA folders into ``catalog`` (incrementally), or with ``dry_run`` report the plan.

    Parameters
    ----------
    paths:
        Library roots, or folders inside a known root (a scoped run).
    force_resync:
        Re-read and re-hash everything in scope; curation is kept.
    dry_run:
        Change nothing; the report lists exactly what a real run would do.
    jobs:
        Hashing threads (default: the number of cores).
    progress:
        Show tqdm progress bars (default: when interactive or in a notebook).
    follow_symlinks:
        Follow folder links and file links that leave the roots (off by default).
    hashes:
        Compute sha256 / AutoV2 / AutoV3 / tensor / legacy hashes (on by default).
    """
    started = time.monotonic()
    store = catalog._store
    paths = list(paths)
    if not paths:
        raise ImportRunError("No library folder was given", hint="Pass one or more folders of LoRA files.")
    scopes = _resolve_scopes(paths, store.roots())
    roots = sorted({r for r, _ in scopes} | set(store.roots()))
    result = scan(roots, scopes, follow_symlinks=follow_symlinks)
    attention, vanished, offline = store.diff(result.files, result.rows, [s for _, s in scopes],
                                              result.unreachable)  # fmt: skip
    plan = _plan(attention, vanished, offline, len(result.files), force_resync, result.files)
    report = ImportReport(dry_run=dry_run, roots=sorted({r for r, _ in scopes}), scope=[s for _, s in scopes])
    report.skipped = [{"path": p, "code": c, "message": m} for p, c, m in result.skipped]
    report.unchanged = plan.unchanged
    report.offline = [fp.path for fp in plan.offline]
    report.unreachable = list(result.unreachable)
    report.restored = [fp.path for fp in plan.restored]
    report.missing = [fp.path for fp in plan.missing]
    report.moved = [{"from": old.path, "to": f.path} for old, f in plan.moved]
    report.changed = [f.path for f, _ in plan.changed]
    if dry_run:
        _dry_run(report, plan, store, hashes)
        report.duration_s = time.monotonic() - started
        return report
    if catalog.path != ":memory:":  # fail before the first write, not half-way (the catalog stays as it was)
        ensure_free_space(catalog.path, _MIN_FREE_BYTES, "import into the catalog")
    options = {"force_resync": force_resync, "jobs": jobs, "follow_symlinks": follow_symlinks, "hashes": hashes}
    run_id = store.start_run(report.scope, options, _now())
    report.run_id = run_id
    status, error = "completed", None
    try:
        _apply(catalog, report, plan, jobs, _Progress(progress), hashes)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
        raise
    except LorabenchError as exc:
        status, error = "failed", str(exc)
        raise
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise ImportRunError(f"The import stopped: {error}") from exc
    finally:
        report.status = status
        report.duration_s = time.monotonic() - started
        with contextlib.suppress(*((LorabenchError,) if error else ())):
            store.finish_run(run_id, status=status, counts=report.counts, duration=report.duration_s,
                             now=_now(), error=error,
                             errors=[(e["path"], e["code"], e["message"]) for e in report.errors])  # fmt: skip
    if catalog._gateway.wal_size() >= _FOLD_BYTES:  # fold the run's writes in: later opens replay less
        catalog.checkpoint()
    return report


def _dry_run(report: ImportReport, plan: _Plan, store: Any, hashes: bool) -> None:
    """Fill in what only reading the files can tell: errors, and moves detected by content."""
    added: list[str] = []
    candidates: dict[str, tuple[str, int]] = {}
    if hashes and plan.new:
        candidates = store.missing_rows()
        candidates.update({fp.sha256: (fp.path, fp.size) for fp in plan.missing if fp.sha256 and fp.size})
    sizes = {size for _, size in candidates.values()}
    for f in plan.new:
        if f.size in sizes:
            try:
                digest: str | None = hash_file(f.path).sha256
            except FileReadError:
                digest = None
            match = candidates.get(digest) if digest else None
            if match is not None:
                report.moved.append({"from": match[0], "to": f.path})
                if match[0] in report.missing:
                    report.missing.remove(match[0])
                continue
        added.append(f.path)
    report.added = added
    for f in [*plan.new, *[f for f, _ in plan.changed]]:
        try:
            inspect(f.path, sidecars=False)
        except FileReadError as exc:
            if exc.code != "not_found":
                report.errors.append({"path": f.path, "code": exc.code, "message": exc.message})


def _apply(
    catalog: Catalog, report: ImportReport, plan: _Plan, jobs: int | None, progress: _Progress, hashes: bool
) -> None:
    store = catalog._store
    gateway = catalog._gateway
    now = _now()
    store.ensure_roots(report.roots, now)
    work: list[tuple[Found, str, Any]] = [(f, "new", None) for f in plan.new]
    work += [(f, "changed" if content else "sidecars", None) for f, content in plan.changed]
    work += [(f, "moved", old) for old, f in plan.moved]
    bar = progress.bar(len(work), "reading")
    pending: list[tuple[dict[str, Any], str, Any]] = []
    last_flush = time.monotonic()
    to_hash: list[Found] = list(plan.unhashed)

    def flush() -> None:
        nonlocal pending, last_flush
        if not pending:
            return
        with gateway.session(write=True) as conn:
            fresh = [row for row, kind, _ in pending if kind in ("new", "changed")]
            kept = [row for row, kind, _ in pending if kind == "sidecars"]
            store.upsert(fresh, conn)
            store.upsert(kept, conn, keep_hashes=True)
            for row, kind, old in pending:
                if kind == "moved":
                    store.move(old.id, row, conn, keep_hashes=True)
        _between_batches(gateway)
        pending = []
        last_flush = time.monotonic()

    workers = max(1, jobs or os.cpu_count() or 1)
    # The file stays open between these batches (handed over when another process asks): reading
    # headers is quick per file. The hash pass below releases it after each batch instead.
    with gateway.holding():
        for (f, kind, old), (row, error) in zip(work, read_files([f for f, _, _ in work], now, workers), strict=True):
            if error is not None:
                report.errors.append(error)
            if kind == "new":
                report.added.append(f.path)
            if kind in ("new", "changed") or (kind == "moved" and old.sha256 is None):
                to_hash.append(f)
            pending.append((row, kind, old))
            if bar is not None:
                bar.update(1)
            if len(pending) >= _BATCH_FILES or time.monotonic() - last_flush > _BATCH_SECONDS:
                flush()
        flush()
    if bar is not None:
        bar.close()
    store.mark_present([fp.id for fp in plan.restored], now)
    store.mark_missing([fp.id for fp in plan.missing], offline=False, now=now)
    store.mark_missing([fp.id for fp in plan.offline], offline=True, now=now)
    if hashes and to_hash:
        gateway.release(yield_turn=True)
        _hash_pass(catalog, report, to_hash, jobs, progress)


def _hash_pass(catalog: Catalog, report: ImportReport, files: list[Found], jobs: int | None,
               progress: _Progress) -> None:  # fmt: skip
    store = catalog._store
    total = sum(f.size for f in files)
    bar = progress.bar(total, "hashing", unit="B", scale=True)
    batch: list[tuple[str, dict[str, str | None]]] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal batch, last
        for old_path, new_path in store.set_hashes(batch, _now()):
            report.moved.append({"from": old_path, "to": new_path})
            if new_path in report.added:
                report.added.remove(new_path)
            if old_path in report.missing:
                report.missing.remove(old_path)
        # released after every batch: hashing one big file can take longer than another process waits
        catalog._gateway.release(yield_turn=True)
        batch = []
        last = time.monotonic()

    for path, result in hash_files([(f.path, None) for f in files], jobs=jobs):
        if isinstance(result, FileReadError):
            report.errors.append({"path": path, "code": result.code, "message": result.message})
            continue
        batch.append((path, result.to_dict()))
        report.hashed += 1
        report.hashed_bytes += result.size
        if bar is not None:
            bar.update(result.size)
        if len(batch) >= _BATCH_FILES or time.monotonic() - last > _BATCH_SECONDS:
            flush()
    flush()
    if bar is not None:
        bar.close()

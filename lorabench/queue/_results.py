"""Result images on disk: atomic writes under ``results/<yyyy-mm-dd>/<job>_<i>.<ext>`` and the sweep.

Each image is written to a hidden temp name in its final folder, fsynced, renamed into place,
and the folder fsynced; only then is its row inserted (by ``History.record``). A process killed
in between leaves either a temp file or an image without a row. :func:`sweep` (run when a
runner starts) removes temp files and settles such orphans:

- the job exists and is not running any more, was not recorded as succeeded, and not
  cancelled: the generation did run, so the orphan is **adopted** — recorded with what the job
  and the image's own infotext say — and the job marked ``succeeded`` (it never runs twice);
- the job succeeded, failed, was cancelled, or is unknown: the file is a leftover (e.g. of a
  deletion interrupted between its row and its file) and is removed;
- the job is running under a live lease: left alone (its worker is about to record it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from lorabench.catalog._history import History, NewImage
from lorabench.errors import FileReadError
from lorabench.files import read_image_metadata
from lorabench.queue._jobs import Job
from lorabench.queue._store import JobStore
from lorabench.sdnext import GeneratedImage

__all__ = ["EXTENSIONS", "SweepReport", "sweep", "write_images"]

logger = logging.getLogger("lorabench.queue")

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
_FORMATS = {v: k for k, v in EXTENSIONS.items()}
_FINAL = re.compile(r"^(?P<job>[0-9a-f]{8,32})_(?P<index>\d{1,4})\.(?P<ext>png|jpg|webp)$")
_TEMP = re.compile(r"^\.tmp-(?P<job>[0-9a-f]{8,32})_\d{1,4}\.(png|jpg|webp)\.\d+$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(target: Path, data: bytes) -> None:
    temp = target.with_name(f".tmp-{target.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def write_images(
    root: Path, job_id: str, images: list[GeneratedImage], seeds: list[int], day: date | None = None
) -> tuple[date, list[NewImage]]:
    """Write ``images`` atomically into ``root/<day>/`` and describe them for ``History.record``."""
    day = day or date.today()
    folder = root / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    out: list[NewImage] = []
    for index, image in enumerate(images):
        ext = EXTENSIONS.get(image.format, "bin")
        target = folder / f"{job_id}_{index}.{ext}"
        _write_atomic(target, image.data)
        out.append(
            NewImage(
                path=str(target),
                format=image.format,
                index=index,
                nbytes=len(image.data),
                sha256=hashlib.sha256(image.data).hexdigest(),
                width=image.width,
                height=image.height,
                seed=seeds[index] if index < len(seeds) else None,
                infotext=image.parameters,
            )
        )
    _fsync_dir(folder)
    return day, out


@dataclass
class SweepReport:
    """What one sweep of the results folder did."""

    temp_removed: int = 0
    adopted: int = 0
    removed: int = 0
    jobs_adopted: tuple[str, ...] = ()


def _describe(path: Path, index: int) -> NewImage:
    data = path.read_bytes()
    infotext = width = height = None
    try:
        meta = read_image_metadata(str(path))
        infotext, width, height = meta.parameters, meta.width, meta.height
    except (FileReadError, OSError):
        pass
    ext = path.suffix.lstrip(".")
    return NewImage(
        path=str(path),
        format=_FORMATS.get(ext, ext.upper()),
        index=index,
        nbytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        infotext=infotext,
    )


def _live(job: Job) -> bool:
    return job.state == "running" and (job.lease_expires or 0) >= time.time()


def sweep(root: Path, store: JobStore, history: History, *, temp_grace: float = 60.0) -> SweepReport:
    """Settle what a killed writer left in ``root`` (see the module docstring)."""
    report = SweepReport()
    if not root.is_dir():
        return report
    candidates: dict[str, list[tuple[Path, int, date]]] = {}
    now = time.time()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _DAY.match(p.name)):
        for entry in os.scandir(folder):
            if not entry.is_file(follow_symlinks=False):
                continue
            temp = _TEMP.match(entry.name)
            if temp:
                job = store.find(temp.group("job"))
                if (job is None or not _live(job)) and now - entry.stat().st_mtime > temp_grace:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        report.temp_removed += 1
                continue
            final = _FINAL.match(entry.name)
            if final:
                candidates.setdefault(final.group("job"), []).append(
                    (Path(entry.path), int(final.group("index")), date.fromisoformat(folder.name))
                )
    if not candidates:
        return report
    known = history.known_paths(str(p) for files in candidates.values() for p, _, _ in files)
    adopted_jobs: list[str] = []
    for job_id, files in candidates.items():
        orphans = [f for f in files if str(f[0]) not in known]
        if not orphans:
            continue
        job = store.find(job_id)
        if job is not None and _live(job):
            continue
        if job is not None and job.state in ("running", "interrupted", "queued"):
            try:
                _adopt(store, history, job, sorted(orphans, key=lambda f: f[1]))
            except Exception:
                logger.exception("lorabench: could not adopt the orphan results of job %s", job_id)
                continue
            report.adopted += len(orphans)
            adopted_jobs.append(job_id)
            continue
        for path, _, _ in orphans:
            with contextlib.suppress(OSError):
                path.unlink()
                report.removed += 1
    report.jobs_adopted = tuple(adopted_jobs)
    return report


def _adopt(store: JobStore, history: History, job: Job, files: list[tuple[Path, int, date]]) -> None:
    images = [_describe(path, index) for path, index, _ in files]
    records = history.record(
        job.id,
        job.key,
        job.request,
        images,
        day=files[0][2],
        backend=job.backend,
        queue_wait_s=job.queue_wait_s,
        generation_s=job.generation_s,
    )
    moved = store.settle(
        job.id,
        [job.state],
        "succeeded",
        detail="adopted results a stopped worker had written",
        result_ids=[r.id for r in records],
    )
    if not moved:  # the job changed meanwhile (resumed and taken): undo the rows; its new run owns the files
        history.delete([r.id for r in records], files=False)
        return
    logger.warning("lorabench: adopted %d orphan result file(s) of job %s", len(images), job.id)

"""Turn one file on disk into a trustworthy :class:`LoraInfo`.

The pipeline: refuse special files and pickles → strict header → classify keys
and family → typed metadata → (optionally) hashes in one pass → sidecars and
preview. Sidecar and preview problems are warnings on the LoRA, never failures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lorabench.errors import FileReadError, LorabenchError
from lorabench.files._detect import choose_alpha_scalars, detect
from lorabench.files._hashes import FileHashes, compare_hash_hints, hash_file
from lorabench.files._header import HeaderLimits, SafetensorsHeader, read_header
from lorabench.files._infotext import read_image_metadata
from lorabench.files._metadata import (
    guess_trigger_words,
    merge_tag_frequency,
    parse_modelspec,
    parse_training,
)
from lorabench.files._sidecars import read_sidecars

__all__ = ["LoraInfo", "inspect", "inspect_header", "inspect_many"]

_CIVITAI_BASES: list[tuple[str, str, str | None]] = [
    ("pony", "sdxl", "pony"), ("illustrious", "sdxl", "illustrious"), ("noobai", "sdxl", "noobai"),
    ("sdxl", "sdxl", None), ("sd 1", "sd1", None), ("sd1", "sd1", None), ("sd 2", "sd2", None),
    ("sd2", "sd2", None), ("sd 3", "sd3", None), ("sd3", "sd3", None), ("flux", "flux1", None),
    ("chroma", "flux1", "chroma"),
]  # fmt: skip


@dataclass
class LoraInfo:
    """Everything lorabench knows about one LoRA file. ``to_dict()`` is JSON-ready."""

    path: str
    name: str
    title: str
    size: int
    mtime_ns: int
    format: str
    algorithm: str
    algorithm_counts: dict[str, int]
    dora: bool
    base_model: str
    base_model_hint: str | None
    base_model_evidence: list[dict[str, Any]]
    base_model_conflict: bool
    rank: int | None
    ranks: list[int]
    alpha: float | None
    alpha_source: str | None
    dtype: str | None
    dtypes: dict[str, int]
    n_tensors: int
    n_modules: int
    components: dict[str, int]
    header_bytes: int
    training: dict[str, Any]
    modelspec: dict[str, Any]
    tags: dict[str, int]
    trigger_words: list[dict[str, str]]
    hashes: dict[str, Any] | None
    hash_hints: dict[str, dict[str, Any]]
    other_metadata: dict[str, str]
    sidecars: dict[str, Any] = field(default_factory=dict)
    preview: dict[str, Any] | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the documented keys (values are shared with this object, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def inspect_header(header: SafetensorsHeader, *, hashes: FileHashes | None = None) -> LoraInfo:
    """Build a :class:`LoraInfo` from an already-read header (no sidecars)."""
    meta = header.metadata
    found = detect(header.tensors, meta, header.values)
    training = parse_training(meta)
    spec = parse_modelspec(meta)
    name = Path(header.path).stem
    title = str(spec.get("title") or training.get("output_name") or name)
    other = {k: v[:4096] for k, v in meta.items() if not k.startswith(("ss_", "modelspec.", "sshs_"))}
    triggers: list[dict[str, str]] = []
    for word in str(spec.get("trigger_phrase", "")).split(","):
        if word.strip():
            triggers.append({"word": word.strip(), "source": "modelspec.trigger_phrase"})
    return LoraInfo(
        path=header.path, name=name, title=title, size=header.size, mtime_ns=header.mtime_ns,
        format=found.format, algorithm=found.algorithm, algorithm_counts=found.algorithm_counts,
        dora=found.dora, base_model=found.base_model, base_model_hint=found.base_model_hint,
        base_model_evidence=found.base_model_evidence, base_model_conflict=found.base_model_conflict,
        rank=found.rank, ranks=found.ranks, alpha=found.alpha, alpha_source=found.alpha_source,
        dtype=found.dtype, dtypes=found.dtypes, n_tensors=len(header.tensors),
        n_modules=found.n_modules, components=found.components, header_bytes=header.header_len,
        training=training, modelspec=spec, tags=merge_tag_frequency(meta), trigger_words=triggers,
        hashes=hashes.to_dict() if hashes else None, hash_hints=compare_hash_hints(meta, hashes),
        other_metadata=other, warnings=list(found.warnings),
    )  # fmt: skip


def inspect(
    path: str | os.PathLike[str],
    *,
    hashes: bool = False,
    sidecars: bool = True,
    limits: HeaderLimits | None = None,
) -> LoraInfo:
    """Inspect one LoRA file: header facts, sidecars, preview and (optionally) hashes.

    Raises a :class:`~lorabench.errors.FileReadError` subclass (with a stable
    ``code``) when the file itself cannot be trusted; sidecar and preview problems
    become entries in ``info.warnings``.
    """
    header = read_header(path, limits=limits, scalars=choose_alpha_scalars)
    digests = hash_file(header.path, header.data_start) if hashes else None
    if digests is not None and digests.size != header.size:
        raise FileReadError(f"{header.path} changed between reads", path=header.path, code="unstable")
    info = inspect_header(header, hashes=digests)
    if sidecars:
        attach_sidecars(info)
    if not info.trigger_words:
        info.trigger_words = [{"word": w, "source": "dataset_dir (guess)"}
                              for w in guess_trigger_words(header.metadata)]  # fmt: skip
    return info


def attach_sidecars(info: LoraInfo) -> None:
    """Read sidecars and the preview beside ``info.path`` into ``info``."""
    report = read_sidecars(info.path).to_dict()
    info.sidecars = report
    info.warnings.extend({"source": "sidecar", **w} for w in report.get("warnings", []))
    fields: dict[str, Any] = report.get("fields", {})
    seen = {t["word"].lower() for t in info.trigger_words}
    for key in ("trained_words", "activation_text"):
        entry = fields.get(key)
        if not entry:
            continue
        for candidate in [entry, *entry.get("alternatives", [])]:
            words = candidate.get("value")
            words = words.split(",") if isinstance(words, str) else words
            for word in words if isinstance(words, list) else []:
                if isinstance(word, str) and word.strip() and word.strip().lower() not in seen:
                    seen.add(word.strip().lower())
                    info.trigger_words.append({"word": word.strip(), "source": str(candidate.get("source"))})
    _sidecar_base_model(info, fields)
    preview = report.get("preview")
    if preview is not None:
        entry: dict[str, Any] = {"path": str(preview)}
        try:
            entry.update(read_image_metadata(preview).to_dict())
        except LorabenchError as exc:
            info.warnings.append({"source": "preview", "code": exc.code, "message": exc.message})
        info.preview = entry


def _sidecar_base_model(info: LoraInfo, fields: dict[str, Any]) -> None:
    for key in ("base_model", "sd_version"):
        entry = fields.get(key)
        if not entry:
            continue
        for candidate in [entry, *entry.get("alternatives", [])]:
            text = str(candidate.get("value") or "").lower()
            for word, family, hint in _CIVITAI_BASES:
                if word in text:
                    info.base_model_evidence.append({"source": f"sidecar:{candidate.get('source')}",
                                                     "value": family, "confidence": 0.5,
                                                     "detail": candidate.get("value")})  # fmt: skip
                    if hint and not info.base_model_hint:
                        info.base_model_hint = hint
                    if info.base_model == "unknown":
                        info.base_model = family
                    break
    values = {e["value"] for e in info.base_model_evidence}
    info.base_model_conflict = len(values) > 1


def inspect_many(
    paths: Iterable[str | os.PathLike[str]],
    *,
    hashes: bool = False,
    sidecars: bool = True,
    limits: HeaderLimits | None = None,
    jobs: int | None = None,
) -> Iterator[tuple[str, LoraInfo | FileReadError]]:
    """Inspect many files (hashing in parallel), yielding ``(path, info or error)`` in order."""

    def one(p: str | os.PathLike[str]) -> tuple[str, LoraInfo | FileReadError]:
        try:
            return os.fspath(p), inspect(p, hashes=hashes, sidecars=sidecars, limits=limits)
        except FileReadError as exc:
            return os.fspath(p), exc

    if not hashes or (jobs or 1) == 1:
        yield from map(one, paths)
        return
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        yield from pool.map(one, paths)

"""Mapping reader facts (:class:`~lorabench.files.LoraInfo`) onto catalog columns."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from lorabench.files import LoraInfo

__all__ = ["LORA_COLUMNS", "error_row", "lora_row", "search_text"]

#: Columns the importer writes (``id`` and ``first_seen`` are kept on update).
LORA_COLUMNS: tuple[str, ...] = (
    "path", "root", "folder", "name", "title", "description", "author", "size", "mtime", "mtime_ns",
    "inode", "device", "sidecar_fingerprint", "status", "missing", "offline", "error_code",
    "error_message", "format", "algorithm", "dora", "base_model", "base_model_hint", "rank", "alpha",
    "dtype", "n_tensors", "n_modules", "epochs", "steps", "images", "resolution", "network_module",
    "optimizer", "learning_rate", "base_model_name", "trained_at", "trigger_words", "training_tags",
    "sha256", "autov2", "autov3", "tensor_sha256", "legacy_hash", "hashed_at", "preview_path",
    "sidecar_kinds", "sidecar_nsfw", "sidecar_weight", "info", "search_text", "first_seen", "last_seen",
    "updated_at",
)  # fmt: skip

_MAX_TEXT = 64 * 1024
_MAX_TAGS = 200


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    value = int(value)
    return value if -(2**31) <= value < 2**31 else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text[:limit] if text else None


def _distinct(values: Iterable[str]) -> list[str]:
    """In first-seen order, each once (facet counts rely on list columns holding distinct values)."""
    return list(dict.fromkeys(values))


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).replace(tzinfo=None)


def _field(info: LoraInfo, name: str) -> Any:
    entry = info.sidecars.get("fields", {}).get(name) if info.sidecars else None
    return entry.get("value") if isinstance(entry, dict) else None


def _slim_info(info: LoraInfo) -> dict[str, Any]:
    """The full reader output, minus bulky raw values (kept bounded for the JSON column)."""
    doc = info.to_dict()
    training = dict(doc.get("training") or {})
    raw = training.get("raw", {})
    training["raw"] = {k: (v if len(v) <= 4096 else v[:4096] + "…") for k, v in raw.items()}
    training.pop("parsed", None)
    doc["training"] = training
    doc["tags"] = dict(list((doc.get("tags") or {}).items())[:_MAX_TAGS])
    return doc


def lora_row(
    info: LoraInfo,
    *,
    root: str,
    folder: str,
    inode: int,
    device: int,
    sidecar_fingerprint: str,
    now: datetime,
) -> dict[str, Any]:
    """The catalog row for a file the reader could read."""
    training = info.training or {}
    spec = info.modelspec or {}
    description = _field(info, "description") or spec.get("description")
    hashes = info.hashes or {}
    weight = _float(_field(info, "preferred_weight"))
    nsfw = _field(info, "nsfw")
    resolution = training.get("resolution")
    return {
        "path": info.path, "root": root, "folder": folder, "name": info.name,
        "title": _text(info.title, 1024),
        "description": _text(description), "author": _text(spec.get("author"), 1024),
        "size": info.size, "mtime": _ts(info.mtime_ns), "mtime_ns": info.mtime_ns, "inode": inode,
        "device": device, "sidecar_fingerprint": sidecar_fingerprint, "status": "ok", "missing": False,
        "offline": False, "error_code": None, "error_message": None, "format": info.format,
        "algorithm": info.algorithm, "dora": info.dora, "base_model": info.base_model,
        "base_model_hint": info.base_model_hint, "rank": _int(info.rank), "alpha": _float(info.alpha),
        "dtype": info.dtype, "n_tensors": info.n_tensors, "n_modules": info.n_modules,
        "epochs": _int(training.get("epochs")), "steps": _int(training.get("steps")),
        "images": _int(training.get("images")),
        "resolution": "x".join(str(x) for x in resolution) if isinstance(resolution, list) else None,
        "network_module": _text(training.get("network_module"), 256),
        "optimizer": _text(training.get("optimizer"), 512),
        "learning_rate": _float(training.get("learning_rate")),
        "base_model_name": _text(training.get("base_model_name"), 512),
        "trained_at": _iso(training.get("finished_at") or training.get("started_at")),
        "trigger_words": _distinct(t["word"][:256] for t in info.trigger_words)[:_MAX_TAGS],
        "training_tags": _distinct(t.lower()[:256] for t in list(info.tags)[:_MAX_TAGS]),
        "sha256": hashes.get("sha256"), "autov2": hashes.get("autov2"), "autov3": hashes.get("autov3"),
        "tensor_sha256": hashes.get("tensor_sha256"), "legacy_hash": hashes.get("legacy"),
        "hashed_at": now if hashes else None,
        "preview_path": (info.preview or {}).get("path"),
        "sidecar_kinds": sorted({str(s.get("kind")) for s in (info.sidecars or {}).get("sidecars", [])}),
        "sidecar_nsfw": nsfw if isinstance(nsfw, bool) else None,
        "sidecar_weight": weight if weight else None,
        "info": json.dumps(_slim_info(info), ensure_ascii=False, allow_nan=False, default=str),
        "search_text": search_text(info.name, info.title, description, folder,
                                   [t["word"] for t in info.trigger_words], list(info.tags)),
        "first_seen": now, "last_seen": now, "updated_at": now,
    }  # fmt: skip


def error_row(
    path: str, *, root: str, folder: str, name: str, size: int, mtime_ns: int, inode: int, device: int,
    code: str, message: str, status: str, now: datetime, sidecar_fingerprint: str = "",
) -> dict[str, Any]:  # fmt: skip
    """The catalog row for a file the reader refused (bad header, pickle …)."""
    row = dict.fromkeys(LORA_COLUMNS)
    row.update(
        path=path, root=root, folder=folder, name=name, title=name, size=size, mtime=_ts(mtime_ns),
        mtime_ns=mtime_ns, inode=inode, device=device, sidecar_fingerprint=sidecar_fingerprint,
        status=status, missing=False, offline=False, error_code=code, error_message=message[:1024],
        trigger_words=[], training_tags=[], sidecar_kinds=[], first_seen=now, last_seen=now, updated_at=now,
        info=json.dumps({"path": path, "error": {"code": code, "message": message}}),
        search_text=search_text(name, name, None, folder, [], []),
    )  # fmt: skip
    return row


def search_text(name: str, title: str | None, description: str | None, folder: str, triggers: list[str],
                tags: list[str]) -> str:  # fmt: skip
    """Everything free-text search looks at, lower-cased and joined by U+001F (one column to scan).

    The folder stands for the path: the root part of a path matches every file under it, so it
    would only make the column longer (and every search slower). Migration 3 computes the same in SQL.
    """
    parts = [name, title or "", (description or "")[:8192], folder, *triggers[:_MAX_TAGS], *tags[:_MAX_TAGS]]
    return "\x1f".join(p.lower() for p in parts if p)


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None

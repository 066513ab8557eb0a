"""The detail panel's data (one catalog record as plain, JSON-ready **text**) and its curation edits.

Nothing here is HTML. Uploader descriptions are reduced with :func:`lorabench.files.html_to_text`
and every value is a string, number, bool or list of those, shown by the browser with
``textContent``. Long values are clipped so one hostile sidecar cannot bloat the widget state.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

from lorabench.files import html_to_text
from lorabench.widgets._base import MessageError, as_number

__all__ = ["compact_row", "description_text", "detail_of"]

_TEXT_CLIP = 500
_DESCRIPTION_CLIP = 20_000
_NOTES_CLIP = 100_000
_MAX_TAGS = 60
_MAX_ITEMS = 40

#: Curation fields the detail panel may change (``Catalog.update`` keyword arguments).
EDITABLE = ("favorite", "rating", "notes", "tags", "preferred_weight", "nsfw", "trigger_groups")
#: The wire format of one grid row (a list in this order), shared with gallery.js.
ROW_FIELDS = ("id", "name", "title", "base", "algo", "rating", "favorite", "nsfw", "preview", "thumb", "status")


def _clip(value: Any, limit: int = _TEXT_CLIP) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    """A JSON-ready scalar for a fact value."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ", timespec="seconds") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return round(value, 8)
    if isinstance(value, list | tuple):
        return _clip(" x ".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(
            str(v) for v in value))  # fmt: skip
    return _clip(value)


def compact_row(record: dict[str, Any], thumb: str | None) -> list[Any]:
    """One grid row in :data:`ROW_FIELDS` order."""
    return [
        int(record["id"]), _clip(record.get("name")), _clip(record.get("title")), record.get("base_model") or "",
        record.get("algorithm") or "", record.get("rating"), bool(record.get("favorite")), bool(record.get("nsfw")),
        bool(record.get("preview_path")), thumb, record.get("status") or "ok",
    ]  # fmt: skip


def description_text(description: Any) -> str:
    """A description as plain text: HTML (from Civitai sidecars) reduced to text, plain text kept."""
    if not description:
        return ""
    text = str(description)
    if "<" in text or "&" in text:
        text = html_to_text(text)
    return _clip(text.strip(), _DESCRIPTION_CLIP)


def _tags(info: dict[str, Any], record: dict[str, Any]) -> list[list[Any]]:
    """Training tags with their frequencies, most frequent first (a tag cloud's input)."""
    raw = info.get("tags")
    pairs: list[tuple[str, int]] = []
    if isinstance(raw, dict):
        for tag, count in raw.items():
            n = count if isinstance(count, int) and not isinstance(count, bool) else 1
            pairs.append((_clip(tag, 120), max(1, n)))
    if not pairs:
        pairs = [(_clip(t, 120), 1) for t in record.get("training_tags") or []]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    return [[t, n] for t, n in pairs[:_MAX_TAGS]]


def _triggers(info: dict[str, Any], record: dict[str, Any]) -> list[dict[str, str]]:
    words = info.get("trigger_words")
    out: list[dict[str, str]] = []
    if isinstance(words, list):
        for item in words:
            if isinstance(item, dict) and item.get("word"):
                out.append({"word": _clip(item["word"], 200), "source": _clip(item.get("source") or "", 80)})
            elif isinstance(item, str):
                out.append({"word": _clip(item, 200), "source": ""})
    if not out:
        out = [{"word": _clip(w, 200), "source": ""} for w in record.get("trigger_words") or []]
    return out[:_MAX_ITEMS]


_FACTS = (
    ("Epochs", "epochs"), ("Steps", "steps"), ("Images", "images"), ("Resolution", "resolution"),
    ("Network module", "network_module"), ("Optimizer", "optimizer"), ("Learning rate", "learning_rate"),
    ("Trained on", "base_model_name"), ("Trained at", "trained_at"),
)  # fmt: skip
_TRAINING_FACTS = (
    ("Batch size", "batch_size"), ("Mixed precision", "mixed_precision"), ("LR scheduler", "lr_scheduler"),
    ("Noise offset", "noise_offset"), ("Min SNR gamma", "min_snr_gamma"), ("Clip skip", "clip_skip"),
    ("Seed", "seed"), ("Comment", "training_comment"),
)  # fmt: skip


def _facts(info: dict[str, Any], record: dict[str, Any]) -> list[list[Any]]:
    training = info.get("training") if isinstance(info.get("training"), dict) else {}
    facts: list[list[Any]] = []
    for label, key in _FACTS:
        value = record.get(key)
        if value is None:
            value = training.get(key)
        if value not in (None, "", []):
            facts.append([label, _plain(value)])
    for label, key in _TRAINING_FACTS:
        value = training.get(key)
        if value not in (None, "", []):
            facts.append([label, _plain(value)])
    software = training.get("software")
    if isinstance(software, dict) and software.get("name"):
        facts.append(["Trainer", _clip(software["name"], 120)])
    return facts


def _hashes(record: dict[str, Any]) -> list[list[str]]:
    labels = (("SHA-256", "sha256"), ("AutoV2", "autov2"), ("AutoV3", "autov3"), ("Tensor SHA-256", "tensor_sha256"),
              ("Legacy (addnet)", "legacy_hash"))  # fmt: skip
    return [[label, _clip(record[key], 80)] for label, key in labels if record.get(key)]


def _sidecars(info: dict[str, Any]) -> list[dict[str, Any]]:
    block = info.get("sidecars") if isinstance(info.get("sidecars"), dict) else {}
    items = block.get("sidecars") if isinstance(block.get("sidecars"), list) else []
    out = []
    for item in items[:_MAX_ITEMS]:
        if not isinstance(item, dict):
            continue
        fields = item.get("fields") if isinstance(item.get("fields"), dict) else {}
        out.append({
            "kind": _clip(item.get("kind"), 60), "file": _clip(os.path.basename(str(item.get("path") or "")), 200),
            "status": _clip(item.get("status") or "ok", 60), "fields": sorted(_clip(k, 60) for k in fields)[:30],
        })  # fmt: skip
    return out


def _evidence(info: dict[str, Any]) -> list[list[Any]]:
    items = info.get("base_model_evidence")
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            confidence = item.get("confidence")
            out.append([_clip(item.get("source"), 80), _clip(item.get("value"), 80),
                        confidence if isinstance(confidence, int | float) else None])  # fmt: skip
    return out[:_MAX_ITEMS]


def _groups(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [{"name": _clip(g.get("name"), 200), "words": [_clip(w, 200) for w in _strings(g.get("words"))]}
            for g in value if isinstance(g, dict)][:_MAX_ITEMS]  # fmt: skip


def _strings(values: Iterable[Any] | None) -> list[str]:
    return [str(v) for v in values or [] if v is not None]


def detail_of(record: dict[str, Any], *, has_thumbnail: bool | None = None) -> dict[str, Any]:
    """The detail panel's data for one :meth:`Catalog.get` record (text only)."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    weight = record.get("preferred_weight")
    return {
        "id": int(record["id"]),
        "name": _clip(record.get("name")), "title": _clip(record.get("title")),
        "folder": _clip(record.get("folder")), "file": _clip(os.path.basename(str(record.get("path") or ""))),
        "status": _clip(record.get("status") or "ok", 40), "error": _clip(record.get("error_message")),
        "base_model": _clip(record.get("base_model") or "", 60), "base_hint": _clip(record.get("base_model_hint"), 60),
        "algorithm": _clip(record.get("algorithm") or "", 60), "dora": bool(record.get("dora")),
        "rank": record.get("rank"), "alpha": _plain(record.get("alpha")), "format": _clip(record.get("format"), 60),
        "dtype": _clip(record.get("dtype"), 20), "size": record.get("size"),
        "triggers": _triggers(info, record), "tags": _tags(info, record), "facts": _facts(info, record),
        "hashes": _hashes(record), "sidecars": _sidecars(info), "evidence": _evidence(info),
        "description": description_text(record.get("description")),
        "has_preview": bool(record.get("preview_path")) if has_thumbnail is None else has_thumbnail,
        "favorite": bool(record.get("favorite")), "rating": record.get("rating"),
        "notes": _clip(record.get("notes"), _NOTES_CLIP),
        "user_tags": [_clip(t, 256) for t in _strings(record.get("user_tags"))][:200],
        "preferred_weight": float(weight) if isinstance(weight, int | float) else None,
        "nsfw": bool(record.get("nsfw")), "trigger_groups": _groups(record.get("trigger_groups")),
    }  # fmt: skip


def curation_value(field: str, value: Any) -> Any:
    """Shape checks for browser-sent curation values (the catalog validates the rest)."""
    if field in ("favorite",) and not isinstance(value, bool):
        raise MessageError("favorite must be true or false")
    if field == "nsfw" and value is not None and not isinstance(value, bool):
        raise MessageError("nsfw must be true, false or null")
    if field == "rating" and value is not None and (isinstance(value, bool) or value not in range(1, 6)):
        raise MessageError("rating must be 1-5 or null")
    if field == "notes":
        if value is not None and not isinstance(value, str):
            raise MessageError("notes must be text")
        if value is not None and len(value) > 100_000:
            raise MessageError("notes are limited to 100,000 characters")
    if field == "tags" and (not isinstance(value, list) or len(value) > 200
                            or not all(isinstance(v, str) and len(v) <= 256 for v in value)):  # fmt: skip
        raise MessageError("tags must be a list of at most 200 short strings")
    if field == "preferred_weight" and value is not None:
        number = as_number(value)
        if number is None or not -10 <= number <= 10:
            raise MessageError("preferred_weight must be a number from -10 to 10, or null")
        value = number
    if field == "trigger_groups":
        if not isinstance(value, list) or len(value) > 50:
            raise MessageError("trigger_groups must be a list of at most 50 groups")
        for group in value:
            words = group.get("words") if isinstance(group, dict) else None
            if not isinstance(words, list) or len(words) > 100 or not isinstance(group.get("name", ""), str):
                raise MessageError('each trigger group must be {"name": text, "words": [text, …]}')
            if not all(isinstance(w, str) and len(w) <= 256 for w in words):
                raise MessageError("trigger words must be short strings")
    return value

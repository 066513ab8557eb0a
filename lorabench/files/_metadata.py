"""Typed views of the trainer metadata in a safetensors header.

kohya's ``ss_*`` values are all strings: ``"None"``, ``"True"``, numbers, Python
tuple reprs such as ``"(512, 512)"``, lists, and ASCII-escaped JSON. They are
parsed under size caps; on any failure the raw string is kept.
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "guess_trigger_words",
    "merge_tag_frequency",
    "parse_modelspec",
    "parse_ss_value",
    "parse_training",
]

_MAX_JSON = 1 << 20  # parse nested JSON values up to 1 MiB
_MAX_LITERAL = 64 * 1024  # Python-literal values (tuples) up to 64 KiB
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.IGNORECASE)
_INT = re.compile(r"[+-]?\d+")
_DATASET_DIR = re.compile(r"^\s*(\d+)_(.+?)\s*$")


def parse_ss_value(raw: str) -> Any:
    """Parse one kohya metadata string into its Python value.

    ``"None"`` → ``None``; ``"True"``/``"False"`` → bool; integers and floats;
    ``"(512, 512)"`` → ``[512, 512]``; JSON objects/lists → dicts/lists. Anything
    that does not parse (or is over the size caps, or nests too deeply) comes back
    unchanged as the raw string.
    """
    text = raw.strip()
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        value = float(text)
        return value if value == value and abs(value) != float("inf") else raw
    if text[:1] in "[{" and len(text) <= _MAX_JSON:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    if text[:1] in "([" and len(text) <= _MAX_LITERAL:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
            return raw
        return list(value) if isinstance(value, tuple) else value
    return raw


# (output key, metadata key) for the typed training facts people filter and sort on.
_TRAINING_KEYS: list[tuple[str, str]] = [
    ("output_name", "ss_output_name"), ("network_module", "ss_network_module"),
    ("network_dim", "ss_network_dim"), ("network_alpha", "ss_network_alpha"),
    ("network_dropout", "ss_network_dropout"), ("network_args", "ss_network_args"),
    ("base_model_name", "ss_sd_model_name"), ("base_model_version", "ss_base_model_version"),
    ("base_model_hash", "ss_sd_model_hash"), ("base_model_sha256", "ss_new_sd_model_hash"),
    ("vae_name", "ss_vae_name"), ("v2", "ss_v2"), ("epochs", "ss_num_epochs"), ("epoch", "ss_epoch"),
    ("steps", "ss_steps"), ("max_train_steps", "ss_max_train_steps"),
    ("images", "ss_num_train_images"), ("reg_images", "ss_num_reg_images"),
    ("batches_per_epoch", "ss_num_batches_per_epoch"),
    ("batch_size", "ss_batch_size_per_device"), ("total_batch_size", "ss_total_batch_size"),
    ("gradient_accumulation_steps", "ss_gradient_accumulation_steps"),
    ("learning_rate", "ss_learning_rate"), ("unet_lr", "ss_unet_lr"),
    ("text_encoder_lr", "ss_text_encoder_lr"), ("lr_scheduler", "ss_lr_scheduler"),
    ("lr_warmup_steps", "ss_lr_warmup_steps"), ("optimizer", "ss_optimizer"),
    ("mixed_precision", "ss_mixed_precision"), ("seed", "ss_seed"), ("clip_skip", "ss_clip_skip"),
    ("noise_offset", "ss_noise_offset"), ("min_snr_gamma", "ss_min_snr_gamma"),
    ("max_token_length", "ss_max_token_length"), ("caption_dropout_rate", "ss_caption_dropout_rate"),
    ("training_comment", "ss_training_comment"), ("session_id", "ss_session_id"),
    ("sd_scripts_commit", "ss_sd_scripts_commit_hash"), ("model_type", "ss_model_type"),
    ("guidance_scale", "ss_guidance_scale"), ("loss_type", "ss_loss_type"),
]  # fmt: skip


def _timestamp(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e11:
        return datetime.fromtimestamp(value, tz=UTC).isoformat().replace("+00:00", "Z")
    return None


def parse_training(metadata: dict[str, str]) -> dict[str, Any]:
    """Typed training facts from ``ss_*`` (and ai-toolkit) metadata.

    Returns a dict with the typed keys (``epochs``, ``steps``, ``images``,
    ``resolution`` ``[w, h]``, learning rates, ``optimizer``, ``network_args`` …,
    ``started_at``/``finished_at`` as ISO-8601 UTC), ``parsed`` (every ``ss_*`` key
    parsed) and ``raw`` (every ``ss_*`` key as stored).
    """
    raw = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    parsed = {k: parse_ss_value(v) for k, v in raw.items()}
    out: dict[str, Any] = {}
    for key, meta_key in _TRAINING_KEYS:
        if meta_key in parsed:
            out[key] = parsed[meta_key]
    for key in ("network_module", "optimizer", "lr_scheduler", "output_name", "training_comment",
                "base_model_name", "mixed_precision"):  # fmt: skip
        if key in out and out[key] is not None:
            out[key] = str(raw.get(_key_of(key), out[key]))
    datasets = parsed.get("ss_datasets")
    resolution = parsed.get("ss_resolution")
    if resolution is None and isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
        resolution = datasets[0].get("resolution")
        out.setdefault("batch_size", datasets[0].get("batch_size_per_device"))
    if isinstance(resolution, list) and len(resolution) == 2:
        out["resolution"] = [int(x) for x in resolution if isinstance(x, int | float)]
    elif isinstance(resolution, int):
        out["resolution"] = [resolution, resolution]
    out["started_at"] = _timestamp(parsed.get("ss_training_started_at"))
    out["finished_at"] = _timestamp(parsed.get("ss_training_finished_at"))
    info = _json_object(metadata.get("training_info"))
    if info:
        out.setdefault("steps", info.get("step"))
        out.setdefault("epoch", info.get("epoch"))
    software = _json_object(metadata.get("software"))
    if software:
        out["software"] = software
    elif "ss_sd_scripts_commit_hash" in raw or "ss_network_module" in raw:
        out["software"] = {"name": "sd-scripts"}
    out["raw"] = raw
    out["parsed"] = parsed
    return out


def _key_of(key: str) -> str:
    return dict(_TRAINING_KEYS)[key]


def _json_object(raw: str | None) -> dict[str, Any] | None:
    if not raw or len(raw) > _MAX_JSON or raw.lstrip()[:1] != "{":
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def parse_modelspec(metadata: dict[str, str]) -> dict[str, Any]:
    """The ``modelspec.*`` keys, with tags split and the thumbnail reported by size."""
    spec = {k.removeprefix("modelspec."): v for k, v in metadata.items() if k.startswith("modelspec.")}
    if not spec:
        return {}
    out: dict[str, Any] = {k: v for k, v in spec.items() if k != "thumbnail"}
    if "tags" in spec:
        out["tags"] = [t.strip() for t in spec["tags"].split(",") if t.strip()]
    if "thumbnail" in spec:
        out["thumbnail"] = _thumbnail_facts(spec["thumbnail"])
    return out


def _thumbnail_facts(data_url: str) -> dict[str, Any]:
    match = re.match(r"data:([\w./+-]+);base64,", data_url)
    if not match:
        return {"mime": None, "bytes": None, "chars": len(data_url)}
    payload = data_url[match.end() :]
    try:
        size = len(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        size = None
    return {"mime": match.group(1), "bytes": size, "chars": len(data_url)}


def merge_tag_frequency(metadata: dict[str, str]) -> dict[str, int]:
    """Training tag → count over all datasets (``ss_tag_frequency`` or ``ss_datasets``)."""
    counts: Counter[str] = Counter()
    freq = parse_ss_value(metadata.get("ss_tag_frequency", "None"))
    sources: list[Any] = []
    if isinstance(freq, dict):
        sources = list(freq.values())
    else:
        datasets = parse_ss_value(metadata.get("ss_datasets", "None"))
        if isinstance(datasets, list):
            sources = [d.get("tag_frequency") for d in datasets if isinstance(d, dict)]
            sources = [v for s in sources if isinstance(s, dict) for v in s.values()]
    for tags in sources:
        if not isinstance(tags, dict):
            continue
        for tag, count in tags.items():
            if isinstance(tag, str) and tag.strip() and type(count) is int:
                counts[tag.strip()] += count
    return dict(counts.most_common())


def dataset_dir_names(metadata: dict[str, str]) -> list[str]:
    """Training folder names (``"10_sks dog"``) found in the metadata, in order."""
    names: list[str] = []
    for key in ("ss_tag_frequency", "ss_dataset_dirs"):
        value = parse_ss_value(metadata.get(key, "None"))
        if isinstance(value, dict):
            names.extend(k for k in value if isinstance(k, str))
    datasets = parse_ss_value(metadata.get("ss_datasets", "None"))
    if isinstance(datasets, list):
        for d in datasets:
            for sub in (d.get("subsets") or []) if isinstance(d, dict) else []:
                if isinstance(sub, dict) and isinstance(sub.get("image_dir"), str):
                    names.append(sub["image_dir"])
    return list(dict.fromkeys(names))


def guess_trigger_words(metadata: dict[str, str]) -> list[str]:
    """A best guess at trigger words from kohya folder names (``10_sks dog`` → ``sks dog``)."""
    words: list[str] = []
    for name in dataset_dir_names(metadata):
        match = _DATASET_DIR.match(name.replace("\\", "/").rsplit("/", 1)[-1])
        if match and match.group(2).strip():
            words.append(match.group(2).strip())
    return list(dict.fromkeys(words))

"""Requests as the queue stores them: canonical JSON, a fixed seed, and the idempotency key.

A job's request is stored field by field (``None`` kept, so every backend still applies its
own flavor's defaults), with the seed fixed at submit time: a request with ``seed=-1`` gets a
random seed then, so the job — and a resumed job — always draws the same picture. The job key
is the sha256 of the canonical JSON (sorted keys, no whitespace) of the kind and the request.
Nothing here ever holds credentials: they live in the backend's client, from the environment.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from lorabench.errors import QueueError
from lorabench.sdnext import Img2ImgRequest, Txt2ImgRequest

__all__ = ["Kind", "build_prompt", "canonical_request", "job_key", "request_from_json", "request_to_json"]

Kind = str
"""``"txt2img"`` or ``"img2img"``."""

_MAX_SEED = 4294967294
_BYTES_FIELDS = ("init_images", "mask")
_LORA_NAME = re.compile(r"^[^<>:\s][^<>:]*$")


def request_to_json(request: Txt2ImgRequest) -> tuple[Kind, dict[str, Any]]:
    """The request's fields as JSON-ready values (image bytes as base64) and its kind."""
    if not isinstance(request, Txt2ImgRequest):
        raise TypeError(f"expected a Txt2ImgRequest or Img2ImgRequest, not {type(request).__name__}")
    kind = "img2img" if isinstance(request, Img2ImgRequest) else "txt2img"
    data: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        value = getattr(request, f.name)
        if f.name == "init_images":
            value = [base64.b64encode(v).decode("ascii") for v in value]
        elif f.name == "mask" and value is not None:
            value = base64.b64encode(value).decode("ascii")
        data[f.name] = value
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise QueueError(
            f"The request cannot be stored: {exc}", hint="Use JSON values (str, numbers, lists, dicts) only."
        ) from None
    return kind, data


def request_from_json(kind: Kind, data: Mapping[str, Any]) -> Txt2ImgRequest:
    """Rebuild the request a job stored (the sdnext models decode the base64 images)."""
    cls = {"txt2img": Txt2ImgRequest, "img2img": Img2ImgRequest}.get(kind)
    if cls is None:
        raise QueueError(f"Unknown job kind {kind!r}")
    values = dict(data)
    extra = values.pop("extra_fields", None) or {}
    if cls is Txt2ImgRequest:
        values = {k: v for k, v in values.items() if k not in _BYTES_FIELDS}
    try:
        request = cls.from_json(values)
    except ValueError as exc:
        raise QueueError(f"The stored {kind} request is damaged: {exc}") from None
    return dataclasses.replace(request, extra_fields=dict(extra))


def canonical_request(request: Txt2ImgRequest | Mapping[str, Any] | str) -> tuple[Kind, dict[str, Any], int]:
    """``(kind, stored request, seed)`` with the seed (and a used subseed) fixed.

    ``request`` may be a request object, a txt2img payload mapping, or a bare prompt.
    """
    if isinstance(request, str):
        request = Txt2ImgRequest(prompt=request)
    elif isinstance(request, Mapping):
        request = Txt2ImgRequest.from_json(dict(request))
    kind, data = request_to_json(request)
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        seed = secrets.randbelow(_MAX_SEED)
    data["seed"] = int(seed)
    sub = data.get("subseed")
    if float(data.get("subseed_strength") or 0) > 0 and (not isinstance(sub, int) or sub < 0):
        data["subseed"] = secrets.randbelow(_MAX_SEED)
    return kind, data, int(seed)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def job_key(kind: Kind, data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``kind`` and the stored request (seed included)."""
    return hashlib.sha256(_canonical_json({"kind": kind, "request": data}).encode("utf-8")).hexdigest()


def dumps(data: Mapping[str, Any]) -> str:
    """Canonical JSON text for storage."""
    return _canonical_json(data)


def build_prompt(prompt: str, loras: Iterable[tuple[str, float]] = ()) -> str:
    """``prompt`` followed by ``<lora:NAME:W>`` tags (the portable SD.Next / A1111 form)."""
    tags = []
    for name, weight in loras:
        name = str(name).strip()
        if not _LORA_NAME.match(name):
            raise QueueError(f"Invalid LoRA name {name!r}", hint="A LoRA name has no '<', '>' or ':' characters.")
        tags.append(f"<lora:{name}:{float(weight):g}>")
    return " ".join([prompt.strip(), *tags]).strip()

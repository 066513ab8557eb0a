"""Typed generation requests and results of the SD.Next / AUTOMATIC1111 HTTP API (sdnext-api.md §3).

Requests turn into JSON with ``to_payload(flavor)``: every core generation value is sent
explicitly, and values left as ``None`` take the *server flavor's* documented default
(SD.Next: 20 steps, CFG 6.0, 1024x1024, sampler ``"Default"``; A1111: 50, 7.0, 512x512,
``"Euler"``). Results are built with ``from_json()``, which validates the shape and raises
:class:`~lorabench.errors.ProtocolError` on anything unexpected.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, fields
from typing import Any

from lorabench.sdnext._facts import Flavor
from lorabench.sdnext._images import GeneratedImage
from lorabench.sdnext._parse import as_list, as_obj, fail, get_int

__all__ = ["FLAVOR_DEFAULTS", "GenerationResult", "Img2ImgRequest", "Txt2ImgRequest", "map_sampler"]

FLAVOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "sdnext": {
        "steps": 20,
        "cfg_scale": 6.0,
        "width": 1024,
        "height": 1024,
        "sampler_name": "Default",
        "denoising_strength": 0.5,
    },
    "a1111": {
        "steps": 50,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "sampler_name": "Euler",
        "denoising_strength": 0.75,
    },
}
"""The documented server defaults, used for request fields left as ``None``."""

# Same sampler, different spelling (sdnext-api.md §9).
_SAMPLER_SPELLING: dict[str, dict[str, str]] = {
    "a1111": {"LMSD": "LMS"},
    "sdnext": {"LMS": "LMSD"},
}


def map_sampler(name: str, flavor: Flavor) -> str:
    """Spell a sampler name the way ``flavor`` does (SD.Next ``LMSD`` ↔ A1111 ``LMS``)."""
    return _SAMPLER_SPELLING.get(flavor, {}).get(name, name)


# --------------------------------------------------------------------------- requests


@dataclass
class Txt2ImgRequest:
    """A txt2img request. ``None`` means "the server flavor's documented default", sent explicitly.

    ``extra_fields`` are merged into the payload last (for fields this class does not model,
    e.g. ``enable_hr``); ``override_settings`` is SD.Next's per-request option override.
    """

    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    """A1111's separate scheduler (ignored by SD.Next, so only sent to A1111)."""
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    tiling: bool = False
    send_images: bool = True
    save_images: bool = False
    override_settings: dict[str, Any] = field(default_factory=dict)
    extra_fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "width", "height", "batch_size", "n_iter"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")

    def to_payload(self, flavor: Flavor = "sdnext") -> dict[str, Any]:
        """The JSON body for ``flavor``, every core value explicit."""
        defaults = FLAVOR_DEFAULTS[flavor]
        payload: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": defaults["steps"] if self.steps is None else self.steps,
            "cfg_scale": float(defaults["cfg_scale"] if self.cfg_scale is None else self.cfg_scale),
            "width": defaults["width"] if self.width is None else self.width,
            "height": defaults["height"] if self.height is None else self.height,
            "sampler_name": map_sampler(self.sampler_name or defaults["sampler_name"], flavor),
            "seed": self.seed,
            "subseed": self.subseed,
            "subseed_strength": self.subseed_strength,
            "batch_size": self.batch_size,
            "n_iter": self.n_iter,
            "clip_skip": self.clip_skip,
            "tiling": self.tiling,
            "send_images": self.send_images,
            "save_images": self.save_images,
            "override_settings": dict(self.override_settings),
            "override_settings_restore_afterwards": True,
        }
        if flavor == "a1111" and self.scheduler:
            payload["scheduler"] = self.scheduler
        payload.update(self._extra_payload(flavor))
        payload.update(self.extra_fields)
        return payload

    def _extra_payload(self, flavor: Flavor) -> dict[str, Any]:
        return {}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Txt2ImgRequest:
        """Rebuild a request from a payload (unknown keys go to ``extra_fields``)."""
        return cls(**_split_known(cls, data))


def _split_known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)} - {"extra_fields"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names and k != "override_settings_restore_afterwards"}
    return {**known, "extra_fields": extra}


@dataclass
class Img2ImgRequest(Txt2ImgRequest):
    """An img2img request: txt2img's fields plus the init images (raw bytes, any PNG/JPEG/WebP)."""

    init_images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    denoising_strength: float | None = None
    include_init_images: bool = False
    resize_mode: int = 0

    def _extra_payload(self, flavor: Flavor) -> dict[str, Any]:
        strength = self.denoising_strength
        return {
            "init_images": [base64.b64encode(img).decode("ascii") for img in self.init_images],
            "mask": None if self.mask is None else base64.b64encode(self.mask).decode("ascii"),
            "denoising_strength": FLAVOR_DEFAULTS[flavor]["denoising_strength"] if strength is None else strength,
            "include_init_images": self.include_init_images,
            "resize_mode": self.resize_mode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Img2ImgRequest:
        """Rebuild a request from a payload; base64 images are decoded."""
        kwargs = _split_known(cls, data)
        try:
            kwargs["init_images"] = [base64.b64decode(s, validate=True) for s in kwargs.get("init_images") or []]
            if kwargs.get("mask") is not None:
                kwargs["mask"] = base64.b64decode(kwargs["mask"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise ValueError(f"invalid base64 image: {exc}") from exc
        return cls(**kwargs)


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationResult:
    """The answer of txt2img / img2img.

    ``images`` may start with a grid (``index_of_first_image == 1``, SD.Next does so for
    several images with ``save_images``); :attr:`outputs` skips it. ``interrupted`` is True
    when this client interrupted or skipped while the call ran (the server then returns what
    it had, possibly no image at all).
    """

    images: list[GeneratedImage]
    info: dict[str, Any]
    parameters: dict[str, Any]
    seed: int | None = None
    all_seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    interrupted: bool = False
    index_of_first_image: int = 0

    @property
    def outputs(self) -> list[GeneratedImage]:
        """The generated images without a leading grid."""
        return self.images[self.index_of_first_image :]

    @classmethod
    def from_json(cls, data: object, *, interrupted: bool = False) -> GenerationResult:
        """Validate and decode a txt2img/img2img response (does not judge emptiness)."""
        body = as_obj(data, "the generation response")
        raw_images = as_list(body.get("images"), "'images'")
        parameters = body.get("parameters") or {}
        as_obj(parameters, "'parameters'")
        info_text = body.get("info")
        if not isinstance(info_text, str):
            raise fail("'info' is not a JSON string")
        info: dict[str, Any] = {}
        if info_text.strip():
            try:
                info = as_obj(json.loads(info_text), "'info'")
            except (ValueError, RecursionError) as exc:
                raise fail(f"'info' is not valid JSON: {exc}") from exc
        images = [GeneratedImage.from_base64(s, index=i) for i, s in enumerate(raw_images)]
        seeds = info.get("all_seeds") or []
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise fail("'all_seeds' is not a list of integers")
        texts = info.get("infotexts") or []
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise fail("'infotexts' is not a list of strings")
        return cls(
            images=images,
            info=info,
            parameters=parameters,
            seed=get_int(info, "seed"),
            all_seeds=list(seeds),
            infotexts=list(texts),
            interrupted=interrupted,
            index_of_first_image=min(max(get_int(info, "index_of_first_image", 0), 0), len(images)),
        )

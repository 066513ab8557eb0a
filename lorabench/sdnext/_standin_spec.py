"""The stand-in's fixed facts: version, checkpoints, samplers, request fields and the error shape."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["A1111_SAMPLERS", "COMMIT", "MODELS", "NO_CONTENT", "SDNEXT_SAMPLERS", "error_body", "request_spec"]

COMMIT = "058a7f0"
NO_CONTENT = object()
"""Marker for a 204 answer without a body."""


def _model(name: str, cls: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "title": f"{name} [{digest[:10]}]",
        "model_name": name,
        "filename": f"/models/Stable-diffusion/{name}.safetensors",
        "type": "safetensors",
        "sha256": digest,
        "hash": digest[:10],
        "config": None,
        "_class": cls,
    }


MODELS = [_model("sdxl-base-1.0", "StableDiffusionXLPipeline"), _model("sd15-pruned", "StableDiffusionPipeline")]
SDNEXT_SAMPLERS = {
    "Default": "EulerDiscreteScheduler",
    "Euler a": "EulerAncestralDiscreteScheduler",
    "Euler": "EulerDiscreteScheduler",
    "Heun": "HeunDiscreteScheduler",
    "LMSD": "LMSDiscreteScheduler",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ 2M SDE": "DPMSolverSDEScheduler",
    "DPM++ SDE": "DPMSolverSinglestepScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "DDIM": "DDIMScheduler",
    "DEIS": "DEISMultistepScheduler",
    "LCM": "LCMScheduler",
    "TCD": "TCDScheduler",
}
A1111_SAMPLERS = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM++ 2S a": ["k_dpmpp_2s_a"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ SDE": ["k_dpmpp_sde"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM fast": ["k_dpm_fast"],
    "DPM adaptive": ["k_dpm_ad"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
}


def request_spec(flavor: str, kind: str) -> dict[str, tuple[str, Any]]:
    sd = flavor == "sdnext"
    spec: dict[str, tuple[str, Any]] = {
        "prompt": ("str", ""),
        "negative_prompt": ("str", ""),
        "styles": ("list", None),
        "seed": ("int", -1),
        "subseed": ("int", -1),
        "subseed_strength": ("float", 0.0),
        "seed_resize_from_h": ("int", -1),
        "seed_resize_from_w": ("int", -1),
        "sampler_name": ("str", "Default" if sd else None),
        "sampler_index": ("int" if sd else "str", 0 if sd else "Euler"),
        "batch_size": ("int", 1),
        "n_iter": ("int", 1),
        "steps": ("int", 20 if sd else 50),
        "cfg_scale": ("float", 6.0 if sd else 7.0),
        "width": ("int", 1024 if sd else 512),
        "height": ("int", 1024 if sd else 512),
        "clip_skip": ("int", 1),
        "tiling": ("bool", False),
        "denoising_strength": ("float", (0.5 if sd else 0.75) if kind == "img2img" else (0.3 if sd else None)),
        "send_images": ("bool", True),
        "save_images": ("bool", False),
        "override_settings": ("dict", dict),
        "override_settings_restore_afterwards": ("bool", True),
        "script_name": ("str", "" if sd else None),
        "script_args": ("list", list),
        "alwayson_scripts": ("dict", dict),
        "samples_format": ("str", None),
        "jpeg_quality": ("int", None),
        "keep_incomplete": ("bool", None),
        "return_grid": ("bool", None),
    }
    if sd:
        spec.update(
            {
                "cfg_end": ("float", 1.0),
                "cfg_rescale": ("float", 0.0),
                "vae_type": ("str", "Full"),
                "sd_model_checkpoint": ("str", None),
                "extra": ("dict", dict),
            }
        )
    else:
        spec.update({"scheduler": ("str", None), "restore_faces": ("bool", None), "enable_hr": ("bool", False)})
        spec["cfg_end"], spec["cfg_rescale"] = ("float", 1.0), ("float", 0.0)
    if kind == "img2img":
        spec.update(
            {
                "init_images": ("list", None),
                "mask": ("str", None),
                "include_init_images": ("bool", False),
                "resize_mode": ("int", 0),
                "mask_blur": ("int", 4),
                "inpainting_fill": ("int", 0),
            }
        )
    return spec


def error_body(flavor: str, status: int, detail: str, error: str = "HTTPException", errors: str = "") -> dict[str, Any]:
    """SD.Next's error shape (A1111: the same without ``code``)."""
    body: dict[str, Any] = {
        "error": error,
        "code": status,
        "detail": detail,
        "body": "",
        "errors": errors or (f"{status}: {detail}" if error == "HTTPException" else ""),
    }
    if flavor == "a1111":
        del body["code"]
    return body

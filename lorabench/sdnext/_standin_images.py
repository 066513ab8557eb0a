"""The stand-in's pictures: deterministic drawings, encoding with metadata, and infotext (§3.3, §8).

A picture depends only on the seed, the prompt (LoRA tags removed) and the LoRAs applied
with their weights: the background gradient comes from ``sha256(seed, prompt)``, and every
LoRA adds shapes whose colour, kind, count and position come from its name and whose size
and opacity grow with its weight, so different LoRAs and weights look visibly different.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

__all__ = ["encode", "grid", "infotext", "preview", "render"]

_TAG = re.compile(r"<\w+:[^>]+>")
_USER_COMMENT, _EXIF_IFD = 0x9286, 0x8769
_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def render(seed: int, prompt: str, loras: Sequence[tuple[str, float]], width: int, height: int) -> Image.Image:
    """Draw the picture for one seed (RGB, ``width`` x ``height``)."""
    text = " ".join(_TAG.sub(" ", prompt).split())
    bg = _digest("background", seed, text)
    corners = Image.new("RGB", (2, 2))
    for i, xy in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        corners.putpixel(xy, tuple(bg[3 * i : 3 * i + 3]))
    img = corners.resize((width, height), Image.Resampling.BILINEAR).convert("RGBA")
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    side = min(width, height)
    for k in range(3):  # faint seed-dependent discs: different seeds differ even with no LoRA
        d = _digest("seed-disc", seed, text, k)
        cx, cy, r = d[0] * width // 255, d[1] * height // 255, side * (0.05 + d[2] / 255 * 0.15)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(d[3], d[4], d[5], 60))
    for name, weight in loras:
        _draw_lora(draw, name, weight, width, height, side)
    img.alpha_composite(overlay)
    return img.convert("RGB")


def _draw_lora(draw: ImageDraw.ImageDraw, name: str, weight: float, width: int, height: int, side: int) -> None:
    d = _digest("lora", name)
    colour = [64 + c * 191 // 255 for c in d[0:3]]
    if weight < 0:
        colour = [255 - c for c in colour]
    strength = min(abs(weight), 2.0)
    alpha = int(255 * min(1.0, 0.2 + 0.4 * strength))
    kind, count = d[3] % 3, 2 + d[4] % 4
    for k in range(count):
        p = _digest("lora-shape", name, k)
        cx, cy = p[0] * width // 255, p[1] * height // 255
        r = side * (0.04 + p[2] / 255 * 0.08) * (0.25 + strength)
        fill = (*colour, alpha)
        if kind == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif kind == 1:
            draw.rectangle((cx - r, cy - r * 0.6, cx + r, cy + r * 0.6), fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)


def preview(final: Image.Image, fraction: float, size: int | None = None) -> Image.Image:
    """A partly "denoised" picture: grey blended towards ``final`` by ``fraction``."""
    img = (
        final
        if size is None
        else final.resize(
            (max(1, size * final.width // max(final.size)), max(1, size * final.height // max(final.size)))
        )
    )
    grey = Image.new("RGB", img.size, (128, 128, 128))
    return Image.blend(grey, img, max(0.0, min(1.0, fraction)))


def grid(images: Sequence[Image.Image]) -> Image.Image:
    """Images side by side in a near-square grid (as SD.Next's ``return_grid``)."""
    cols = 1
    while cols * cols < len(images):
        cols += 1
    rows = -(-len(images) // cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (w * cols, h * rows), (0, 0, 0))
    for i, img in enumerate(images):
        sheet.paste(img, ((i % cols) * w, (i // cols) * h))
    return sheet


def encode(img: Image.Image, samples_format: str, text: str, quality: int = 90) -> bytes:
    """Encode like SD.Next: PNG with a ``parameters`` tEXt chunk; JPEG/WebP with EXIF
    ``UserComment`` = ``b"UNICODE\\0"`` + UTF-16-BE text."""
    fmt = _FORMATS.get(samples_format.lower(), "JPEG")
    out = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        info.add_text("parameters", text)
        img.save(out, "PNG", pnginfo=info, compress_level=1)
    else:
        exif = Image.Exif()
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\x00" + text.encode("utf-16-be")
        img.save(out, fmt, quality=max(1, min(100, quality)), exif=exif.tobytes())
    return out.getvalue()


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _num(value: float) -> str:
    return f"{value:g}"


def infotext(
    flavor: str,
    p: dict[str, Any],
    *,
    seed: int,
    index: int,
    total: int,
    model: dict[str, str],
    loras: Sequence[tuple[str, str]],
    commit: str,
    add_hashes: bool,
    img2img: bool,
) -> str:
    """The infotext of one image, keys in the server's own order (§8).

    ``loras`` are ``(name, hash)`` pairs of the LoRAs actually applied.
    """
    lines = [p["prompt"]]
    if p["negative_prompt"]:
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    items: dict[str, object] = {}
    size = f"{p['width']}x{p['height']}"
    if flavor == "a1111":
        items.update(
            {
                "Steps": p["steps"],
                "Sampler": p["sampler_name"],
                "Schedule type": p.get("scheduler") or "Automatic",
                "CFG scale": _num(p["cfg_scale"]),
                "Seed": seed,
                "Size": size,
                "Model hash": model["hash"],
                "Model": model["name"],
            }
        )
        if img2img:
            items["Denoising strength"] = _num(p["denoising_strength"])
        if p["clip_skip"] > 1:
            items["Clip skip"] = p["clip_skip"]
        if p["batch_size"] > 1:
            items.update({"Batch size": p["batch_size"], "Batch pos": index % p["batch_size"]})
        if loras:
            items["Lora hashes"] = ", ".join(f"{name}: {digest[:12]}" for name, digest in loras)
        items["Version"] = "v1.10.1"
    else:
        items.update({"Steps": p["steps"], "Size": size})
        if p["sampler_name"] != "Default":
            items["Sampler"] = p["sampler_name"]
        items.update(
            {
                "Scheduler": p["_scheduler_class"],
                "Seed": seed,
                "CFG scale": _num(p["cfg_scale"]),
                "CFG rescale": p["cfg_rescale"],
            }
        )
        if p["cfg_end"] < 1:
            items["CFG end"] = _num(p["cfg_end"])
        if p["clip_skip"] > 1:
            items["CLiP-skip"] = p["clip_skip"]
        if total > 1:
            items["Batch"] = f"{p['n_iter']}x{p['batch_size']}"
        items.update(
            {
                "App": "SD.Next",
                "Version": commit,
                "Operations": "img2img" if img2img else "txt2img",
                "Model": model["name"].replace(",", "").replace(":", ""),
                "Model hash": model["hash"],
            }
        )
        if total > 1:
            items["Index"] = index
        if img2img:
            items["Denoising strength"] = _num(p["denoising_strength"])
        if loras:
            items["LoRA networks"] = ", ".join(name for name, _ in loras)
            if add_hashes:
                items["LoRA hashes"] = ", ".join(digest[:8] for _, digest in loras if digest)
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in items.items() if v not in (None, "")))
    return "\n".join(lines)

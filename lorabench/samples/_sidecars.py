"""Sidecar files and preview images other apps leave beside a LoRA (lora-files.md §9)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._metadata import rng_for

__all__ = [
    "PREVIEW_KINDS",
    "SIDECAR_KINDS",
    "SidecarInfo",
    "write_preview",
    "write_sidecars",
]

#: Sidecar kinds, in the order the showcase cycles through them.
SIDECAR_KINDS = (
    "civitai_info",  # <stem>.civitai.info, current API shape
    "civitai_info_2023",  # <stem>.civitai.info, 2023 shape
    "civitai_info_empty",  # <stem>.civitai.info = {} (looked up, not found)
    "a1111_json",  # <stem>.json
    "lora_manager",  # <stem>.metadata.json
    "stability_matrix",  # <stem>.cm-info.json
    "txt",  # <stem>.txt
    "description_txt",  # <stem>.description.txt
    "md",  # <stem>.md
)
#: Preview kinds → file suffix appended to the stem.
PREVIEW_KINDS = {
    "png": ".png",  # A1111 infotext in PNG tEXt "parameters"
    "preview_png": ".preview.png",  # Civitai Helper
    "jpeg": ".jpg",  # SD.Next, EXIF UserComment
    "webp": ".webp",  # SD.Next, EXIF UserComment
    "preview_jpeg": ".preview.jpeg",
}

_AIR_ECO = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux1": "flux1"}
_SD_VERSION = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}
# Base checkpoints used in preview infotext: (name, AutoV2). SD1.5 / SDXL are the
# well-known public values; the others are synthetic sample values.
_CHECKPOINTS = {
    "sd1": ("v1-5-pruned-emaonly", "6ce0161689"),
    "sdxl": ("sd_xl_base_1.0", "31e35c80fc"),
}
_NEGATIVE = "lowres, bad anatomy, bad hands, text, error, worst quality, jpeg artifacts"


@dataclass
class SidecarInfo:
    """Everything the sidecar writers need to know about one LoRA file."""

    path: Path
    title: str
    base_model: str
    civitai_base: str
    algorithm: str
    dora: bool
    trigger_words: list[str]
    tags: list[str]
    file_bytes_sha256: str
    tensor_sha256: str
    size: int
    seed: int
    sshs_model_hash: str | None = None
    crc32: str = ""
    legacy: str = ""
    preview: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(".safetensors")

    @property
    def model_id(self) -> int:
        return 100000 + rng_for("model", self.seed, self.stem).randrange(900000)

    @property
    def version_id(self) -> int:
        return 200000 + rng_for("version", self.seed, self.stem).randrange(1800000)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _model_type(info: SidecarInfo) -> str:
    if info.dora:
        return "DoRA"
    return "LORA" if info.algorithm in ("lora", "oft") else "LoCon"


def description_html(info: SidecarInfo) -> str:
    trig = ", ".join(info.trigger_words)
    use = f"<p>Trigger: <strong>{trig}</strong></p>" if trig else "<p>No trigger word needed.</p>"
    return (
        f"<p><strong>{info.title}</strong> is a {info.civitai_base} LoRA.</p>{use}"
        "<ul><li>Weight 0.6 to 0.9</li><li>Works with most samplers</li></ul>"
        f'<p>More examples on <a target="_blank" rel="ugc" '
        f'href="https://example.com/lora/{info.stem}">my page</a>.</p>'
    )


def _infotext(info: SidecarInfo, app: str) -> str:
    rng = rng_for("infotext", info.seed, info.stem)
    name = info.stem
    prompt = ", ".join([*info.trigger_words, *info.tags[:3], "masterpiece", f"<lora:{name}:0.8>"])
    ckpt, ckpt_hash = _CHECKPOINTS.get(
        info.base_model, (f"{info.base_model}_base", hashlib.sha256(info.base_model.encode()).hexdigest()[:10])
    )
    seed = rng.randrange(2**32)
    if app == "a1111":
        lora_hash = (info.sshs_model_hash or info.tensor_sha256)[:12]
        w, h = (512, 768) if info.base_model in ("sd1", "sd2") else (832, 1216)
        return (
            f"{prompt}\nNegative prompt: {_NEGATIVE}\n"
            f"Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: {seed}, "
            f"Size: {w}x{h}, Model hash: {ckpt_hash}, Model: {ckpt}, "
            f'Lora hashes: "{name}: {lora_hash}", Version: v1.10.1'
        )
    return (
        f"{prompt}\nNegative prompt: {_NEGATIVE}\n"
        f"Steps: 20, Size: 1024x1024, Sampler: Euler a, Seed: {seed}, CFG scale: 6, "
        f"Model: {ckpt}, Model hash: {ckpt_hash}, App: SD.Next, Version: 2a7e6f3, "
        f"Operations: txt2img, LoRA networks: {name}, "
        f'LoRA hashes: "{name}: {info.tensor_sha256[:8]}"'
    )


def _image(info: SidecarInfo, size: tuple[int, int] = (128, 160)) -> Any:
    from PIL import Image, ImageDraw

    rng = rng_for("preview", info.seed, info.stem)
    w, h = size
    c1 = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    c2 = np.array([rng.randrange(256) for _ in range(3)], dtype=np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(2, 6)):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(6, w // 3)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255))
    draw.rectangle((0, h - 22, w, h), fill=(0, 0, 0))
    draw.text((4, h - 18), info.stem[:20], fill=(255, 255, 255))
    return img


def _exif_bytes(text: str) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    return exif.tobytes()


def write_preview(info: SidecarInfo, kind: str) -> Path:
    """Draw and save a preview of ``kind`` (see :data:`PREVIEW_KINDS`) with its infotext."""
    from PIL.PngImagePlugin import PngInfo

    target = info.path.with_name(info.stem + PREVIEW_KINDS[kind])
    img = _image(info)
    if kind in ("png", "preview_png"):
        png = PngInfo()
        png.add_text("parameters", _infotext(info, "a1111"))
        img.save(target, "PNG", pnginfo=png)
    elif kind in ("jpeg", "preview_jpeg"):
        img.save(target, "JPEG", quality=85, exif=_exif_bytes(_infotext(info, "sdnext")))
    else:
        img.save(target, "WEBP", quality=80, exif=_exif_bytes(_infotext(info, "sdnext")))
    return target


def civitai_version(info: SidecarInfo, *, legacy: bool = False) -> dict[str, Any]:
    """A Civitai model-version JSON (by-hash response) for ``info``."""
    rng = rng_for("civitai", info.seed, info.stem)
    created = 1690000000 + rng.randrange(60_000_000)
    sha = info.file_bytes_sha256.upper()
    hashes: dict[str, str] = {"AutoV1": info.legacy.upper(), "AutoV2": sha[:10], "SHA256": sha,
                              "CRC32": info.crc32.upper()}  # fmt: skip
    if not legacy:
        hashes["AutoV3"] = info.tensor_sha256[:12].upper()
    nsfw_level = rng.choice((1, 1, 1, 2, 4, 8))
    image = {
        "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{rng.getrandbits(128):032x}"
        f"/width=832/{rng.randrange(10**7)}.jpeg",
        "width": 832, "height": 1216, "hash": "U5F~gbIo00xu~qofRjRj00of~q%M",
        "meta": {"prompt": ", ".join([*info.trigger_words, *info.tags[:3]]),
                 "negativePrompt": _NEGATIVE, "seed": rng.randrange(2**32), "steps": 25,
                 "sampler": "DPM++ 2M Karras", "cfgScale": 7},
    }  # fmt: skip
    if legacy:
        image["nsfw"] = rng.choice(("None", "None", "Soft", "Mature", "X"))
    else:
        image.update({"nsfwLevel": nsfw_level, "type": "image", "hasMeta": True})
    file_entry = {
        "id": info.version_id + 7, "sizeKB": round(info.size / 1024, 4),
        "name": info.path.name, "type": "Model", "pickleScanResult": "Success",
        "pickleScanMessage": "No Pickle imports", "virusScanResult": "Success",
        "scannedAt": _iso(created + 600),
        "metadata": {"format": "SafeTensor", "size": None, "fp": None},
        "hashes": hashes, "primary": True,
        "downloadUrl": f"https://civitai.com/api/download/models/{info.version_id}",
    }  # fmt: skip
    version: dict[str, Any] = {
        "id": info.version_id, "modelId": info.model_id, "name": "v1.0",
        "createdAt": _iso(created), "updatedAt": _iso(created + 3600),
        "trainedWords": info.trigger_words, "baseModel": info.civitai_base,
        "earlyAccessTimeFrame": 0, "description": description_html(info),
    }  # fmt: skip
    if legacy:
        version["stats"] = {"downloadCount": rng.randrange(10**5), "ratingCount":
                            rng.randrange(100), "rating": round(4 + rng.random(), 2)}  # fmt: skip
    else:
        del version["earlyAccessTimeFrame"]
        version.update({
            "status": "Published", "publishedAt": _iso(created + 1800),
            "nsfwLevel": nsfw_level, "baseModelType": "Standard", "uploadType": "Created",
            "air": f"urn:air:{_AIR_ECO[info.base_model]}:lora:civitai:"
                   f"{info.model_id}@{info.version_id}",
            "stats": {"downloadCount": rng.randrange(10**5), "thumbsUpCount": rng.randrange(5000)},
        })  # fmt: skip
    version["model"] = {"name": info.title, "type": _model_type(info), "nsfw": False, "poi": False}
    version["files"] = [file_entry]
    version["images"] = [image]
    version["downloadUrl"] = file_entry["downloadUrl"]
    return version


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def write_sidecars(info: SidecarInfo, kinds: list[str]) -> list[str]:
    """Write the sidecars of ``kinds`` beside ``info.path``; returns the kinds written."""
    stem_path = info.path.with_name(info.stem)
    rng = rng_for("sidecars", info.seed, info.stem)
    trig = ", ".join(info.trigger_words)
    civitai = civitai_version(info) if {"civitai_info", "lora_manager"} & set(kinds) else {}
    for kind in kinds:
        if kind.startswith("civitai_info"):
            body: Any = {}
            if kind == "civitai_info":
                body = civitai
            elif kind == "civitai_info_2023":
                body = civitai_version(info, legacy=True)
            _write(Path(f"{stem_path}.civitai.info"), json.dumps(body, indent=4))
        elif kind == "a1111_json":
            body = {
                "description": f"{info.title} — {info.civitai_base} LoRA",
                "sd version": _SD_VERSION.get(info.base_model, "Unknown"),
                "activation text": trig,
                "preferred weight": rng.choice((0, 0.6, 0.8, 1.0)),
                "negative text": rng.choice(("", "lowres, blurry")),
                "notes": f"Downloaded for the {info.tags[0] if info.tags else 'misc'} board.",
            }
            _write(Path(f"{stem_path}.json"), json.dumps(body, indent=4, ensure_ascii=False))
        elif kind == "lora_manager":
            modified = float(1700000000 + rng.randrange(30_000_000))
            body = {
                "file_name": info.stem,
                "model_name": info.title,
                "file_path": info.path.as_posix(),
                "size": info.size,
                "modified": modified,
                "sha256": info.file_bytes_sha256,
                "base_model": info.civitai_base,
                "preview_url": info.preview.as_posix() if info.preview else "",
                "preview_nsfw_level": 0,
                "notes": "",
                "from_civitai": True,
                "civitai": civitai,
                "tags": info.tags[:4],
                "modelDescription": description_html(info),
                "civitai_deleted": False,
                "favorite": rng.random() < 0.3,
                "exclude": False,
                "db_checked": False,
                "skip_metadata_refresh": False,
                "metadata_source": "civitai_api",
                "last_checked_at": modified + 60,
                "hash_status": "completed",
                "trainedWords": info.trigger_words,
                "usage_tips": json.dumps({"strength": 0.8, "clipStrength": 1.0}),
            }
            _write(Path(f"{stem_path}.metadata.json"), json.dumps(body, indent=2, ensure_ascii=False))
        elif kind == "stability_matrix":
            body = {
                "ModelId": info.model_id, "ModelName": info.title,
                "ModelDescription": description_html(info), "Nsfw": False,
                "Tags": info.tags[:4], "ModelType": _model_type(info),
                "VersionId": info.version_id, "VersionName": "v1.0",
                "VersionDescription": None, "AuthorUsername": "lorabench",
                "BaseModel": info.civitai_base, "RemoteFileName": info.path.name,
                "RemoteFileId": info.version_id + 7,
                "FileMetadata": {"Format": "SafeTensor", "Size": None, "Fp": None},
                "ImportedAt": "2024-06-01T12:00:00+00:00",
                "Hashes": {"SHA1": None, "SHA256": info.file_bytes_sha256.upper(),
                           "CRC32": info.crc32.upper(), "BLAKE3": None},
                "TrainedWords": info.trigger_words,
                "Stats": {"downloadCount": 1200, "favoriteCount": 40, "commentCount": 3,
                          "ratingCount": 12, "rating": 4.8},
                "UserTitle": None, "ThumbnailImageUrl": None, "InferenceDefaults": None,
                "Source": "Civitai",
            }  # fmt: skip
            _write(Path(f"{stem_path}.cm-info.json"), json.dumps(body, separators=(",", ":")))
        elif kind == "txt":
            _write(Path(f"{stem_path}.txt"), f"{info.title}\nTrigger: {trig or '(none)'}\n")
        elif kind == "description_txt":
            _write(Path(f"{stem_path}.description.txt"),
                   f"{info.title} ({info.civitai_base}). Use at weight 0.7.\n")  # fmt: skip
        elif kind == "md":
            _write(Path(f"{stem_path}.md"),
                   f"# {info.title}\n\n- base: **{info.civitai_base}**\n- trigger: `{trig}`\n")  # fmt: skip
        else:
            raise ValueError(f"unknown sidecar kind {kind!r}")
    return list(kinds)

"""Build sample LoRA libraries: a showcase (one file per producer) or N seeded files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._metadata import LoraParams, rng_for
from ._producers import PRODUCERS, Producer
from ._sidecars import PREVIEW_KINDS, SIDECAR_KINDS, SidecarInfo, write_preview, write_sidecars
from ._writer import DTYPE_SIZES, _entries_json, _sorted_names, encode_header, legacy_hash

__all__ = ["SampleFile", "SampleLibrary", "build_library"]

_FILES_PER_FOLDER = 500
_CHUNK = 1000
_THREADS = 2
_SIDECAR_SHARE = 0.08  # big libraries: share of files with sidecars …
_PREVIEW_SHARE = 0.015  # … and with a preview
_EMPTY_LEGACY = hashlib.sha256(b"").hexdigest()[:8]


@dataclass
class SampleFile:
    """One file of a sample library and the facts a correct reader must derive from it."""

    path: Path
    expected: dict[str, Any]
    sidecars: list[str] = field(default_factory=list)
    preview: Path | None = None

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        def rel(p: Path) -> str:
            return p.relative_to(root).as_posix() if root else str(p)

        return {
            "path": rel(self.path),
            "expected": self.expected,
            "sidecars": list(self.sidecars),
            "preview": rel(self.preview) if self.preview else None,
        }


@dataclass
class SampleLibrary:
    """A built library: its root, its model files (LoRAs and decoys) and their total size."""

    root: Path
    files: list[SampleFile]
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; paths relative to ``root``."""
        return {
            "root": str(self.root),
            "total_bytes": self.total_bytes,
            "count": len(self.files),
            "files": [f.to_dict(self.root) for f in self.files],
        }

    def by_producer(self) -> dict[str, list[SampleFile]]:
        """Files grouped by ``expected["producer"]``."""
        out: dict[str, list[SampleFile]] = {}
        for f in self.files:
            out.setdefault(f.expected["producer"], []).append(f)
        return out


@dataclass
class _Template:
    names: list[str]
    entries_json: str
    region: bytes
    insertion: list[tuple[int, int]]
    vary_at: list[int]
    mods: list[Any]


def _template(producer: Producer, params: LoraParams) -> _Template:
    tensors, mods = producer.build(params)
    names = _sorted_names(tensors)
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0
    parts = []
    for name in names:
        data = tensors[name][2]
        assert data is not None
        offsets[name] = (pos, pos + len(data))
        pos += len(data)
        parts.append(data)
    big = max(names, key=lambda n: offsets[n][1] - offsets[n][0])
    size = DTYPE_SIZES[tensors[big][0]]
    vary_at = [offsets[big][0] + j * size for j in range(8)]
    return _Template(names, _entries_json(tensors, names), b"".join(parts),
                     [offsets[n] for n in tensors], vary_at, mods)  # fmt: skip


def _mix(seed: int, i: int) -> bytes:
    """splitmix64: a bijection of ``i`` for a fixed ``seed`` → distinct tensor bytes."""
    z = (seed * 0x9E3779B97F4A7C15 + i + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return struct.pack("<Q", z ^ (z >> 31))


def _hashes(producer: Producer, tpl: _Template, region: bytes, region_hex: str,
            meta: dict[str, str]) -> None:  # fmt: skip
    if producer.hash_style == "kohya":
        # An upper bound of the ss_-only header (JSON escaping grows a char to <= 6 bytes).
        chars = sum(map(len, meta)) + sum(map(len, meta.values())) + 8 * len(meta)
        bound = 64 + len(tpl.entries_json) + 6 * chars
        meta["sshs_model_hash"] = region_hex
        if 8 + bound + len(region) <= 0x100000:
            meta["sshs_legacy_hash"] = _EMPTY_LEGACY  # the 1 MiB window is past the end
        else:
            ss = {k: v for k, v in meta.items() if k.startswith("ss_")}
            meta["sshs_legacy_hash"] = legacy_hash(encode_header(ss, tpl.entries_json) + region)
    elif producer.hash_style == "lycoris":
        digest = hashlib.sha256()
        view = memoryview(region)
        for begin, end in tpl.insertion:
            digest.update(view[begin:end])
        meta["sshs_model_hash"] = "0x" + digest.hexdigest()


class _Writer:
    """Writes LoRA files from cached per-(producer, rank, dtype, …) templates."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.seed = seed
        self.templates: dict[tuple[Any, ...], _Template] = {}
        self.dirs: set[Path] = set()
        self.total = 0

    def write(self, rel: str, producer: Producer, params: LoraParams, vary: int | None,
              keep_bytes: bool) -> tuple[SampleFile, bytes | None, dict[str, str]]:  # fmt: skip
        rank, _alpha, dtype = producer.resolve(params)
        key = (producer.id, rank, dtype, params.tiny, params.train_text_encoder, params.seed)
        tpl = self.templates.get(key)
        if tpl is None:
            tpl = self.templates[key] = _template(producer, params)
        region = tpl.region
        if vary is not None:
            buf = bytearray(region)
            for pos, byte in zip(tpl.vary_at, _mix(self.seed, vary), strict=True):
                buf[pos] ^= byte
            region = bytes(buf)
        meta = producer.metadata(params, tpl.mods)
        region_hex = hashlib.sha256(region).hexdigest()
        _hashes(producer, tpl, region, region_hex, meta)
        header = encode_header(meta, tpl.entries_json)
        path = self.root / rel
        if path.parent not in self.dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.dirs.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(header)
            handle.write(region)
        self.total += len(header) + len(region)
        expected = producer.expected(params, tpl.mods)
        expected["tensor_sha256"] = region_hex
        whole = hashlib.sha256(header)
        whole.update(region)
        expected["sha256"] = whole.hexdigest()
        return SampleFile(path, expected), (header + region if keep_bytes else None), meta


def _sidecar_info(sf: SampleFile, producer: Producer, params: LoraParams, data: bytes,
                  meta: dict[str, str], seed: int) -> SidecarInfo:  # fmt: skip
    exp = sf.expected
    trig = exp["trigger_words"] or ([params.trigger] if params.trigger else [])
    return SidecarInfo(
        path=sf.path, title=params.title or params.name, base_model=exp["base_model"],
        civitai_base=producer.civitai_base, algorithm=exp["algorithm"], dora=exp["dora"],
        trigger_words=trig, tags=list(params.tags), file_bytes_sha256=exp["sha256"],
        tensor_sha256=exp["tensor_sha256"], size=len(data), seed=seed,
        sshs_model_hash=meta.get("sshs_model_hash"), crc32=f"{zlib.crc32(data):08x}",
        legacy=legacy_hash(data),
    )  # fmt: skip


def _extras(sf: SampleFile, info: SidecarInfo, sidecars: list[str], preview: str | None) -> None:
    if preview:
        sf.preview = info.preview = write_preview(info, preview)
    if sidecars:
        sf.sidecars = write_sidecars(info, sidecars)


# (producer id, folder, stem, title, trigger, tags)
_SHOWCASE: tuple[tuple[str, str, str, str, str | None, tuple[str, ...]], ...] = (
    ("kohya-sd15-lora", "characters", "sks_dog_sd15", "SKS Dog", "sks dog",
     ("dog", "outdoors", "grass", "sitting")),
    ("kohya-sd15-locon", "styles", "ink_wash_locon_sd15", "Ink Wash Painting", "inkwash style",
     ("monochrome", "traditional media", "landscape")),
    ("kohya-sd2-lora", "concepts", "glass_sculpture_sd21", "Glass Sculpture", "glssclpt",
     ("glass", "transparent", "still life")),
    ("kohya-sdxl-lora", "styles", "watercolor_sdxl", "Watercolor", None,
     ("watercolor", "painting", "soft colors")),
    ("kohya-sdxl-pony", "characters", "ranger_girl_pony", "Ranger Girl (Pony)", "rangergirl",
     ("score_9", "score_8_up", "score_7_up", "1girl", "forest")),
    ("kohya-sdxl-illustrious", "characters", "moonlit_mage_illustrious", "Moonlit Mage",
     "moonmage", ("1girl", "witch hat", "night", "masterpiece")),
    ("kohya-flux-lora", "characters", "ohwx_man_flux", "OHWX Man", "ohwx man",
     ("portrait", "man", "photo")),
    ("kohya-sd3-lora", "styles", "paper_cutout_sd3", "Paper Cutout", "papercut style",
     ("paper art", "layered", "colorful")),
    ("kohya-oft", "styles", "neon_noir_oft_sdxl", "Neon Noir", "neonnoir",
     ("neon lights", "rain", "night")),
    ("kohya-no-metadata", "concepts", "mystery_no_metadata", "mystery_no_metadata", None,
     ("unknown",)),
    ("lycoris-loha", "styles", "oil_painting_loha_sd15", "Oil Painting", "oilpnt",
     ("oil painting", "impasto", "canvas")),
    ("lycoris-lokr", "clothing", "silk_kimono_lokr_sdxl", "Silk Kimono", "silkkimono",
     ("kimono", "floral print", "obi")),
    ("lycoris-dora", "characters", "ohwx_woman_dora_sdxl", "OHWX Woman (DoRA)", "ohwx woman",
     ("woman", "portrait", "smile")),
    ("lycoris-ia3", "styles", "pastel_ia3_sd15", "Pastel Tones", "pastelia3",
     ("pastel colors", "soft lighting")),
    ("lycoris-full", "concepts", "detail_tweaker_full_sd15", "Detail Tweaker", None,
     ("detailed", "sharp focus")),
    ("lycoris-boft", "styles", "film_grain_boft_sd15", "Film Grain", "filmgrain",
     ("film grain", "analog", "35mm")),
    ("lycoris-glora", "styles", "cyberpunk_glora_sd15", "Cyberpunk City", "cybrpnk",
     ("cyberpunk", "city", "neon")),
    ("lycoris-norm", "concepts", "contrast_norm_sd15", "Contrast Fix", None,
     ("high contrast",)),
    ("lycoris-standalone", "styles", "retro_anime_lokr_simpletuner", "Retro Anime", None,
     ("retro", "anime", "1990s")),
    ("diffusers-sdxl", "characters", "corgi_diffusers_sdxl", "Corgi (diffusers)", "sks corgi",
     ("dog", "corgi", "beach")),
    ("peft-flux", "concepts", "tiny_planets_flux", "Tiny Planets", "tnyplnt",
     ("planet", "miniature", "space")),
    ("peft-sd3", "styles", "claymation_sd3", "Claymation", "claymation style",
     ("clay", "stop motion")),
    ("peft-dora-flux", "characters", "astronaut_cat_dora_flux", "Astronaut Cat", "astrocat",
     ("cat", "astronaut", "space suit")),
    ("aitoolkit-flux", "characters", "p3r5on_aitoolkit_flux", "P3R5ON", "p3r5on",
     ("person", "portrait")),
)  # fmt: skip
_PREVIEW_CYCLE = ("png", "preview_png", "jpeg", "webp", "preview_jpeg", None)
_CIVITAI_CYCLE = ("civitai_info", "civitai_info_2023", "civitai_info_empty", None)


def _showcase_sidecars(i: int) -> list[str]:
    kinds = [k for k in (_CIVITAI_CYCLE[i % 4],) if k]
    kinds += ["a1111_json"] if i % 3 == 0 else []
    kinds += ["lora_manager"] if i % 3 == 1 else []
    kinds += ["stability_matrix"] if i % 4 == 2 else []
    kinds += ["txt"] if i % 5 == 0 else []
    kinds += ["description_txt"] if i % 5 == 2 else []
    kinds += ["md"] if i % 6 == 3 else []
    return kinds


def _decoys(root: Path, seed: int) -> list[SampleFile]:
    state = {"epoch": 10, "global_step": 1500 + seed, "note": "harmless sample dict",
             "keys": ["lora_unet_down_blocks_0.lora_down.weight"]}  # fmt: skip
    ckpt = root / "styles" / "legacy_style_v1.ckpt"
    ckpt.write_bytes(pickle.dumps(state, protocol=2))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in (
            ("archive/data.pkl", pickle.dumps(state, protocol=2)),
            ("archive/byteorder", b"little"),
            ("archive/version", b"3\n"),
        ):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    pt = root / "characters" / "old_character_v2.pt"
    pt.write_bytes(buf.getvalue())
    out = []
    for path, pid in ((ckpt, "decoy-ckpt"), (pt, "decoy-pt")):
        out.append(SampleFile(path, {
            "producer": pid, "format": "unsafe", "algorithm": None, "dora": False,
            "base_model": None, "base_model_hint": None, "rank": None, "alpha": None,
            "dtype": None, "trigger_words": [], "components": {}, "tensor_sha256": None,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "error": "unsafe_format",
        }))  # fmt: skip
    return out


def _build_showcase(root: Path, seed: int, tiny: bool, sidecars: bool, previews: bool,
                    subfolders: bool) -> tuple[list[SampleFile], int]:  # fmt: skip
    writer = _Writer(root, seed)
    files: list[SampleFile] = []
    for i, (pid, folder, stem, title, trigger, tags) in enumerate(_SHOWCASE):
        producer = PRODUCERS[pid]
        params = LoraParams(name=stem, title=title, trigger=trigger, tags=tags, seed=seed,
                            tiny=tiny, thumbnail=i % 7 == 3,
                            description=f"{title}: a sample LoRA." if i % 2 else None)  # fmt: skip
        rel = f"{folder}/{stem}.safetensors" if subfolders else f"{stem}.safetensors"
        sf, data, meta = writer.write(rel, producer, params, None, True)
        assert data is not None
        info = _sidecar_info(sf, producer, params, data, meta, seed)
        preview = _PREVIEW_CYCLE[i % len(_PREVIEW_CYCLE)] if previews else None
        _extras(sf, info, _showcase_sidecars(i) if sidecars else [], preview)
        files.append(sf)
    total = writer.total
    if subfolders:
        decoys = _decoys(root, seed)
        files.extend(decoys)
        total += sum(d.path.stat().st_size for d in decoys)
    return files, total


_ADJ = ("misty", "golden", "crimson", "silent", "velvet", "frozen", "lunar", "amber", "neon",
        "rustic", "gentle", "stormy", "cosmic", "paper", "ivory", "shadow")  # fmt: skip
_NOUN = ("forest", "knight", "fox", "castle", "robot", "garden", "dragon", "harbor", "witch",
         "samurai", "lantern", "meadow", "pilot", "owl", "canyon", "violinist")  # fmt: skip
_TAGS = ("1girl", "1boy", "solo", "outdoors", "indoors", "smile", "night", "sky", "flowers",
         "portrait", "full body", "looking at viewer", "detailed background", "rain")  # fmt: skip
_PONY = ("score_9", "score_8_up", "score_7_up", "source_anime")
_BASE_TAG = {"sd1": "sd15", "sd2": "sd21", "sdxl": "xl", "sd3": "sd3", "flux1": "flux"}


def _params(producer: Producer, i: int, seed: int, tiny: bool) -> tuple[LoraParams, Any]:
    rng = rng_for("lib", seed, i)
    adj, noun = rng.choice(_ADJ), rng.choice(_NOUN)
    kind = producer.kind
    if kind == "characters":
        trigger: str | None = f"{rng.choice(('ohwx', 'sks', 'zkz', 'p3r'))} {noun}"
    elif kind == "styles":
        trigger = f"{adj} style" if rng.random() < 0.6 else None
    else:
        trigger = f"{adj}{noun}" if rng.random() < 0.5 else None
    tags = tuple(rng.sample(_TAGS, 3))
    if producer.hint == "pony":
        tags = _PONY + tags
    ranks = producer.tiny_ranks if tiny else producer.ranks
    return LoraParams(
        name=f"{adj}_{noun}_{_BASE_TAG[producer.base_model]}_{i:06d}",
        title=f"{adj.title()} {noun.title()} v{rng.randrange(1, 5)}",
        trigger=trigger, tags=tags, rank=ranks[0] if rng.random() < 0.75 else rng.choice(ranks),
        dtype=rng.choice(producer.dtypes),
        seed=seed, tiny=tiny, author=rng.choice(("lorabench", "anon", "pixelsmith")),
        train_text_encoder=rng.random() < 0.7, thumbnail=rng.random() < 0.01,
    ), rng  # fmt: skip


def _build_range(root: Path, start: int, stop: int, seed: int, tiny: bool, sidecars: bool,
                 previews: bool, subfolders: bool) -> tuple[list[SampleFile], int]:  # fmt: skip
    writer = _Writer(root, seed)
    producers = list(PRODUCERS.values())
    kinds_cycle = [p.kind for p in producers]
    files: list[SampleFile] = []
    for i in range(start, stop):
        j = i % len(producers)
        producer = producers[j]
        params, rng = _params(producer, i, seed, tiny)
        if subfolders:  # position of this file among the files of its kind, in index order
            kind = producer.kind
            n = (i // len(producers)) * kinds_cycle.count(kind) + kinds_cycle[:j].count(kind)
            rel = f"{kind}/{n // _FILES_PER_FOLDER:03d}/{params.name}.safetensors"
        else:
            rel = f"{params.name}.safetensors"
        roll = rng.random()
        kinds: list[str] = []
        if sidecars and roll < _SIDECAR_SHARE:
            kinds = sorted(rng.sample(SIDECAR_KINDS[3:], rng.randrange(1, 3)))
            kinds.insert(0, rng.choice(SIDECAR_KINDS[:3]))
        preview = None
        if previews and roll < _PREVIEW_SHARE:
            preview = rng.choice(list(PREVIEW_KINDS))
        need = bool(kinds or preview)
        sf, data, meta = writer.write(rel, producer, params, i, need)
        if need:
            assert data is not None
            _extras(sf, _sidecar_info(sf, producer, params, data, meta, seed), kinds, preview)
        files.append(sf)
    return files, writer.total


def _build_many(root: Path, count: int, seed: int, tiny: bool, sidecars: bool, previews: bool,
                subfolders: bool) -> tuple[list[SampleFile], int]:  # fmt: skip
    # File creation, writes and hashing release the GIL, so a few threads overlap them.
    # Every file depends only on (seed, index): the result is the same for any chunking.
    args = (seed, tiny, sidecars, previews, subfolders)
    if count < _CHUNK * 2:
        return _build_range(root, 0, count, *args)
    bounds = [(a, min(a + _CHUNK, count)) for a in range(0, count, _CHUNK)]
    files: list[SampleFile] = []
    total = 0
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        futures = [pool.submit(_build_range, root, a, b, *args) for a, b in bounds]
        for future in futures:
            part, size = future.result()
            files.extend(part)
            total += size
    return files, total


def build_library(
    root: str | os.PathLike[str],
    *,
    count: int | None = None,
    seed: int = 0,
    tiny: bool = False,
    sidecars: bool = True,
    previews: bool = True,
    subfolders: bool = True,
) -> SampleLibrary:
    """Write a realistic sample LoRA library under ``root`` and return what a reader must find.

    ``count=None`` builds the showcase: one file per producer with pleasant names in
    kind folders, every sidecar kind, PNG/JPEG/WebP previews, and two pickle decoys
    (``.ckpt``, ``.pt``). ``count=N`` builds exactly N LoRA files cycling the producers
    with seeded variation, ≤ 500 files per folder; sidecars and previews go to a seeded
    subset (~8 % and ~1.5 %). The same ``seed`` gives byte-identical model files.
    Nothing else is written into ``root``.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    if count is None:
        files, total = _build_showcase(base, seed, tiny, sidecars, previews, subfolders)
    else:
        if count < 0:
            raise ValueError("count must be >= 0")
        files, total = _build_many(base, count, seed, tiny, sidecars, previews, subfolders)
    return SampleLibrary(base, files, total)

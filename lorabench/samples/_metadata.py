"""Trainer metadata exactly as the trainers write it (all values strings).

kohya sd-scripts stringifies Python values in one step (``None`` → ``"None"``, tuples →
``"(512, 512)"``) and nests ASCII-escaped JSON for ``ss_tag_frequency`` & co.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "KohyaArgs",
    "LoraParams",
    "aitoolkit_metadata",
    "kohya_metadata",
    "modelspec",
    "peft_adapter_metadata",
    "rng_for",
    "thumbnail_data_url",
]

# A fixed epoch (2024-03-01 UTC) from which seeded training times are derived.
_EPOCH = 1709251200


@dataclass(frozen=True)
class LoraParams:
    """What varies between two LoRA files from the same producer.

    ``rank``/``alpha``/``dtype`` left ``None`` take the producer's defaults;
    ``trigger=None`` means the LoRA has no trigger phrase; ``dataset_config=None``
    lets the producer choose between the legacy CLI and ``ss_datasets`` shapes.
    """

    name: str = "sample_lora"
    title: str | None = None
    trigger: str | None = "sks"
    tags: tuple[str, ...] = ("solo", "looking at viewer", "outdoors")
    rank: int | None = None
    alpha: float | None = None
    dtype: str | None = None
    seed: int = 0
    tiny: bool = False
    author: str = "lorabench"
    description: str | None = None
    thumbnail: bool = False
    dataset_config: bool | None = None
    train_text_encoder: bool = True


def rng_for(*parts: object) -> random.Random:
    """A deterministic ``random.Random`` seeded from ``parts`` (stable across runs)."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


def _fmt_float(value: float) -> str:
    return str(float(value))


def started_at(params: LoraParams) -> float:
    """Seeded unix timestamp (with microseconds) for ``ss_training_started_at``."""
    key = f"time\x1f{params.seed}\x1f{params.name}".encode()
    n = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return _EPOCH + n % (500 * 86400) + (n >> 32) % 10**6 / 10**6


def local_iso(ts: float) -> str:
    """ModelSpec ``date`` as kohya writes it: local time, no timezone (fixed to UTC here)."""
    return datetime.fromtimestamp(int(ts), tz=UTC).replace(tzinfo=None).isoformat()


def thumbnail_data_url(seed: int, size: int = 48) -> str:
    """A small PNG data URL (``modelspec.thumbnail``)."""
    from PIL import Image, ImageDraw

    rng = rng_for("thumb", seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(40, 220) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(4, size // 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in "rgb"))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def modelspec(
    params: LoraParams,
    *,
    architecture: str,
    implementation: str,
    resolution: str,
    spec: str = "1.0.1",
    prediction: str | None = "epsilon",
    clip_skip: int | None = None,
    commit: str = "",
) -> dict[str, str]:
    """sd-scripts' ``modelspec.*`` block (library/sai_model_spec.py)."""
    ts = started_at(params) + 3600
    meta = {
        "modelspec.sai_model_spec": spec,
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.title": params.title or params.name,
        "modelspec.resolution": resolution,
    }
    if params.description:
        meta["modelspec.description"] = params.description
    meta["modelspec.author"] = params.author
    meta["modelspec.date"] = local_iso(ts)
    if commit:
        meta["modelspec.implementation_version"] = f"sd-scripts/{commit}"
    if params.thumbnail:
        meta["modelspec.thumbnail"] = thumbnail_data_url(params.seed)
    if params.tags:
        meta["modelspec.tags"] = ", ".join(params.tags[:4])
    if params.trigger:
        meta["modelspec.trigger_phrase"] = params.trigger
    if prediction:
        meta["modelspec.prediction_type"] = prediction
    if clip_skip:
        meta["modelspec.encoder_layer"] = str(clip_skip)
    return meta


@dataclass(frozen=True)
class KohyaArgs:
    """The per-producer constants of an sd-scripts training run."""

    network_module: str
    base_version: str
    sd_model_name: str
    architecture: str
    implementation: str
    v2: bool = False
    resolution: tuple[int, int] = (512, 512)
    mixed_precision: str = "fp16"
    network_args: dict[str, str] | None = None
    clip_skip: int | None = None
    prediction: str | None = "epsilon"
    extra: tuple[tuple[str, str], ...] = ()
    dataset_config: bool = False
    minimal: bool = False
    dim_none: bool = False
    modelspec_version: str = "1.0.1"


_OPTIMIZERS = (
    ("bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1)", "0.0001", "5e-05"),
    ("prodigyopt.prodigy.Prodigy(decouple=True,weight_decay=0.01,use_bias_correction=True)",
     "1.0", "1.0"),
    ("torch.optim.adamw.AdamW", "0.0003", "0.0001"),
)  # fmt: skip


def _tag_counts(params: LoraParams, images: int, rng: random.Random) -> dict[str, int]:
    counts: dict[str, int] = {}
    if params.trigger:
        counts[params.trigger.lower()] = images
    for tag in params.tags:
        counts[tag.lower()] = rng.randrange(1, images + 1)
    return counts


def _buckets(res: tuple[int, int], images: int, rng: random.Random) -> dict[str, Any]:
    w, h = res
    shapes = [(w, h), (w - 64, h + 64), (w + 64, h - 64), (w - 128, h + 128)]
    left = images
    buckets: dict[str, Any] = {}
    for i, (bw, bh) in enumerate(shapes):
        count = left if i == len(shapes) - 1 else rng.randrange(0, left + 1)
        left -= count
        if count:
            buckets[str(len(buckets))] = {"resolution": [bw, bh], "count": count}
    return {"buckets": buckets, "mean_img_ar_error": round(rng.random() * 0.05, 6)}


# Keys in sd-scripts' order (train_network.py); ``None`` marks a value set per file.
_KOHYA_KEYS: tuple[tuple[str, str | None], ...] = (
    ("ss_session_id", None), ("ss_training_started_at", None), ("ss_output_name", None),
    ("ss_learning_rate", None), ("ss_text_encoder_lr", None), ("ss_unet_lr", None),
    ("ss_num_train_images", None), ("ss_num_validation_images", "0"),
    ("ss_num_reg_images", "0"), ("ss_num_batches_per_epoch", None), ("ss_num_epochs", None),
    ("ss_gradient_checkpointing", "True"), ("ss_gradient_accumulation_steps", "1"),
    ("ss_max_train_steps", None), ("ss_lr_warmup_steps", "0"), ("ss_lr_scheduler", None),
    ("ss_network_module", None), ("ss_network_dim", None), ("ss_network_alpha", None),
    ("ss_network_dropout", "None"), ("ss_mixed_precision", None), ("ss_full_fp16", "False"),
    ("ss_v2", None), ("ss_base_model_version", None), ("ss_clip_skip", None),
    ("ss_max_token_length", None), ("ss_cache_latents", "True"), ("ss_seed", None),
    ("ss_lowram", "False"), ("ss_noise_offset", None), ("ss_multires_noise_iterations", "None"),
    ("ss_multires_noise_discount", "0.3"), ("ss_adaptive_noise_scale", "None"),
    ("ss_zero_terminal_snr", "False"), ("ss_training_comment", None),
    ("ss_sd_scripts_commit_hash", None), ("ss_optimizer", None), ("ss_max_grad_norm", "1.0"),
    ("ss_caption_dropout_rate", "0.0"), ("ss_caption_dropout_every_n_epochs", "0"),
    ("ss_caption_tag_dropout_rate", "0.0"), ("ss_face_crop_aug_range", "None"),
    ("ss_prior_loss_weight", "1.0"), ("ss_min_snr_gamma", None),
    ("ss_scale_weight_norms", "None"), ("ss_ip_noise_gamma", "None"),
    ("ss_debiased_estimation", "False"), ("ss_noise_offset_random_strength", "False"),
    ("ss_ip_noise_gamma_random_strength", "False"), ("ss_loss_type", "l2"),
    ("ss_huber_schedule", "snr"), ("ss_huber_scale", "1"), ("ss_huber_c", "0.1"),
    ("ss_fp8_base", "False"), ("ss_fp8_base_unet", "False"), ("ss_validation_seed", "None"),
    ("ss_validation_split", "0.0"), ("ss_max_validation_steps", "None"),
    ("ss_validate_every_n_epochs", "None"), ("ss_validate_every_n_steps", "None"),
    ("ss_resize_interpolation", "None"),
)  # fmt: skip
_KOHYA_BASE = {k: v or "" for k, v in _KOHYA_KEYS}
_SUBSET = {
    "img_count": 0, "num_repeats": 0, "color_aug": False, "flip_aug": False,
    "random_crop": False, "shuffle_caption": True, "keep_tokens": 1,
    "keep_tokens_separator": "", "secondary_separator": None, "enable_wildcard": False,
    "caption_prefix": None, "caption_suffix": None, "resize_interpolation": None,
}  # fmt: skip
_LEGACY = {
    "ss_color_aug": "False", "ss_flip_aug": "False", "ss_random_crop": "False",
    "ss_shuffle_caption": "True", "ss_enable_bucket": "True", "ss_bucket_no_upscale": "True",
    "ss_min_bucket_reso": "256",
}  # fmt: skip


def kohya_metadata(
    params: LoraParams,
    args: KohyaArgs,
    rank: int,
    alpha: float,
    network_args: dict[str, str] | None = None,
) -> dict[str, str]:
    """The ``ss_*`` + ``modelspec.*`` metadata of an sd-scripts LoRA (no ``sshs_*`` yet)."""
    rng = rng_for("kohya", params.seed, params.name, args.network_module)
    t0 = started_at(params)
    images = rng.randrange(12, 60)
    repeats = rng.choice((1, 2, 5, 10, 20))
    epochs = rng.choice((8, 10, 12, 16, 20))
    batch = rng.choice((1, 2, 4))
    per_epoch = -(-images * repeats // batch)
    steps = per_epoch * epochs
    optimizer, lr, te_lr = rng.choice(_OPTIMIZERS)
    commit = f"{rng.getrandbits(160):040x}"
    res = args.resolution
    net_args = network_args if network_args is not None else args.network_args
    dim = "None" if args.dim_none else str(rank)
    if args.minimal:  # --no_metadata keeps only these six (ModelSpec is still merged in)
        meta = {"ss_v2": str(args.v2), "ss_base_model_version": args.base_version,
                "ss_network_module": args.network_module, "ss_network_dim": dim,
                "ss_network_alpha": _fmt_float(alpha)}  # fmt: skip
        if net_args:
            meta["ss_network_args"] = json.dumps(net_args)
        bare = dataclasses.replace(params, trigger=None, tags=(), description=None)
        meta.update(_spec(bare, args, res, commit))
        return meta
    dir_name = f"{repeats}_{params.trigger}" if params.trigger else "train_images"
    use_datasets = args.dataset_config or not params.trigger
    tag_freq = {dir_name: _tag_counts(params, images, rng)}
    dirs = {dir_name: {"n_repeats": repeats, "img_count": images}}
    buckets = _buckets(res, images, rng)
    meta = dict(_KOHYA_BASE)
    meta.update({
        "ss_session_id": str(rng.getrandbits(31)),
        "ss_training_started_at": repr(t0),
        "ss_output_name": params.name,
        "ss_learning_rate": lr,
        "ss_text_encoder_lr": te_lr if params.train_text_encoder else "None",
        "ss_unet_lr": lr,
        "ss_num_train_images": str(images * repeats),
        "ss_num_batches_per_epoch": str(per_epoch),
        "ss_num_epochs": str(epochs),
        "ss_max_train_steps": str(steps),
        "ss_lr_scheduler": rng.choice(("cosine_with_restarts", "constant", "cosine")),
        "ss_network_module": args.network_module,
        "ss_network_dim": dim,
        "ss_network_alpha": _fmt_float(alpha),
        "ss_mixed_precision": args.mixed_precision,
        "ss_v2": str(args.v2),
        "ss_base_model_version": args.base_version,
        "ss_clip_skip": str(args.clip_skip),
        "ss_max_token_length": rng.choice(("225", "None")),
        "ss_seed": str(rng.choice((42, 1234, 31337, rng.randrange(10**9)))),
        "ss_noise_offset": rng.choice(("None", "0.0357", "0.05")),
        "ss_training_comment": rng.choice(("None", f"trained by {params.author}")),
        "ss_sd_scripts_commit_hash": commit,
        "ss_optimizer": optimizer,
        "ss_min_snr_gamma": rng.choice(("None", "5.0")),
    })  # fmt: skip
    meta.update(args.extra)
    if use_datasets:
        subset = dict(_SUBSET, img_count=images, num_repeats=repeats, image_dir=dir_name,
                      class_tokens=params.trigger, is_reg=False)  # fmt: skip
        dataset = {
            "is_dreambooth": True, "batch_size_per_device": batch,
            "num_train_images": images * repeats, "num_reg_images": 0, "resolution": list(res),
            "enable_bucket": True, "min_bucket_reso": 256, "max_bucket_reso": max(res) * 2,
            "tag_frequency": tag_freq, "bucket_info": buckets, "resize_interpolation": None,
            "subsets": [subset],
        }  # fmt: skip
        meta["ss_datasets"] = json.dumps([dataset])
        meta["ss_tag_frequency"] = json.dumps(tag_freq)
        meta["ss_dataset_dirs"] = json.dumps(dirs)
    else:
        meta["ss_batch_size_per_device"] = str(batch)
        meta["ss_total_batch_size"] = str(batch)
        meta["ss_resolution"] = str(res)
        meta.update(_LEGACY)
        meta["ss_max_bucket_reso"] = str(max(res) * 2)
        meta["ss_keep_tokens"] = "1"
        meta["ss_dataset_dirs"] = json.dumps(dirs)
        meta["ss_reg_dataset_dirs"] = "{}"
        meta["ss_tag_frequency"] = json.dumps(tag_freq)
        meta["ss_bucket_info"] = json.dumps(buckets)
    if net_args:
        meta["ss_network_args"] = json.dumps(net_args)
    meta["ss_sd_model_name"] = args.sd_model_name
    if rng.random() < 0.5:  # the base checkpoint existed locally: hashes recorded
        meta["ss_sd_model_hash"] = f"{rng.getrandbits(32):08x}"
        meta["ss_new_sd_model_hash"] = f"{rng.getrandbits(256):064x}"
    meta["ss_training_finished_at"] = repr(t0 + steps * (1.1 + rng.random()))
    meta["ss_steps"] = str(steps)
    meta["ss_epoch"] = str(epochs)
    meta.update(_spec(params, args, res, commit))
    return meta


def _spec(params: LoraParams, args: KohyaArgs, res: tuple[int, int], commit: str) -> dict[str, str]:
    return modelspec(
        params,
        architecture=args.architecture,
        implementation=args.implementation,
        resolution=f"{res[0]}x{res[1]}",
        spec=args.modelspec_version,
        prediction=args.prediction,
        clip_skip=args.clip_skip,
        commit=commit,
    )


@functools.lru_cache(maxsize=256)
def _adapter_json(prefix: str, rank: int, alpha: float, targets: tuple[str, ...], dora: bool) -> str:
    config = {
        f"{prefix}.r": rank,
        f"{prefix}.lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        f"{prefix}.target_modules": sorted(set(targets)),
        f"{prefix}.use_dora": dora,
        f"{prefix}.lora_dropout": 0.0,
        f"{prefix}.init_lora_weights": "gaussian",
        f"{prefix}.bias": "none",
        f"{prefix}.use_rslora": False,
        f"{prefix}.rank_pattern": {},
        f"{prefix}.alpha_pattern": {},
    }
    return json.dumps(config, indent=2, sort_keys=True)


def peft_adapter_metadata(prefix: str, rank: int, alpha: float, targets: list[str], *, dora: bool = False) -> str:
    """diffusers' ``lora_adapter_metadata`` (LoraConfig packed with a component prefix)."""
    return _adapter_json(prefix, rank, alpha, tuple(targets), dora)


def aitoolkit_metadata(params: LoraParams, base_version: str) -> dict[str, str]:
    """ai-toolkit's metadata (toolkit/metadata.py): config ``meta`` + training info."""
    rng = rng_for("aitk", params.seed, params.name)
    steps = rng.choice((1000, 1500, 2000, 3000))
    meta: dict[str, Any] = {
        "name": params.name,
        "version": "1.0",
        "training_info": {"step": steps, "epoch": rng.randrange(1, 20)},
        "ss_base_model_version": base_version,
        "ss_output_name": params.name,
    }
    if params.trigger:
        meta["ss_tag_frequency"] = {f"1_{params.trigger}": {params.trigger: 1}}
    meta["software"] = {
        "name": "ai-toolkit",
        "repo": "https://github.com/ostris/ai-toolkit",
        "version": rng.choice(("0.1.0", "0.2.5", "0.5.2")),
    }
    out = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    out["format"] = "pt"
    return out

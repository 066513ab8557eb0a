"""Producers: one realistic LoRA (tensors, metadata, expected facts) per trainer dialect."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _arch as A
from ._metadata import KohyaArgs, LoraParams, aitoolkit_metadata, kohya_metadata
from ._metadata import peft_adapter_metadata as adapter_meta
from ._writer import TensorSpec, legacy_hash, lycoris_hash, random_tensor_bytes, serialize

__all__ = ["PRODUCERS", "Produced", "Producer", "produce", "producer_ids"]


class Produced(NamedTuple):
    """One LoRA: its tensors, its ``__metadata__`` and the facts a reader must derive."""

    tensors: dict[str, TensorSpec]
    metadata: dict[str, str]
    expected: dict[str, Any]


def _half(rank: int) -> float:
    return rank / 2


TensorsFn = Callable[[LoraParams, int, float, str], tuple[dict[str, TensorSpec], list[A.Module]]]
MetaFn = Callable[[LoraParams, int, float, str, list[A.Module]], dict[str, str]]


@dataclass(frozen=True)
class Producer:
    """A trainer dialect that produces LoRA files (see :func:`produce`)."""

    id: str
    format: str
    algorithm: str
    base_model: str
    kind: str
    civitai_base: str
    dtypes: tuple[str, ...]
    ranks: tuple[int, ...]
    tensors_fn: TensorsFn
    metadata_fn: MetaFn
    hint: str | None = None
    dora: bool = False
    hash_style: str = "kohya"  # kohya | lycoris | none
    alpha_source: str = "tensor"  # tensor | adapter | metadata | none
    carries_trigger: bool = True
    default_alpha: Callable[[int], float] = _half
    rank_is_none: bool = False
    tiny_ranks: tuple[int, ...] = (2, 4)

    def resolve(self, params: LoraParams) -> tuple[int, float, str]:
        """``(rank, alpha, dtype)`` after applying the producer's defaults."""
        default = self.tiny_ranks[0] if params.tiny else self.ranks[0]
        rank = params.rank if params.rank is not None else default
        alpha = params.alpha if params.alpha is not None else self.default_alpha(rank)
        dtype = params.dtype or self.dtypes[0]
        return rank, float(alpha), dtype

    def build(self, params: LoraParams) -> tuple[dict[str, TensorSpec], list[A.Module]]:
        """Tensors (data filled, seeded by producer and ``params.seed``) and modules."""
        rank, alpha, dtype = self.resolve(params)
        tensors, mods = self.tensors_fn(params, rank, alpha, dtype)
        seed = int.from_bytes(hashlib.blake2b(self.id.encode(), digest_size=4).digest(), "little")
        filled = {
            name: (dt, shape, data if data is not None else
                   random_tensor_bytes(name, dt, shape, seed ^ params.seed))
            for name, (dt, shape, data) in tensors.items()
        }  # fmt: skip
        return filled, mods

    def metadata(self, params: LoraParams, mods: list[A.Module]) -> dict[str, str]:
        """The metadata without ``sshs_*`` hashes."""
        rank, alpha, dtype = self.resolve(params)
        return self.metadata_fn(params, rank, alpha, dtype, mods)

    def expected(self, params: LoraParams, mods: list[A.Module]) -> dict[str, Any]:
        """The facts a correct reader derives from this producer's file."""
        rank, alpha, dtype = self.resolve(params)
        comps = Counter(A.component_of(m[0]) for m in mods)
        exp_alpha: float | None = None if self.alpha_source == "none" else alpha
        return {
            "producer": self.id,
            "format": self.format,
            "algorithm": self.algorithm,
            "dora": self.dora,
            "base_model": self.base_model,
            "base_model_hint": self.hint,
            "rank": None if self.rank_is_none else rank,
            "alpha": exp_alpha,
            "dtype": dtype,
            "trigger_words": [params.trigger] if params.trigger and self.carries_trigger else [],
            "components": dict(sorted(comps.items())),
            "error": None,
        }

    def __call__(self, params: LoraParams | None = None, **overrides: Any) -> Produced:
        params = dataclasses.replace(params or LoraParams(), **overrides)
        tensors, mods = self.build(params)
        meta = self.metadata(params, mods)
        add_hashes(self.hash_style, tensors, meta)
        expected = self.expected(params, mods)
        payload = serialize(tensors, meta)
        n = int.from_bytes(payload[:8], "little")
        expected["tensor_sha256"] = hashlib.sha256(payload[8 + n :]).hexdigest()
        expected["sha256"] = hashlib.sha256(payload).hexdigest()
        return Produced(tensors, meta, expected)


def add_hashes(style: str, tensors: Mapping[str, TensorSpec], meta: dict[str, str]) -> None:
    """Append ``sshs_*`` as the trainer does (kohya: on an ``ss_*``-only re-serialization)."""
    if style == "kohya":
        ss_only = serialize(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
        n = int.from_bytes(ss_only[:8], "little")
        meta["sshs_model_hash"] = hashlib.sha256(ss_only[8 + n :]).hexdigest()
        meta["sshs_legacy_hash"] = legacy_hash(ss_only)
    elif style == "lycoris":
        meta["sshs_model_hash"] = lycoris_hash(tensors)


# --------------------------------------------------------------------------- modules

_SD_IMPL = "diffusers"
_SGM = "https://github.com/Stability-AI/generative-models"
_BFL = "https://github.com/black-forest-labs/flux"


def _sd1(tiny: bool, te: bool = True, conv: bool = False) -> list[A.Module]:
    mods = A.sd_te("lora_te", 768, (0, 11), tiny=tiny) if te else []
    mods = mods + A.sd_unet(1, tiny=tiny)
    return mods + (A.sd1_conv(tiny=tiny) if conv else [])


def _sdxl(tiny: bool, te: bool = True) -> list[A.Module]:
    mods: list[A.Module] = []
    if te:
        mods += A.sd_te("lora_te1", 768, (0, 11), tiny=tiny)
        mods += A.sd_te("lora_te2", 1280, (0, 31), tiny=tiny)
    return mods + A.sdxl_unet(tiny=tiny)


def _lora_tensors(mods_fn: Callable[[LoraParams], list[A.Module]], algo: str = "lora",
                  **kw: Any) -> TensorsFn:  # fmt: skip
    def fn(p: LoraParams, rank: int, alpha: float, dtype: str) -> Any:
        mods = mods_fn(p)
        extra = dict(kw)
        if "conv_rank" in extra:
            extra["conv_rank"] = max(2, rank // 2)
        a = extra.pop("alpha") if "alpha" in extra else alpha
        return A.emit(algo, mods, dtype=dtype, rank=rank, alpha=a, **extra), mods

    return fn


def _kohya(args: KohyaArgs, net_args: Callable[[int], dict[str, str]] | None = None) -> MetaFn:
    with_config = dataclasses.replace(args, dataset_config=True)
    without_config = dataclasses.replace(args, dataset_config=False)

    def fn(p: LoraParams, rank: int, alpha: float, dtype: str, mods: list[A.Module]) -> Any:
        a = args
        if p.dataset_config is not None:
            a = with_config if p.dataset_config else without_config
        return kohya_metadata(p, a, rank, alpha, net_args(rank) if net_args else None)

    return fn


SD15 = KohyaArgs("networks.lora", "sd_v1", "v1-5-pruned-emaonly.safetensors",
                 "stable-diffusion-v1/lora", _SD_IMPL, clip_skip=None)  # fmt: skip
SD2 = KohyaArgs("networks.lora", "sd_v2", "v2-1_512-ema-pruned.safetensors",
                "stable-diffusion-v2-512/lora", _SD_IMPL, v2=True)  # fmt: skip
SDXL = KohyaArgs("networks.lora", "sdxl_base_v1-0", "sd_xl_base_1.0.safetensors",
                 "stable-diffusion-xl-v1-base/lora", _SGM, resolution=(1024, 1024),
                 mixed_precision="bf16", dataset_config=True)  # fmt: skip
_FLUX_EXTRA = (
    ("ss_model_type", "flux"), ("ss_apply_t5_attn_mask", "False"),
    ("ss_weighting_scheme", "none"), ("ss_logit_mean", "0.0"), ("ss_logit_std", "1.0"),
    ("ss_mode_scale", "1.29"), ("ss_guidance_scale", "1.0"), ("ss_timestep_sampling", "shift"),
    ("ss_sigmoid_scale", "1.0"), ("ss_model_prediction_type", "raw"),
    ("ss_discrete_flow_shift", "3.1582"),
)  # fmt: skip
FLUX = KohyaArgs("networks.lora_flux", "flux1", "flux1-dev.safetensors", "flux-1-dev/lora", _BFL,
                 resolution=(1024, 1024), mixed_precision="bf16", prediction=None,
                 extra=_FLUX_EXTRA, dataset_config=True)  # fmt: skip
SD3 = KohyaArgs("networks.lora_sd3", "medium", "sd3_medium.safetensors",
                "stable-diffusion-3-medium/lora", _SD_IMPL, resolution=(1024, 1024),
                mixed_precision="bf16", dataset_config=True,
                extra=(("ss_apply_lg_attn_mask", "False"), ("ss_apply_t5_attn_mask", "False"),
                       ("ss_weighting_scheme", "uniform"), ("ss_logit_mean", "0.0"),
                       ("ss_logit_std", "1.0"), ("ss_mode_scale", "1.29")))  # fmt: skip


def _lyco(algo: str, **extra: str) -> Callable[[int], dict[str, str]]:
    def args(rank: int) -> dict[str, str]:
        return {"algo": algo, **extra}

    return args


def _diffusers_meta(adapter: str | None = None, dora: bool = False) -> MetaFn:
    def fn(p: LoraParams, rank: int, alpha: float, dtype: str, mods: list[A.Module]) -> Any:
        meta = {"format": "pt"}
        if adapter:
            leaves = [m[0].split(".", 1)[1] for m in mods]
            targets = [".".join(x for x in leaf.split(".")[2:]) for leaf in leaves]
            meta["lora_adapter_metadata"] = adapter_meta(adapter, rank, alpha, targets, dora=dora)
        return meta

    return fn


def _standalone_meta(p: LoraParams, rank: int, alpha: float, dtype: str, mods: Any) -> Any:
    config = {
        "algo": "lokr", "multiplier": 1.0, "linear_dim": rank, "linear_alpha": 1, "factor": 16,
        "apply_preset": {"target_module": ["Attention", "FeedForward"],
                         "module_algo_map": {"Attention": {"factor": 16},
                                             "FeedForward": {"factor": 8}}},
    }  # fmt: skip
    return {"lycoris_config": json.dumps(config)}


def _aitk_meta(p: LoraParams, rank: int, alpha: float, dtype: str, mods: Any) -> Any:
    return aitoolkit_metadata(p, "flux.1")


def _mods(fn: Callable[..., list[A.Module]], **kw: Any) -> Callable[[LoraParams], list[A.Module]]:
    return lambda p: fn(tiny=p.tiny, **kw)


def _m_sd15(p: LoraParams) -> list[A.Module]:
    return _sd1(p.tiny, te=p.train_text_encoder or p.tiny)


def _m_sd15_conv(p: LoraParams) -> list[A.Module]:
    return _sd1(p.tiny, conv=True)


def _m_boft(p: LoraParams) -> list[A.Module]:
    mods = [m for m in A.sd_unet(1, tiny=p.tiny) if "down_blocks_0" in m[0]]
    return mods[:1] if p.tiny else mods  # BOFT blocks are large: one module when tiny


def _m_sd2(p: LoraParams) -> list[A.Module]:
    return A.sd_te("lora_te", 1024, (0, 22), tiny=p.tiny) + A.sd_unet(2, tiny=p.tiny)


def _m_sdxl(p: LoraParams) -> list[A.Module]:
    return _sdxl(p.tiny, te=p.train_text_encoder or p.tiny)


def _m_flux(p: LoraParams) -> list[A.Module]:
    te = A.sd_te("lora_te1", 768, (0, 11), tiny=p.tiny) if p.train_text_encoder else []
    return te + A.flux_kohya(tiny=p.tiny)


def _m_oft(p: LoraParams) -> list[A.Module]:
    mods = A.sdxl_unet(tiny=p.tiny, prefix="oft_unet")
    return [m for m in mods if "_attn" in m[0]]


def _m_full(p: LoraParams) -> list[A.Module]:
    # LyCORIS' full preset also targets conv_in/conv_out; a tiny file keeps only those
    # (a full cross-attention diff alone is ~0.5 MB), so its base model is in metadata only.
    io = [("lora_unet_conv_in", 4, 320, 3), ("lora_unet_conv_out", 320, 4, 3)]
    if p.tiny:
        return io
    return io + [m for m in A.sd_unet(1, tiny=False) if "down_blocks_0" in m[0]]


def _m_standalone(p: LoraParams) -> list[A.Module]:
    mods = [m for m in A.sdxl_diffusers(tiny=False) if m[0].startswith("unet.")]
    keep = ("attn2.to_k", "attn1.to_q")
    mods = [m for m in mods if m[0].endswith(keep)][:2] if p.tiny else mods[:8]
    return [("lycoris_" + m[0][5:].replace(".", "_"), m[1], m[2], m[3]) for m in mods]


def _locon_args(rank: int) -> dict[str, str]:
    return {"conv_dim": str(max(2, rank // 2)), "conv_alpha": "1"}


def _same(rank: int) -> float:
    return float(rank)


def _one(rank: int) -> float:
    return 1.0


def _zero(rank: int) -> float:
    return 0.0


_WIDE = (2, 4)  # tiny ranks for models with 1536/3072-wide layers


def _registry() -> dict[str, Producer]:
    P = Producer
    rep = dataclasses.replace
    lyco15 = rep(SD15, network_module="lycoris.kohya")
    lyco15_nodim = rep(lyco15, dim_none=True)
    lycoxl = rep(SDXL, network_module="lycoris.kohya")
    pony = rep(
        SDXL, sd_model_name="ponyDiffusionV6XL_v6StartWithThisOne.safetensors", clip_skip=2, dataset_config=False
    )
    illu = rep(SDXL, sd_model_name="illustriousXL_v01.safetensors")
    conv = {"conv_rank": 0, "conv_alpha": 1.0}
    f16, bf16 = ("F16",), ("BF16",)
    # fmt: off
    items = [
        P("kohya-sd15-lora", "kohya", "lora", "sd1", "characters", "SD 1.5",
          ("F16", "BF16", "F32"), (8, 4, 16), _lora_tensors(_m_sd15), _kohya(SD15)),
        P("kohya-sd15-locon", "kohya", "locon", "sd1", "styles", "SD 1.5", ("F16", "BF16"),
          (8, 16), _lora_tensors(_m_sd15_conv, **conv), _kohya(SD15, _locon_args)),
        P("kohya-sd2-lora", "kohya", "lora", "sd2", "concepts", "SD 2.1", f16, (8, 4),
          _lora_tensors(_m_sd2), _kohya(SD2)),
        P("kohya-sdxl-lora", "kohya", "lora", "sdxl", "styles", "SDXL 1.0", ("BF16", "F16"),
          (8, 16, 32), _lora_tensors(_m_sdxl), _kohya(SDXL)),
        P("kohya-sdxl-pony", "kohya", "lora", "sdxl", "characters", "Pony", ("BF16", "F16"),
          (8, 16), _lora_tensors(_m_sdxl), _kohya(pony), hint="pony"),
        P("kohya-sdxl-illustrious", "kohya", "lora", "sdxl", "characters", "Illustrious", bf16,
          (8, 16), _lora_tensors(_m_sdxl), _kohya(illu), hint="illustrious"),
        P("kohya-flux-lora", "kohya", "lora", "flux1", "characters", "Flux.1 D", bf16,
          (8, 4, 16), _lora_tensors(_m_flux), _kohya(FLUX, lambda r: {"train_blocks": "all"}),
          default_alpha=_same, tiny_ranks=_WIDE),
        P("kohya-sd3-lora", "kohya", "lora", "sd3", "styles", "SD 3", bf16, (8, 4),
          _lora_tensors(_mods(A.sd3_kohya)), _kohya(SD3), tiny_ranks=_WIDE),
        P("kohya-oft", "kohya", "oft", "sdxl", "styles", "SDXL 1.0", ("BF16", "F16"),
          (32, 16, 8), _lora_tensors(_m_oft, "oft"),
          _kohya(rep(SDXL, network_module="networks.oft")), default_alpha=_one,
          tiny_ranks=(64, 32)),
        P("kohya-no-metadata", "kohya", "lora", "sd1", "concepts", "SD 1.5", f16, (4, 8),
          _lora_tensors(_m_sd15),
          _kohya(rep(SD15, minimal=True), lambda r: {"module_dropout": "0.1"}),
          carries_trigger=False),
        P("lycoris-loha", "kohya", "loha", "sd1", "styles", "SD 1.5", f16, (8, 4),
          _lora_tensors(_m_sd15, "loha"),
          _kohya(lyco15, _lyco("loha", conv_dim="4", conv_alpha="1")), hash_style="lycoris"),
        P("lycoris-lokr", "kohya", "lokr", "sdxl", "clothing", "SDXL 1.0", bf16, (8, 16),
          _lora_tensors(_m_sdxl, "lokr", factor=8), _kohya(lycoxl, _lyco("lokr", factor="8")),
          hash_style="lycoris", default_alpha=_one),
        P("lycoris-dora", "kohya", "lora", "sdxl", "characters", "SDXL 1.0", bf16, (8, 16),
          _lora_tensors(_m_sdxl, dora=True), _kohya(lycoxl, _lyco("lora", dora_wd="True")),
          dora=True, hash_style="lycoris"),
        P("lycoris-ia3", "kohya", "ia3", "sd1", "styles", "SD 1.5", f16, (1,),
          _lora_tensors(_m_sd15, "ia3"), _kohya(lyco15_nodim, _lyco("ia3")),
          hash_style="lycoris", alpha_source="metadata", default_alpha=_one,
          rank_is_none=True, tiny_ranks=(1,)),
        P("lycoris-full", "kohya", "full", "sd1", "concepts", "SD 1.5", f16, (1,),
          _lora_tensors(_m_full, "full"), _kohya(lyco15_nodim, _lyco("full")),
          hash_style="lycoris", alpha_source="metadata", default_alpha=_one,
          rank_is_none=True, tiny_ranks=(1,)),
        P("lycoris-boft", "kohya", "boft", "sd1", "styles", "SD 1.5", f16, (10,),
          _lora_tensors(_m_boft, "boft"),
          _kohya(lyco15, _lyco("boft", constraint="0")), hash_style="lycoris",
          default_alpha=_zero, tiny_ranks=(10,)),
        P("lycoris-glora", "kohya", "glora", "sd1", "styles", "SD 1.5", f16, (8, 4),
          _lora_tensors(_m_sd15, "glora"), _kohya(lyco15, _lyco("glora")),
          hash_style="lycoris"),
        P("lycoris-norm", "kohya", "norm", "sd1", "concepts", "SD 1.5", f16, (1,),
          _lora_tensors(_mods(A.norm_modules_sd1), "norm"),
          _kohya(lyco15_nodim, _lyco("lora", train_norm="True", preset="norm_only.toml")),
          hash_style="lycoris", alpha_source="metadata", default_alpha=_one,
          rank_is_none=True, tiny_ranks=(1,)),
        P("lycoris-standalone", "kohya", "lokr", "sdxl", "styles", "SDXL 1.0", ("F32",),
          (10000,), _lora_tensors(_m_standalone, "lokr", factor=16), _standalone_meta,
          hash_style="none", carries_trigger=False, default_alpha=_same,
          rank_is_none=True, tiny_ranks=(10000,)),
        P("diffusers-sdxl", "diffusers", "lora", "sdxl", "characters", "SDXL 1.0", ("F32",),
          (4, 8), _lora_tensors(_mods(A.sdxl_diffusers), style="diffusers", alpha=None),
          _diffusers_meta(), hash_style="none", alpha_source="none", carries_trigger=False,
          tiny_ranks=_WIDE),
        P("peft-flux", "peft", "lora", "flux1", "concepts", "Flux.1 D", ("BF16", "F32"),
          (8, 4, 16), _lora_tensors(_mods(A.flux_diffusers), style="peft", alpha=None),
          _diffusers_meta("transformer"), hash_style="none", alpha_source="adapter",
          carries_trigger=False, default_alpha=_same, tiny_ranks=_WIDE),
        P("peft-sd3", "peft", "lora", "sd3", "styles", "SD 3", ("F32",), (4, 8),
          _lora_tensors(_mods(A.sd3_diffusers), style="peft", alpha=None), _diffusers_meta(),
          hash_style="none", alpha_source="none", carries_trigger=False, tiny_ranks=_WIDE),
        P("peft-dora-flux", "peft", "lora", "flux1", "characters", "Flux.1 D", bf16, (8, 4),
          _lora_tensors(_mods(A.flux_diffusers), style="peft", alpha=None, dora=True),
          _diffusers_meta("transformer", dora=True), dora=True, hash_style="none",
          alpha_source="adapter", carries_trigger=False, default_alpha=_same, tiny_ranks=_WIDE),
        P("aitoolkit-flux", "peft", "lora", "flux1", "characters", "Flux.1 D", bf16, (8, 16),
          _lora_tensors(_mods(A.flux_diffusers, norms=True), style="peft", alpha=None),
          _aitk_meta, alpha_source="none", tiny_ranks=_WIDE),
    ]
    # fmt: on
    return {p.id: p for p in items}


#: Every producer by its stable id.
PRODUCERS: Mapping[str, Producer] = _registry()


def producer_ids() -> list[str]:
    """The stable producer ids, in registry order."""
    return list(PRODUCERS)


def produce(producer_id: str, params: LoraParams | None = None, **overrides: Any) -> Produced:
    """Build one LoRA with producer ``producer_id`` (``overrides`` replace ``params`` fields)."""
    try:
        producer = PRODUCERS[producer_id]
    except KeyError:
        raise KeyError(f"unknown producer {producer_id!r}; known: {', '.join(PRODUCERS)}") from None
    return producer(params, **overrides)

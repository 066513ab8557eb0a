"""Classify a LoRA file from its tensor keys, shapes and metadata.

Key naming (kohya / diffusers / PEFT), adapter algorithm (LoRA, LoCon, LoHa,
LoKr, (IA)³, full, OFT, BOFT, GLoRA, norm), DoRA, rank, alpha, components and
the base-model family. Tensor evidence outranks metadata; every source's
answer is recorded so conflicts can be shown.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lorabench.files._header import TensorInfo

__all__ = ["ALGORITHMS", "BASE_FAMILIES", "Detection", "choose_alpha_scalars", "detect"]

ALGORITHMS = ("lora", "locon", "loha", "lokr", "ia3", "full", "oft", "boft", "glora", "norm")
BASE_FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux1", "unknown")

# Parameter suffixes, longest first; each maps to (role, format hint).
_SUFFIXES: list[tuple[str, str, str]] = [
    (".lora_linear_layer.down.weight", "down", "diffusers"),
    (".lora_linear_layer.up.weight", "up", "diffusers"),
    (".lora_magnitude_vector.default.weight", "magnitude", "peft"),
    (".lora_magnitude_vector.default", "magnitude", "peft"),
    (".lora_magnitude_vector", "magnitude", "peft"),
    (".lora_A.default.weight", "down", "peft"),
    (".lora_B.default.weight", "up", "peft"),
    (".lora_down.weight", "down", "kohya"),
    (".lora_up.weight", "up", "kohya"),
    (".lora_mid.weight", "mid", "kohya"),
    (".lora.down.weight", "down", "diffusers"),
    (".lora.up.weight", "up", "diffusers"),
    ("_lora.down.weight", "down", "diffusers"),
    ("_lora.up.weight", "up", "diffusers"),
    (".lora_A.weight", "down", "peft"),
    (".lora_B.weight", "up", "peft"),
    (".lora_A", "down", "peft"),
    (".lora_B", "up", "peft"),
    (".dora_scale", "dora", ""),
    (".hada_w1_a", "hada_w1_a", ""),
    (".hada_w1_b", "hada_w1_b", ""),
    (".hada_w2_a", "hada_w2_a", ""),
    (".hada_w2_b", "hada_w2_b", ""),
    (".hada_t1", "hada_t1", ""),
    (".hada_t2", "hada_t2", ""),
    (".lokr_w1_a", "lokr_w1_a", ""),
    (".lokr_w1_b", "lokr_w1_b", ""),
    (".lokr_w2_a", "lokr_w2_a", ""),
    (".lokr_w2_b", "lokr_w2_b", ""),
    (".lokr_w1", "lokr_w1", ""),
    (".lokr_w2", "lokr_w2", ""),
    (".lokr_t2", "lokr_t2", ""),
    (".on_input", "on_input", ""),
    (".diff_b", "diff_b", ""),
    (".diff", "diff", ""),
    (".oft_blocks", "oft_blocks", ""),
    (".oft_diag", "oft_diag", ""),
    (".rescale", "rescale", ""),
    (".a1.weight", "a1", ""),
    (".a2.weight", "a2", ""),
    (".b1.weight", "b1", ""),
    (".b2.weight", "b2", ""),
    (".bm.weight", "bm", ""),
    (".w_norm", "w_norm", ""),
    (".b_norm", "b_norm", ""),
    (".alpha", "alpha", ""),
    (".weight", "weight", ""),
]

# Component prefixes: (prefix, component, format hint).
_PREFIXES: list[tuple[str, str, str]] = [
    ("lora_unet_", "unet", "kohya"),
    ("lora_te1_", "te1", "kohya"),
    ("lora_te2_", "te2", "kohya"),
    ("lora_te3_", "te3", "kohya"),
    ("lora_te_", "te", "kohya"),
    ("lycoris_", "unet", "kohya"),
    ("oft_unet_", "unet", "kohya"),
    ("oft_te_", "te", "kohya"),
    ("lora_transformer_", "transformer", "kohya"),
    ("text_encoder_2.", "te2", ""),
    ("text_encoder_3.", "te3", ""),
    ("text_encoder.", "te1", ""),
    ("unet.", "unet", ""),
    ("transformer.", "transformer", ""),
    ("diffusion_model.", "transformer", ""),
]

_CONV_MODULE = re.compile(r"(resnets|_conv|conv_in|conv_out|conv_shortcut|downsamplers|upsamplers|"
                          r"in_layers|out_layers|emb_layers|skip_connection|_op$)")  # fmt: skip
_CROSS_K = re.compile(r"attn2[._]to_[kv]$")
_TE_Q = re.compile(r"(self_attn[._]q_proj|self_attn[._]k_proj)$")
_FLUX_KEYS = re.compile(r"(double_blocks|single_blocks|single_transformer_blocks)")
_SD3_KEYS = re.compile(r"(joint_blocks|transformer_blocks[._]\d+[._]attn[._]add_q_proj)")
_SDXL_LDM = re.compile(r"^(lora_unet|oft_unet|lycoris)_(input_blocks|output_blocks|middle_block)_")

_METADATA_FAMILIES: list[tuple[str, str]] = [
    ("sd_v1", "sd1"), ("sd_1", "sd1"), ("sd1", "sd1"), ("v1-", "sd1"),
    ("sd_v2", "sd2"), ("sd_2", "sd2"), ("sd2", "sd2"), ("v2-", "sd2"),
    ("sdxl", "sdxl"), ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v1", "sd1"), ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v3", "sd3"), ("stable-diffusion-3", "sd3"), ("sd_3", "sd3"), ("sd3", "sd3"),
    ("medium", "sd3"), ("5-large", "sd3"), ("5-medium", "sd3"),
    ("flux", "flux1"), ("chroma", "flux1"),
]  # fmt: skip
_HINT_WORDS = [("pony", "pony"), ("illustrious", "illustrious"), ("noobai", "noobai"),
               ("noob", "noobai"), ("animagine", "animagine"), ("chroma", "chroma")]  # fmt: skip
_WIDTH_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl"}


@dataclass
class Module:
    """The tensors of one adapted layer."""

    name: str
    component: str
    roles: dict[str, TensorInfo] = field(default_factory=dict)


@dataclass
class Detection:
    """What the tensors and metadata say about a LoRA file."""

    format: str
    algorithm: str
    algorithm_counts: dict[str, int]
    dora: bool
    rank: int | None
    ranks: list[int]
    alpha: float | None
    alpha_source: str | None
    dtype: str | None
    dtypes: dict[str, int]
    components: dict[str, int]
    n_modules: int
    base_model: str
    base_model_hint: str | None
    base_model_evidence: list[dict[str, Any]]
    base_model_conflict: bool
    warnings: list[dict[str, str]] = field(default_factory=list)


def _split(key: str) -> tuple[str, str, str]:
    for suffix, role, fmt in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role, fmt
    return key, "other", ""


def _component(module: str) -> tuple[str, str, str]:
    name = module.removeprefix("base_model.model.")
    for prefix, component, fmt in _PREFIXES:
        if name.startswith(prefix):
            return component, fmt, name[len(prefix) :]
    return "other", "", name


def group_modules(tensors: dict[str, TensorInfo]) -> tuple[dict[str, Module], Counter[str]]:
    """Group tensor keys by adapted module; count format hints."""
    modules: dict[str, Module] = {}
    hints: Counter[str] = Counter()
    for key, info in tensors.items():
        base, role, fmt = _split(key)
        component, prefix_fmt, _ = _component(base)
        mod = modules.get(base)
        if mod is None:
            mod = modules[base] = Module(base, component)
        mod.roles[role] = info
        if fmt:
            hints[fmt] += 1
        if prefix_fmt:
            hints[prefix_fmt] += 1
    return modules, hints


def _module_algorithm(mod: Module) -> tuple[str | None, int | None]:
    r = mod.roles
    if "up" in r or "down" in r:
        down = r.get("down")
        rank = down.shape[0] if down is not None and down.shape else None
        if down is not None and len(down.shape) == 4 and down.shape[2] * down.shape[3] > 1:
            return "locon", rank
        if _CONV_MODULE.search(mod.name) and down is not None and len(down.shape) == 4:
            return "locon", rank
        return "lora", rank
    if "hada_w1_a" in r:
        b = r.get("hada_w1_b")
        return "loha", (b.shape[0] if b is not None and b.shape else None)
    if "lokr_w1" in r or "lokr_w1_a" in r:
        if "lokr_w2_a" in r and len(r["lokr_w2_a"].shape) >= 2:
            return "lokr", r["lokr_w2_a"].shape[1]
        if "lokr_w1_a" in r and len(r["lokr_w1_a"].shape) >= 2:
            return "lokr", r["lokr_w1_a"].shape[1]
        return "lokr", None
    if "on_input" in r:
        return "ia3", None
    if "diff" in r:
        return "full", None
    if "oft_blocks" in r:
        return ("boft" if len(r["oft_blocks"].shape) == 4 else "oft"), None
    if "oft_diag" in r:
        return "oft", None
    if "a1" in r:
        a1 = r["a1"]
        return "glora", (min(a1.shape) if a1.shape else None)
    if "w_norm" in r or "b_norm" in r:
        return "norm", None
    return None, None


def _input_width(mod: Module) -> int | None:
    """Input features of a module's adapted layer, as far as its tensors show."""
    r = mod.roles
    for role in ("down", "hada_w1_b", "diff", "a1"):
        info = r.get(role)
        if info is not None and len(info.shape) >= 2:
            return info.shape[1]
    if "lokr_w1" in r or "lokr_w1_b" in r:
        w1 = r.get("lokr_w1") or r.get("lokr_w1_b")
        w2 = r.get("lokr_w2") or r.get("lokr_w2_b")
        if w1 is not None and w2 is not None and len(w1.shape) >= 2 and len(w2.shape) >= 2:
            return w1.shape[1] * w2.shape[1]
    return None


def _family_from_text(text: str) -> str | None:
    low = text.lower()
    for prefix, family in _METADATA_FAMILIES:
        if low.startswith(prefix):
            return family
    return None


def _tensor_family(modules: dict[str, Module]) -> list[dict[str, Any]]:
    names = list(modules)
    evidence: list[dict[str, Any]] = []
    if any(_FLUX_KEYS.search(n) for n in names):
        evidence.append({"source": "tensor_keys", "value": "flux1", "confidence": 0.95})
    elif any(_SD3_KEYS.search(n) for n in names):
        widths = {w for m in modules.values() if "to_q" in m.name and (w := _input_width(m))}
        family = "flux1" if 3072 in widths else "sd3"
        evidence.append({"source": "tensor_keys", "value": family, "confidence": 0.9})
    cross = Counter(
        w for m in modules.values() if _CROSS_K.search(_component(m.name)[2]) and (w := _input_width(m))
    )
    if cross:
        width = cross.most_common(1)[0][0]
        if width in _WIDTH_FAMILY:
            evidence.append({"source": "cross_attention_width", "value": _WIDTH_FAMILY[width],
                             "confidence": 0.95, "detail": width})  # fmt: skip
    components = {m.component for m in modules.values()}
    if {"te1", "te2"} <= components and not any(_FLUX_KEYS.search(n) or _SD3_KEYS.search(n) for n in names):
        evidence.append({"source": "text_encoders", "value": "sdxl", "confidence": 0.85})
    if any(_SDXL_LDM.match(n) for n in names):
        evidence.append({"source": "unet_block_names", "value": "sdxl", "confidence": 0.85})
    te = Counter(w for m in modules.values() if m.component == "te" and _TE_Q.search(m.name)
                 and (w := _input_width(m)))  # fmt: skip
    if te:
        width = te.most_common(1)[0][0]
        if width in (768, 1024):
            evidence.append({"source": "text_encoder_width", "value": _WIDTH_FAMILY[width],
                             "confidence": 0.8, "detail": width})  # fmt: skip
    return evidence


def _metadata_family(metadata: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    evidence: list[dict[str, Any]] = []
    hints: list[str] = []
    version = metadata.get("ss_base_model_version", "")
    if version and (fam := _family_from_text(version)):
        item = {"source": "ss_base_model_version", "value": fam, "confidence": 0.7, "detail": version}
        evidence.append(item)
    arch = metadata.get("modelspec.architecture", "")
    if arch and (fam := _family_from_text(arch)):
        evidence.append({"source": "modelspec.architecture", "value": fam, "confidence": 0.7, "detail": arch})
    if metadata.get("ss_v2") == "True":
        evidence.append({"source": "ss_v2", "value": "sd2", "confidence": 0.6})
    for key in ("ss_sd_model_name", "modelspec.title", "ss_base_model_version", "modelspec.architecture"):
        low = metadata.get(key, "").lower()
        hints.extend(hint for word, hint in _HINT_WORDS if word in low)
    if "score_9" in metadata.get("ss_tag_frequency", ""):
        hints.append("pony")
    return evidence, hints


def _decide(evidence: list[dict[str, Any]]) -> tuple[str, bool]:
    if not evidence:
        return "unknown", False
    score: Counter[str] = Counter()
    for item in evidence:
        score[item["value"]] += item["confidence"]
    # Tensors outrank metadata: when any tensor evidence exists, only its answers compete.
    values = sorted({e["value"] for e in evidence})
    from_tensors = [v for v in values if any(e["value"] == v and e["source"] not in _METADATA_SOURCES
                                             for e in evidence)]  # fmt: skip
    best = max(from_tensors or values, key=lambda v: score[v])
    return best, len(values) > 1


_METADATA_SOURCES = frozenset({"ss_base_model_version", "modelspec.architecture", "ss_v2"})


def choose_alpha_scalars(tensors: dict[str, TensorInfo], metadata: dict[str, str]) -> list[str]:
    """Pick the alpha tensors worth reading (one, and only when metadata has no alpha)."""
    if _metadata_alpha(metadata) is not None:
        return []
    for name in sorted(tensors):
        if name.endswith(".alpha") and tensors[name].shape in ((), (1,)):
            return [name]
    return []


def _metadata_alpha(metadata: dict[str, str]) -> tuple[float, str] | None:
    raw = metadata.get("ss_network_alpha")
    if raw not in (None, "", "None"):
        try:
            value = float(raw)  # type: ignore[arg-type]
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value, "ss_network_alpha"
    adapter = metadata.get("lora_adapter_metadata")
    if adapter and len(adapter) < 1_000_000:
        try:
            doc = json.loads(adapter)
        except (ValueError, RecursionError):
            return None
        if isinstance(doc, dict):
            for key in ("transformer.lora_alpha", "unet.lora_alpha", "lora_alpha"):
                value = doc.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    return float(value), "lora_adapter_metadata"
    return None


def detect(
    tensors: dict[str, TensorInfo], metadata: dict[str, str], values: dict[str, float] | None = None
) -> Detection:
    """Classify a LoRA from its header (and the scalar ``values`` read for it)."""
    modules, hints = group_modules(tensors)
    algos: Counter[str] = Counter()
    ranks: Counter[int] = Counter()
    components: Counter[str] = Counter()
    dora = False
    for mod in modules.values():
        algo, rank = _module_algorithm(mod)
        if "dora" in mod.roles or "magnitude" in mod.roles:
            dora = True
        if algo is None:
            continue
        algos[algo] += 1
        components[mod.component] += 1
        if rank:
            ranks[rank] += 1
    warnings: list[dict[str, str]] = []
    kinds = set(algos) - {"lora"} if "locon" in algos else set(algos)
    algorithm = "mixed" if len(kinds) > 1 else (next(iter(kinds)) if kinds else "unknown")
    declared = _declared_algo(metadata)
    if declared and algorithm not in ("mixed", "unknown") and declared not in (algorithm, "locon", "lora"):
        msg = f"network_args say {declared!r} but tensors show {algorithm!r}"
        warnings.append({"code": "algorithm_conflict", "message": msg})
    fmt = "unknown"
    if hints:
        fmt = max(("peft", "diffusers", "kohya"), key=lambda f: hints.get(f, 0))
        if hints.get(fmt, 0) == 0:
            fmt = "unknown"
    dtypes = Counter(t.dtype for t in tensors.values() if t.shape not in ((), (1,)))
    alpha, alpha_source = _alpha(metadata, values or {}, warnings)
    rank = ranks.most_common(1)[0][0] if ranks else _int_or_none(metadata.get("ss_network_dim"))
    evidence = _tensor_family(modules)
    meta_evidence, hint_list = _metadata_family(metadata)
    evidence += meta_evidence
    family, conflict = _decide(evidence)
    return Detection(
        format=fmt, algorithm=algorithm, algorithm_counts=dict(algos), dora=dora,
        rank=rank, ranks=sorted(ranks), alpha=alpha, alpha_source=alpha_source,
        dtype=dtypes.most_common(1)[0][0] if dtypes else None, dtypes=dict(dtypes),
        components=dict(components), n_modules=sum(algos.values()),
        base_model=family, base_model_hint=hint_list[0] if hint_list else None,
        base_model_evidence=evidence, base_model_conflict=conflict, warnings=warnings,
    )  # fmt: skip


def _declared_algo(metadata: dict[str, str]) -> str | None:
    raw = metadata.get("ss_network_args", "")
    if not raw.startswith("{") or len(raw) > 100_000:
        return None
    try:
        args = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    algo = args.get("algo") if isinstance(args, dict) else None
    return _DECLARED.get(str(algo).lower())


_DECLARED = {"lora": "lora", "locon": "locon", "loha": "loha", "lokr": "lokr", "ia3": "ia3", "full": "full",
             "diag-oft": "oft", "boft": "boft", "glora": "glora", "dylora": "lora"}  # fmt: skip


def _alpha(
    metadata: dict[str, str], values: dict[str, float], warnings: list[dict[str, str]]
) -> tuple[float | None, str | None]:
    found = _metadata_alpha(metadata)
    if found is not None:
        return found
    for name, value in values.items():
        if name.endswith(".alpha"):
            if not math.isfinite(value):
                warnings.append({"code": "alpha_not_finite", "message": f"{name} stores {value}"})
                return None, None
            return float(value), "alpha_tensor"
    return None, None


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "", "None") else None  # type: ignore[arg-type]
    except ValueError:
        return None

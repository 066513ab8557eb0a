"""Real module names and widths of the base models, and per-algorithm tensor emitters.

Module tables keep the true in/out widths of the layers that identify a base model
(cross-attention ``attn2_to_k``/``to_v`` input 768 / 1024 / 2048, text encoders 768 /
1024 / 1280, Flux hidden 3072 with ``img_attn_qkv`` out 9216, SD3-medium hidden 1536)
but only a handful of modules per component.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._writer import TensorSpec, scalar_bytes

__all__ = [
    "Module",
    "component_of",
    "emit",
    "flux_diffusers",
    "flux_kohya",
    "norm_modules_sd1",
    "sd1_conv",
    "sd3_diffusers",
    "sd3_kohya",
    "sd_te",
    "sd_unet",
    "sdxl_diffusers",
    "sdxl_unet",
]

#: ``(name, in_features, out_features, kernel)``: kernel 0 = Linear, 1 = 1x1 conv,
#: 3 = 3x3 conv. ``name`` is the full module name (kohya: prefix + path with ``_``;
#: diffusers/PEFT: dotted path including the component prefix).
Module = tuple[str, int, int, int]

_ATTN_SUFFIXES = ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q",
                  "attn2_to_k", "attn2_to_v", "attn2_to_out_0")  # fmt: skip


def _transformer_block(path: str, ch: int, ctx: int, ff: bool = True) -> list[Module]:
    mods: list[Module] = []
    for suffix in _ATTN_SUFFIXES:
        cin = ctx if suffix in ("attn2_to_k", "attn2_to_v") else ch
        mods.append((f"{path}_{suffix}", cin, ch, 0))
    if ff:
        mods.append((f"{path}_ff_net_0_proj", ch, ch * 8, 0))
        mods.append((f"{path}_ff_net_2", ch * 4, ch, 0))
    return mods


def sd_unet(version: int, *, tiny: bool) -> list[Module]:
    """SD1 (``version=1``, ctx 768, 1x1-conv proj) or SD2 (ctx 1024, Linear proj) UNet."""
    ctx, kernel = (768, 1) if version == 1 else (1024, 0)
    if tiny:
        base = "lora_unet_down_blocks_0_attentions_0"
        return [
            (f"{base}_transformer_blocks_0_attn2_to_k", ctx, 320, 0),
            (f"{base}_proj_in", 320, 320, kernel),
        ]
    mods: list[Module] = []
    for block, ch in (("down_blocks_0_attentions_0", 320), ("mid_block_attentions_0", 1280),
                      ("up_blocks_1_attentions_2", 1280)):  # fmt: skip
        base = f"lora_unet_{block}"
        mods.append((f"{base}_proj_in", ch, ch, kernel))
        mods.extend(_transformer_block(f"{base}_transformer_blocks_0", ch, ctx))
        mods.append((f"{base}_proj_out", ch, ch, kernel))
    return mods


def sd1_conv(*, tiny: bool) -> list[Module]:
    """SD1 ResNet / down- and upsampler convolutions (LoCon, "C3Lier")."""
    if tiny:
        return [("lora_unet_down_blocks_0_resnets_0_conv1", 320, 320, 3)]
    return [
        ("lora_unet_down_blocks_0_resnets_0_conv1", 320, 320, 3),
        ("lora_unet_down_blocks_0_resnets_0_conv2", 320, 320, 3),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", 320, 320, 3),
        ("lora_unet_up_blocks_1_resnets_0_conv_shortcut", 2560, 1280, 1),
        ("lora_unet_up_blocks_1_upsamplers_0_conv", 1280, 1280, 3),
    ]


def sd_te(prefix: str, width: int, layers: Iterable[int], *, tiny: bool) -> list[Module]:
    """CLIP text-encoder attention and MLP modules (``lora_te_``, ``lora_te1_``, …)."""
    if tiny:
        base = f"{prefix}_text_model_encoder_layers_0"
        return [(f"{base}_self_attn_q_proj", width, width, 0)]
    mods: list[Module] = []
    for layer in layers:
        base = f"{prefix}_text_model_encoder_layers_{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mods.append((f"{base}_self_attn_{proj}", width, width, 0))
        mods.append((f"{base}_mlp_fc1", width, width * 4, 0))
        mods.append((f"{base}_mlp_fc2", width * 4, width, 0))
    return mods


def sdxl_unet(*, tiny: bool, prefix: str = "lora_unet") -> list[Module]:
    """SDXL UNet with sd-scripts' LDM names (``input_blocks_4_1``), ctx 2048."""
    if tiny:
        return [
            (f"{prefix}_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048, 640, 0),
            (f"{prefix}_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 640, 640, 0),
        ]
    mods: list[Module] = [(f"{prefix}_input_blocks_4_1_proj_in", 640, 640, 0)]
    for block, ch, tb in (("input_blocks_4_1", 640, 0), ("middle_block_1", 1280, 0),
                          ("output_blocks_4_1", 640, 1)):  # fmt: skip
        mods.extend(_transformer_block(f"{prefix}_{block}_transformer_blocks_{tb}", ch, 2048))
    mods.append((f"{prefix}_input_blocks_4_1_proj_out", 640, 640, 0))
    return mods


def flux_kohya(*, tiny: bool) -> list[Module]:
    """FLUX.1 with sd-scripts ``networks.lora_flux`` names, hidden 3072."""
    double = {"attn_qkv": (3072, 9216), "attn_proj": (3072, 3072), "mlp_0": (3072, 12288),
              "mlp_2": (12288, 3072), "mod_lin": (3072, 18432)}  # fmt: skip
    single = {"linear1": (3072, 21504), "linear2": (15360, 3072), "modulation_lin": (3072, 9216)}
    if tiny:
        return [
            ("lora_unet_double_blocks_0_img_attn_qkv", 3072, 9216, 0),
        ]
    mods: list[Module] = []
    for i in (0,):
        for stream in ("img", "txt"):
            for leaf, (cin, cout) in double.items():
                mods.append((f"lora_unet_double_blocks_{i}_{stream}_{leaf}", cin, cout, 0))
    for i in (37,):
        for leaf, (cin, cout) in single.items():
            mods.append((f"lora_unet_single_blocks_{i}_{leaf}", cin, cout, 0))
    return mods


def sd3_kohya(*, tiny: bool) -> list[Module]:
    """SD3-medium MMDiT with sd-scripts ``networks.lora_sd3`` names, hidden 1536."""
    leaves = {"attn_qkv": (1536, 4608), "attn_proj": (1536, 1536), "mlp_fc1": (1536, 6144),
              "mlp_fc2": (6144, 1536), "adaLN_modulation_1": (1536, 9216)}  # fmt: skip
    if tiny:
        return [
            ("lora_unet_joint_blocks_0_x_block_attn_qkv", 1536, 4608, 0),
            ("lora_unet_joint_blocks_0_context_block_attn_proj", 1536, 1536, 0),
        ]
    mods: list[Module] = []
    for i in (0, 12):
        for part in ("x_block", "context_block"):
            for leaf, (cin, cout) in leaves.items():
                mods.append((f"lora_unet_joint_blocks_{i}_{part}_{leaf}", cin, cout, 0))
    return mods


def _dit_double(prefix: str, i: int, h: int, *, norms: bool) -> list[Module]:
    base = f"{prefix}transformer_blocks.{i}"
    leaves = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")
    mods: list[Module] = [(f"{base}.attn.{leaf}", h, h, 0) for leaf in (*leaves, "to_add_out")]
    for ff in ("ff", "ff_context"):
        mods.append((f"{base}.{ff}.net.0.proj", h, h * 4, 0))
        mods.append((f"{base}.{ff}.net.2", h * 4, h, 0))
    if norms:
        mods.append((f"{base}.norm1.linear", h, h * 6, 0))
        mods.append((f"{base}.norm1_context.linear", h, h * 6, 0))
    return mods


def flux_diffusers(*, tiny: bool, norms: bool = False, prefix: str = "transformer.") -> list[Module]:
    """FLUX.1 in diffusers module names (``transformer_blocks``, ``single_transformer_blocks``)."""
    if tiny:
        return [
            (f"{prefix}transformer_blocks.0.attn.add_q_proj", 3072, 3072, 0),
            (f"{prefix}single_transformer_blocks.0.attn.to_q", 3072, 3072, 0),
        ]
    mods: list[Module] = _dit_double(prefix, 0, 3072, norms=norms)
    for i in (37,):
        base = f"{prefix}single_transformer_blocks.{i}"
        mods.extend((f"{base}.attn.{leaf}", 3072, 3072, 0) for leaf in ("to_q", "to_k", "to_v"))
        mods.append((f"{base}.proj_mlp", 3072, 12288, 0))
        mods.append((f"{base}.proj_out", 15360, 3072, 0))
        if norms:
            mods.append((f"{base}.norm.linear", 3072, 9216, 0))
    return mods


def sd3_diffusers(*, tiny: bool) -> list[Module]:
    """SD3-medium in diffusers names (joint blocks only, no single blocks), hidden 1536."""
    if tiny:
        return [
            ("transformer.transformer_blocks.0.attn.to_q", 1536, 1536, 0),
            ("transformer.transformer_blocks.0.attn.add_q_proj", 1536, 1536, 0),
        ]
    return _dit_double("transformer.", 0, 1536, norms=False) + _dit_double("transformer.", 12, 1536, norms=False)


def sdxl_diffusers(*, tiny: bool) -> list[Module]:
    """SDXL as the diffusers DreamBooth-LoRA script names it (attention processors)."""
    unet: list[tuple[str, int, int]] = [
        ("unet.down_blocks.1.attentions.0.transformer_blocks.0", 640, 0),
        ("unet.mid_block.attentions.0.transformer_blocks.0", 1280, 0),
        ("unet.up_blocks.1.attentions.2.transformer_blocks.1", 640, 0),
    ]
    mods: list[Module] = []
    if tiny:
        base = unet[0][0]
        mods.append((f"{base}.attn2.to_k", 2048, 640, 0))
    else:
        for base, ch, _ in unet:
            for attn in ("attn1", "attn2"):
                for leaf in ("to_q", "to_k", "to_v", "to_out.0"):
                    cin = 2048 if attn == "attn2" and leaf in ("to_k", "to_v") else ch
                    mods.append((f"{base}.{attn}.{leaf}", cin, ch, 0))
    for comp, width, last in (("text_encoder", 768, 11), ("text_encoder_2", 1280, 31)):
        for layer in (0,) if tiny else (0, last):
            base = f"{comp}.text_model.encoder.layers.{layer}.self_attn"
            leaves = ("q_proj",) if tiny else ("q_proj", "k_proj", "v_proj", "out_proj")
            mods.extend((f"{base}.{leaf}", width, width, 0) for leaf in leaves)
    return mods


def norm_modules_sd1(*, tiny: bool) -> list[Module]:
    """SD1 GroupNorm / LayerNorm modules (LyCORIS ``train_norm``); in = out = channels."""
    mods: list[Module] = [
        ("lora_unet_down_blocks_0_attentions_0_norm", 320, 320, 0),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm1", 320, 320, 0),
        ("lora_te_text_model_encoder_layers_0_layer_norm1", 768, 768, 0),
    ]
    if not tiny:
        mods += [
            ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm2", 320, 320, 0),
            ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_norm3", 320, 320, 0),
            ("lora_unet_mid_block_attentions_0_norm", 1280, 1280, 0),
            ("lora_te_text_model_encoder_layers_0_layer_norm2", 768, 768, 0),
            ("lora_te_text_model_final_layer_norm", 768, 768, 0),
        ]
    return mods


_COMPONENTS = (
    ("lora_unet_", "unet"), ("oft_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"),
    ("lora_te3_", "te3"), ("lora_te_", "te"), ("unet.", "unet"), ("text_encoder_2.", "te2"),
    ("text_encoder.", "te1"), ("transformer.", "transformer"), ("lycoris_", "unet"),
)  # fmt: skip


def component_of(module_name: str) -> str:
    """The component a module belongs to (``unet``, ``te``, ``te1``, ``transformer``, …)."""
    for prefix, comp in _COMPONENTS:
        if module_name.startswith(prefix):
            return comp
    raise ValueError(f"no component for {module_name!r}")


def _factor(dim: int, factor: int) -> tuple[int, int]:
    """LyCORIS ``factorization`` for a divisible ``factor``: (small, large)."""
    if dim % factor == 0:
        small, large = sorted((factor, dim // factor))
        return small, large
    raise ValueError(f"{dim} is not divisible by {factor}")


def _kshape(mod: Module) -> tuple[int, ...]:
    return (mod[3], mod[3]) if mod[3] else ()


def emit(
    algo: str,
    mods: Iterable[Module],
    *,
    dtype: str,
    rank: int,
    alpha: float | None,
    style: str = "kohya",
    conv_rank: int | None = None,
    conv_alpha: float | None = None,
    dora: bool = False,
    factor: int = 8,
) -> dict[str, TensorSpec]:
    """Tensors for ``mods`` under ``algo`` in insertion order (own params, buffers, children).

    ``style`` picks the LoRA key form: ``kohya`` (``lora_down``/``lora_up``), ``peft``
    (``lora_A``/``lora_B``), ``diffusers`` (``lora.down``; ``lora_linear_layer.down`` for
    text encoders).
    """
    out: dict[str, TensorSpec] = {}
    for mod in mods:
        name, cin, cout, k = mod
        ks = _kshape(mod)
        conv = k > 0
        r = conv_rank if (k == 3 and conv_rank) else rank
        a = conv_alpha if (k == 3 and conv_alpha is not None) else alpha
        alpha_t: TensorSpec | None = None
        if a is not None:
            alpha_t = (dtype, (), scalar_bytes(dtype, a))
        if algo == "lora":
            if style == "kohya":
                if dora:
                    dshape = (cout, 1, 1, 1) if conv else (cout, 1)
                    out[f"{name}.dora_scale"] = (dtype, dshape, None)
                if alpha_t is not None:
                    out[f"{name}.alpha"] = alpha_t
                out[f"{name}.lora_down.weight"] = (dtype, (r, cin, *ks), None)
                out[f"{name}.lora_up.weight"] = (dtype, (cout, r, *((1, 1) if conv else ())), None)
            elif style == "peft":
                out[f"{name}.lora_A.weight"] = (dtype, (r, cin), None)
                out[f"{name}.lora_B.weight"] = (dtype, (cout, r), None)
                if dora:
                    out[f"{name}.lora_magnitude_vector"] = (dtype, (cout,), None)
            else:  # diffusers
                infix = "lora_linear_layer" if name.startswith("text_encoder") else "lora"
                out[f"{name}.{infix}.down.weight"] = (dtype, (r, cin), None)
                out[f"{name}.{infix}.up.weight"] = (dtype, (cout, r), None)
        elif algo == "loha":
            flat_in = cin * (k * k if conv else 1)
            for w in ("w1", "w2"):
                out[f"{name}.hada_{w}_a"] = (dtype, (cout, r), None)
                out[f"{name}.hada_{w}_b"] = (dtype, (r, flat_in), None)
            if alpha_t is not None:
                out[f"{name}.alpha"] = alpha_t
        elif algo == "lokr":
            a_, b_ = _factor(cout, factor)
            c_, d_ = _factor(cin, factor)
            out[f"{name}.lokr_w1"] = (dtype, (a_, c_), None)
            if rank >= max(b_, d_) / 2:  # LyCORIS falls back to a full w2
                out[f"{name}.lokr_w2"] = (dtype, (b_, d_), None)
            else:
                out[f"{name}.lokr_w2_a"] = (dtype, (b_, r), None)
                out[f"{name}.lokr_w2_b"] = (dtype, (r, d_), None)
            if alpha_t is not None:
                out[f"{name}.alpha"] = alpha_t
        elif algo == "ia3":
            on_input = name.endswith(("ff_net_2", "mlp_fc2"))
            dim = cin if on_input else cout
            out[f"{name}.weight"] = (dtype, (1, dim, 1, 1) if conv else (dim,), None)
            out[f"{name}.on_input"] = (dtype, (), scalar_bytes(dtype, float(on_input)))
        elif algo == "full":
            out[f"{name}.diff"] = (dtype, (cout, cin, *ks), None)
            if not name.endswith(("to_q", "to_k", "to_v")):  # q/k/v projections have no bias
                out[f"{name}.diff_b"] = (dtype, (cout,), None)
        elif algo == "oft":  # sd-scripts networks.oft: rank = number of blocks
            if alpha_t is not None:
                out[f"{name}.alpha"] = alpha_t
            out[f"{name}.oft_blocks"] = (dtype, (r, cout // r, cout // r), None)
        elif algo == "boft":  # block size = rank, block_num a power of two
            block_num = cout // r
            boft_m = block_num.bit_length()  # popcount(block_num - 1) + 1 for powers of two
            out[f"{name}.oft_blocks"] = (dtype, (boft_m, block_num, r, r), None)
            if alpha_t is not None:
                out[f"{name}.alpha"] = alpha_t
        elif algo == "glora":
            if alpha_t is not None:
                out[f"{name}.alpha"] = alpha_t
            out[f"{name}.a1.weight"] = (dtype, (cin, r), None)
            out[f"{name}.a2.weight"] = (dtype, (r, cin), None)
            out[f"{name}.b1.weight"] = (dtype, (cout, r), None)
            out[f"{name}.b2.weight"] = (dtype, (r, cin), None)
        elif algo == "norm":
            out[f"{name}.w_norm"] = (dtype, (cout,), None)
            out[f"{name}.b_norm"] = (dtype, (cout,), None)
        else:
            raise ValueError(f"unknown algorithm {algo!r}")
    return out

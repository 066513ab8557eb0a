"""lorabench.samples: valid safetensors, real key forms, sidecars, previews, determinism."""

from __future__ import annotations

import hashlib
import json
import pickletools
import re
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save as st_save

from lorabench.samples import (
    PREVIEW_KINDS,
    PRODUCERS,
    SIDECAR_KINDS,
    build_library,
    produce,
    producer_ids,
    serialize,
    write_safetensors,
)

DTYPE_RANK = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32",
              "U32", "F32", "F64", "I64", "U64"]  # fmt: skip
PARAM_SUFFIXES = (
    ".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale", ".lora_A.weight",
    ".lora_B.weight", ".lora_magnitude_vector", ".lora.down.weight", ".lora.up.weight",
    ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight", ".hada_w1_a",
    ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".lokr_w1", ".lokr_w2", ".lokr_w2_a",
    ".lokr_w2_b", ".on_input", ".weight", ".diff", ".diff_b", ".oft_blocks", ".a1.weight",
    ".a2.weight", ".b1.weight", ".b2.weight", ".w_norm", ".b_norm",
)  # fmt: skip
SCHEMA = {"producer", "format", "algorithm", "dora", "base_model", "base_model_hint", "rank",
          "alpha", "dtype", "trigger_words", "components", "tensor_sha256", "sha256", "error"}  # fmt: skip


def read_header(raw: bytes) -> tuple[int, dict]:
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def module_of(key: str) -> str:
    for suffix in sorted(PARAM_SUFFIXES, key=len, reverse=True):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise AssertionError(key)


def component(module: str) -> str:
    for prefix, comp in (("lora_unet_", "unet"), ("oft_unet_", "unet"), ("lora_te1_", "te1"),
                         ("lora_te2_", "te2"), ("lora_te_", "te"), ("lycoris_", "unet"),
                         ("unet.", "unet"), ("text_encoder_2.", "te2"), ("text_encoder.", "te1"),
                         ("transformer.", "transformer")):  # fmt: skip
        if module.startswith(prefix):
            return comp
    raise AssertionError(module)


def scalar(raw: bytes, dtype: str) -> float:
    if dtype == "BF16":
        return float(np.frombuffer(b"\0\0" + raw, "<f4")[0])
    return float(np.frombuffer(raw, {"F16": "<f2", "F32": "<f4"}[dtype])[0])


def check_file(path: Path, expected: dict, meta_in: dict | None = None) -> dict:
    """Validate layout, safetensors loading and every expected fact of one LoRA file."""
    raw = path.read_bytes()
    n, header = read_header(raw)
    assert n % 8 == 0
    assert raw[8 : 8 + n].decode().startswith('{"__metadata__":')
    assert raw[8 : 8 + n] == raw[8 : 8 + n].rstrip(b" ") + b" " * (n - len(raw[8 : 8 + n].rstrip()))
    meta = header.pop("__metadata__")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    if meta_in is not None:
        assert meta == meta_in
    names = list(header)
    assert names == sorted(names, key=lambda k: (-DTYPE_RANK.index(header[k]["dtype"]), k))
    pos = 0
    for name in names:
        begin, end = header[name]["data_offsets"]
        assert begin == pos
        pos = end
    assert 8 + n + pos == len(raw)
    with safe_open(path, "np") as f:
        assert set(f.keys()) == set(names)
        assert f.metadata() == meta
        for name in names:
            sl = f.get_slice(name)
            assert sl.get_shape() == header[name]["shape"]
            assert sl.get_dtype() == header[name]["dtype"]
            if header[name]["dtype"] != "BF16":
                arr = f.get_tensor(name)
                assert list(arr.shape) == header[name]["shape"]
                assert np.isfinite(arr).all()
    region = raw[8 + n :]
    assert expected["sha256"] == hashlib.sha256(raw).hexdigest()
    assert expected["tensor_sha256"] == hashlib.sha256(region).hexdigest()
    producer = PRODUCERS[expected["producer"]]
    if producer.hash_style == "kohya":
        assert meta["sshs_model_hash"] == hashlib.sha256(region).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{8}", meta["sshs_legacy_hash"])
    elif producer.hash_style == "lycoris":  # sha256 of raw tensors in insertion order
        assert re.fullmatch(r"0x[0-9a-f]{64}", meta["sshs_model_hash"])
    else:
        assert "sshs_model_hash" not in meta
    check_facts(header, meta, raw[8 + n :], expected)
    return meta


def check_facts(header: dict, meta: dict, region: bytes, exp: dict) -> None:
    assert set(exp) >= SCHEMA
    modules = Counter(module_of(k) for k in header)
    comps = Counter(component(m) for m in modules)
    assert dict(comps) == exp["components"]
    dtypes = {v["dtype"] for v in header.values()}
    assert dtypes == {exp["dtype"]}
    keys = list(header)
    fmt = exp["format"]
    if fmt == "peft":
        assert all(k.startswith("transformer.") for k in keys)
        assert any(k.endswith(".lora_A.weight") for k in keys)
    elif fmt == "diffusers":
        assert any(".lora.down.weight" in k for k in keys)
        assert any(".lora_linear_layer.down.weight" in k for k in keys)
    else:
        assert all(k.startswith(("lora_", "oft_", "lycoris_")) for k in keys)
    algo = exp["algorithm"]
    detector = {"lora": ".lora_", "locon": ".lora_down.weight", "loha": ".hada_w1_a",
                "lokr": ".lokr_w1", "ia3": ".on_input", "full": ".diff", "oft": ".oft_blocks",
                "boft": ".oft_blocks", "glora": ".a1.weight", "norm": ".w_norm"}[algo]  # fmt: skip
    assert any(detector in k for k in keys)
    if algo == "locon":
        assert any(len(v["shape"]) == 4 and v["shape"][2] == 3 for v in header.values())
    if algo in ("oft", "boft"):
        ndim = {len(v["shape"]) for k, v in header.items() if k.endswith(".oft_blocks")}
        assert ndim == {3 if algo == "oft" else 4}
    assert exp["dora"] == any(k.endswith((".dora_scale", ".lora_magnitude_vector")) for k in keys)
    # rank, from the tensors
    ranks = Counter()
    for k, v in header.items():
        s = v["shape"]
        if k.endswith((".lora_down.weight", ".lora_A.weight", ".lora.down.weight",
                       ".lora_linear_layer.down.weight", ".hada_w1_b", ".a2.weight")):  # fmt: skip
            ranks[s[0]] += 1
        elif k.endswith(".lokr_w2_a"):
            ranks[s[1]] += 1
        elif k.endswith(".oft_blocks"):
            ranks[s[0] if len(s) == 3 else s[-1]] += 1
    if exp["rank"] is None:
        assert algo in ("ia3", "full", "norm", "lokr")
    else:
        assert ranks.most_common(1)[0][0] == exp["rank"]
    # alpha: the alpha tensors, else the PEFT adapter metadata, else ss_network_alpha
    alphas = Counter(
        scalar(region[v["data_offsets"][0] : v["data_offsets"][1]], v["dtype"])
        for k, v in header.items() if k.endswith(".alpha")
    )  # fmt: skip
    if alphas:
        assert alphas.most_common(1)[0][0] == exp["alpha"]
    elif "lora_adapter_metadata" in meta:
        assert json.loads(meta["lora_adapter_metadata"])["transformer.lora_alpha"] == exp["alpha"]
    elif meta.get("ss_network_alpha", "None") != "None":
        assert float(meta["ss_network_alpha"]) == exp["alpha"]
    else:
        assert exp["alpha"] is None
    # base model: decisive widths where the identifying modules are present
    for k, v in header.items():
        s = v["shape"]
        if re.search(r"attn2[._]to_[kv]\.(lora_down|lora\.down|lora_A)\.weight$", k):
            assert s[1] == {"sd1": 768, "sd2": 1024, "sdxl": 2048}[exp["base_model"]]
        if k.endswith("img_attn_qkv.lora_up.weight"):
            assert s[0] == 9216
        if ".text_model." not in k and re.search(r"(te1_|text_encoder\.).*q_proj.*down", k):
            assert s[1] == 768
    if exp["base_model"] == "flux1":
        assert any("double_blocks" in k or "single_transformer_blocks" in k for k in keys)
    if exp["base_model"] == "sd3":
        assert any("joint_blocks" in k or "add_q_proj" in k for k in keys)
        assert not any("single" in k for k in keys)
    # trigger words appear in the file
    for word in exp["trigger_words"]:
        dirs = json.loads(meta.get("ss_tag_frequency", "{}"))
        assert meta.get("modelspec.trigger_phrase") == word or any(
            re.fullmatch(rf"\d+_{re.escape(word)}", d) for d in dirs
        )


@pytest.mark.parametrize("tiny", [False, True], ids=["full", "tiny"])
@pytest.mark.parametrize("pid", producer_ids())
def test_producer_writes_a_valid_file(tmp_path: Path, pid: str, tiny: bool) -> None:
    tensors, meta, expected = produce(pid, tiny=tiny, seed=3, name="my_lora", trigger="zkz fox")
    assert expected["producer"] == pid
    path = tmp_path / f"{pid}.safetensors"
    write_safetensors(path, tensors, meta)
    assert path.read_bytes() == serialize(tensors, meta)
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temporary file
    check_file(path, expected, meta)
    if PRODUCERS[pid].hash_style == "lycoris":
        digest = hashlib.sha256(b"".join(spec[2] for spec in tensors.values())).hexdigest()
        assert meta["sshs_model_hash"] == "0x" + digest
    if tiny:
        assert 1 <= sum(expected["components"].values()) <= 6


def test_producer_metadata_encodings() -> None:
    _, meta, _ = produce("kohya-sd15-lora", trigger="sks dog", dataset_config=False)
    assert meta["ss_resolution"] == "(512, 512)"
    assert meta["ss_v2"] == "False"
    assert meta["ss_clip_skip"] == "None"
    (folder,) = json.loads(meta["ss_dataset_dirs"])
    assert re.fullmatch(r"\d+_sks dog", folder)
    assert json.loads(meta["ss_tag_frequency"])[folder]["sks dog"] > 0
    assert "buckets" in json.loads(meta["ss_bucket_info"])
    assert "ss_datasets" not in meta
    _, meta, _ = produce("kohya-sdxl-lora", dataset_config=True)
    datasets = json.loads(meta["ss_datasets"])
    assert datasets[0]["subsets"][0]["num_repeats"] >= 1
    assert "ss_resolution" not in meta
    assert "ss_batch_size_per_device" not in meta
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", meta["modelspec.date"])
    _, meta, _ = produce("lycoris-loha")
    assert json.loads(meta["ss_network_args"]) == {"algo": "loha", "conv_dim": "4",
                                                   "conv_alpha": "1"}  # fmt: skip
    _, meta, _ = produce("kohya-no-metadata")
    assert {k for k in meta if k.startswith("ss_")} == {
        "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim",
        "ss_network_alpha", "ss_network_args"}  # fmt: skip
    _, meta, exp = produce("aitoolkit-flux", trigger="p3r5on")
    assert json.loads(meta["ss_tag_frequency"]) == {"1_p3r5on": {"p3r5on": 1}}
    assert json.loads(meta["software"])["name"] == "ai-toolkit"
    assert meta["format"] == "pt"
    assert exp["trigger_words"] == ["p3r5on"]
    assert exp["alpha"] is None
    _, meta, exp = produce("peft-flux", rank=8)
    assert json.loads(meta["lora_adapter_metadata"])["transformer.r"] == 8
    _, meta, exp = produce("kohya-sdxl-pony")
    assert meta["ss_sd_model_name"].startswith("ponyDiffusionV6XL")
    assert exp["base_model"] == "sdxl"
    assert exp["base_model_hint"] == "pony"
    _, meta, _ = produce("kohya-sd15-lora", thumbnail=True)
    assert meta["modelspec.thumbnail"].startswith("data:image/png;base64,")


def test_writer_matches_reference_serializer() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "b.weight": rng.standard_normal((3, 5)).astype(np.float16),
        "a.weight": rng.standard_normal((2, 2)).astype(np.float32),
        "c.alpha": np.array(4.0, dtype=np.float16),
        "d.step": np.array([7], dtype=np.int64),
        "e.mask": np.array([True, False]),
    }
    ours = {k: ({"float16": "F16", "float32": "F32", "int64": "I64", "bool": "BOOL"}[
        str(v.dtype)], v.shape, v.tobytes()) for k, v in arrays.items()}  # fmt: skip
    assert serialize(ours) == st_save(arrays)
    assert serialize(ours, {"format": "pt"}) == st_save(arrays, metadata={"format": "pt"})
    assert serialize({"x": ("F16", (4, 3), None)}) == serialize({"x": ("F16", (4, 3), None)})
    with pytest.raises(ValueError, match="bytes given"):
        serialize({"x": ("F16", (2,), b"123")})
    with pytest.raises(TypeError):
        serialize({"x": ("F16", (1,), b"12")}, {"k": 1})  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory):
    return build_library(tmp_path_factory.mktemp("showcase"), seed=7)


def test_showcase_has_every_producer_and_valid_files(showcase) -> None:
    groups = showcase.by_producer()
    assert set(producer_ids()) | {"decoy-ckpt", "decoy-pt"} == set(groups)
    assert len(showcase.files) == len(producer_ids()) + 2
    assert showcase.total_bytes == sum(f.path.stat().st_size for f in showcase.files)
    folders = {f.path.parent.name for f in showcase.files}
    assert {"characters", "styles", "concepts", "clothing"} <= folders
    for f in showcase.files:
        if f.expected["format"] != "unsafe":
            meta = check_file(f.path, f.expected)
            stem = f.path.name.removesuffix(".safetensors")
            assert meta.get("ss_output_name", stem) == stem
    thumbs = [f for f in showcase.files if f.path.suffix == ".safetensors"
              and "modelspec.thumbnail" in safe_open(f.path, "np").metadata()]  # fmt: skip
    assert thumbs
    json.dumps(showcase.to_dict())


def test_showcase_decoys_are_harmless_pickles(showcase) -> None:
    groups = showcase.by_producer()
    ckpt = groups["decoy-ckpt"][0]
    pt = groups["decoy-pt"][0]
    for f in (ckpt, pt):
        assert f.expected["format"] == "unsafe"
        assert f.expected["error"] == "unsafe_format"
        assert f.expected["sha256"] == hashlib.sha256(f.path.read_bytes()).hexdigest()
    raw = ckpt.path.read_bytes()
    assert ckpt.path.suffix == ".ckpt"
    assert raw[:1] == b"\x80"
    assert pt.path.suffix == ".pt"
    assert pt.path.read_bytes()[:4] == b"PK\x03\x04"
    with zipfile.ZipFile(pt.path) as zf:
        inner = zf.read("archive/data.pkl")
    for blob in (raw, inner):  # no GLOBAL/REDUCE: nothing executes when unpickled
        ops = {op.name for op, _, _ in pickletools.genops(blob)}
        assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ"}


def test_showcase_sidecars(showcase) -> None:
    seen = set()
    for f in showcase.files:
        stem = f.path.with_name(f.path.name.removesuffix(".safetensors"))
        for kind in f.sidecars:
            seen.add(kind)
            if kind.startswith("civitai_info"):
                info = json.loads(Path(f"{stem}.civitai.info").read_text())
                if kind == "civitai_info_empty":
                    assert info == {}
                    continue
                hashes = info["files"][0]["hashes"]
                assert hashes["SHA256"] == f.expected["sha256"].upper()
                assert hashes["AutoV2"] == f.expected["sha256"][:10].upper()
                if kind == "civitai_info":
                    assert hashes["AutoV3"] == f.expected["tensor_sha256"][:12].upper()
                    assert info["air"] == (f"urn:air:{f.expected['base_model']}:lora:civitai:"
                                           f"{info['modelId']}@{info['id']}")  # fmt: skip
                    assert isinstance(info["images"][0]["nsfwLevel"], int)
                    assert "<p>" in info["description"]
                    assert "<a " in info["description"]
                else:
                    assert "AutoV3" not in hashes
                    assert "rating" in info["stats"]
                    assert info["images"][0]["nsfw"] in ("None", "Soft", "Mature", "X")
                assert info["trainedWords"] == f.expected["trigger_words"] or info["trainedWords"]
            elif kind == "a1111_json":
                data = json.loads(Path(f"{stem}.json").read_text())
                assert set(data) == {"description", "sd version", "activation text",
                                     "preferred weight", "negative text", "notes"}  # fmt: skip
            elif kind == "lora_manager":
                data = json.loads(Path(f"{stem}.metadata.json").read_text())
                assert data["sha256"] == f.expected["sha256"]
                assert data["size"] == f.path.stat().st_size
                assert isinstance(data["usage_tips"], str)
                assert json.loads(data["usage_tips"])
                assert data["file_path"] == f.path.as_posix()
                assert data["preview_url"] == (f.preview.as_posix() if f.preview else "")
            elif kind == "stability_matrix":
                data = json.loads(Path(f"{stem}.cm-info.json").read_text())
                assert data["Hashes"]["SHA256"] == f.expected["sha256"].upper()
                assert {"ModelName", "VersionName", "BaseModel", "TrainedWords"} <= set(data)
            else:
                suffix = {"txt": ".txt", "description_txt": ".description.txt", "md": ".md"}[kind]
                assert Path(f"{stem}{suffix}").read_text().strip()
    assert seen == set(SIDECAR_KINDS)


def test_showcase_previews_carry_infotext(showcase) -> None:
    kinds = set()
    for f in showcase.files:
        if f.preview is None:
            continue
        name = f.path.name.removesuffix(".safetensors")
        suffix = f.preview.name[len(name) :]
        kinds.add(suffix)
        with Image.open(f.preview) as img:
            assert img.size == (128, 160)
            if img.format == "PNG":
                text = img.info["parameters"]
                assert f"<lora:{name}:0.8>" in text
                assert "Negative prompt:" in text
                assert f'Lora hashes: "{name}: ' in text
                assert "Version: v1.10.1" in text
            else:
                assert img.format in ("JPEG", "WEBP")
                comment = img.getexif().get_ifd(0x8769)[0x9286]
                assert comment.startswith(b"UNICODE\0")
                text = comment[8:].decode("utf-16-be")
                assert "App: SD.Next" in text
                assert f"LoRA networks: {name}" in text
    assert kinds == set(PREVIEW_KINDS.values())
    assert any(f.preview is None for f in showcase.files if f.path.suffix == ".safetensors")


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name.endswith(".metadata.json"):  # Lora-Manager stores absolute paths
                data = data.replace(root.as_posix().encode(), b"<root>")
            out[p.relative_to(root).as_posix()] = data
    return out


def test_showcase_is_deterministic_and_writes_nothing_else(tmp_path: Path, showcase) -> None:
    again = build_library(tmp_path / "again", seed=7)
    first = _snapshot(showcase.root)
    assert first == _snapshot(again.root)
    listed = {f.path for f in showcase.files} | {f.preview for f in showcase.files if f.preview}
    assert {p.relative_to(showcase.root).as_posix() for p in listed} <= set(first)
    other = build_library(tmp_path / "other", seed=8, sidecars=False, previews=False)
    second = _snapshot(other.root)
    models = [k for k in first if k.endswith(".safetensors")]
    assert all(first[k] != second[k] for k in models)
    assert set(second) == {f.path.relative_to(other.root).as_posix() for f in other.files}


def test_count_library(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "a", count=200, tiny=True, seed=5)
    paths = sorted(tmp_path.joinpath("a").rglob("*.safetensors"))
    assert len(paths) == len(lib.files) == 200
    assert {f.expected["producer"] for f in lib.files} == set(producer_ids())
    assert len({f.expected["sha256"] for f in lib.files}) == 200
    assert len({f.expected["tensor_sha256"] for f in lib.files}) == 200
    for f in lib.files[:48]:
        check_file(f.path, f.expected)
    for f in lib.files:
        assert f.expected["sha256"] == hashlib.sha256(f.path.read_bytes()).hexdigest()
    per_folder = Counter(p.parent for p in paths)
    assert max(per_folder.values()) <= 500
    twin = build_library(tmp_path / "b", count=200, tiny=True, seed=5)
    assert [f.expected for f in twin.files] == [f.expected for f in lib.files]
    flat = build_library(tmp_path / "c", count=30, tiny=True, seed=6, subfolders=False)
    assert {f.path.parent for f in flat.files} == {tmp_path / "c"}
    assert build_library(tmp_path / "d", count=0).files == []


def test_count_library_chunked_equals_serial(tmp_path: Path, monkeypatch) -> None:
    from lorabench.samples import _builder

    monkeypatch.setattr(_builder, "_CHUNK", 40)
    chunked = build_library(tmp_path / "a", count=130, tiny=True, seed=2)
    monkeypatch.setattr(_builder, "_CHUNK", 10**6)
    serial = build_library(tmp_path / "b", count=130, tiny=True, seed=2)
    assert [f.expected for f in chunked.files] == [f.expected for f in serial.files]
    assert _snapshot(chunked.root).keys() == _snapshot(serial.root).keys()


@pytest.mark.slow
def test_large_tiny_library(tmp_path: Path) -> None:
    lib = build_library(tmp_path, count=5000, tiny=True, seed=11)
    assert len(lib.files) == 5000
    assert sum(1 for _ in tmp_path.rglob("*.safetensors")) == 5000
    assert lib.total_bytes == sum(f.path.stat().st_size for f in lib.files)

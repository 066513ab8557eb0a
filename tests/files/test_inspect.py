"""The reader against every producer, algorithm, base family, hash and sidecar kind."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from lorabench.errors import UnsafeFormatError
from lorabench.files import ALGORITHMS, inspect, read_image_metadata
from lorabench.samples import PRODUCERS

# What each producer's file IS, written from lora-files.md independently of the sample builder:
# producer → (format, algorithm, dora, base_model, base_model_hint)
TRUTH = {
    "kohya-sd15-lora": ("kohya", "lora", False, "sd1", None),
    "kohya-sd15-locon": ("kohya", "locon", False, "sd1", None),
    "kohya-sd2-lora": ("kohya", "lora", False, "sd2", None),
    "kohya-sdxl-lora": ("kohya", "lora", False, "sdxl", None),
    "kohya-sdxl-pony": ("kohya", "lora", False, "sdxl", "pony"),
    "kohya-sdxl-illustrious": ("kohya", "lora", False, "sdxl", "illustrious"),
    "kohya-flux-lora": ("kohya", "lora", False, "flux1", None),
    "kohya-sd3-lora": ("kohya", "lora", False, "sd3", None),
    "kohya-oft": ("kohya", "oft", False, "sdxl", None),
    "kohya-no-metadata": ("kohya", "lora", False, "sd1", None),
    "lycoris-loha": ("kohya", "loha", False, None, None),
    "lycoris-lokr": ("kohya", "lokr", False, None, None),
    "lycoris-dora": ("kohya", "lora", True, None, None),
    "lycoris-ia3": ("kohya", "ia3", False, None, None),
    "lycoris-full": ("kohya", "full", False, None, None),
    "lycoris-boft": ("kohya", "boft", False, None, None),
    "lycoris-glora": ("kohya", "glora", False, None, None),
    "lycoris-norm": ("kohya", "norm", False, None, None),
    "lycoris-standalone": ("kohya", None, False, None, None),
    "diffusers-sdxl": ("diffusers", "lora", False, "sdxl", None),
    "peft-flux": ("peft", "lora", False, "flux1", None),
    "peft-sd3": ("peft", "lora", False, "sd3", None),
    "peft-dora-flux": ("peft", "lora", True, "flux1", None),
    "aitoolkit-flux": ("peft", "lora", False, "flux1", None),
}


def test_every_producer_is_covered():
    assert set(TRUTH) == set(PRODUCERS)


@pytest.mark.parametrize("producer", sorted(TRUTH))
def test_producer_facts(by_producer, producer):
    sample = by_producer[producer]
    info = inspect(sample.path, sidecars=False)
    fmt, algo, dora, base, hint = TRUTH[producer]
    exp = sample.expected
    assert info.format == fmt
    assert info.algorithm == (algo or exp["algorithm"])
    assert info.dora is dora
    assert info.base_model == (base or exp["base_model"])
    assert info.base_model in ("sd1", "sd2", "sdxl", "sd3", "flux1")
    if hint:
        assert info.base_model_hint == hint
    assert info.rank == exp["rank"]
    assert info.alpha == exp["alpha"]
    assert info.dtype == exp["dtype"]
    assert info.components == exp["components"]
    assert info.n_tensors > 0 and info.n_modules == sum(info.components.values())
    assert [t["word"] for t in info.trigger_words] == exp["trigger_words"] or not exp["trigger_words"]


def test_all_algorithms_and_families_appear(by_producer):
    infos = [inspect(f.path, sidecars=False) for f in by_producer.values() if f.expected["producer"] in TRUTH]
    assert {i.algorithm for i in infos} == set(ALGORITHMS)
    assert {i.base_model for i in infos} == {"sd1", "sd2", "sdxl", "sd3", "flux1"}
    assert {i.dtype for i in infos} >= {"F16", "BF16", "F32"}


def test_training_metadata_is_typed(by_producer):
    info = inspect(by_producer["kohya-sd15-lora"].path, sidecars=False)
    t = info.training
    assert isinstance(t["epochs"], int) and isinstance(t["steps"], int)
    assert isinstance(t["learning_rate"], float)
    assert t["resolution"] == [512, 512]
    assert t["network_module"] == "networks.lora"
    assert t["started_at"].endswith("Z")
    assert all(isinstance(v, str) for v in t["raw"].values())
    assert info.tags and all(isinstance(c, int) for c in info.tags.values())
    assert list(info.tags.values()) == sorted(info.tags.values(), reverse=True)


def test_dataset_folder_trigger_guess_only_without_other_sources(by_producer):
    info = inspect(by_producer["kohya-no-metadata"].path, sidecars=False)
    assert info.training["network_module"] == "networks.lora"
    raw = {"ss_tag_frequency": json.dumps({"10_sks dog": {"sks dog": 3}, "5_toy robot": {"robot": 1}})}
    from lorabench.files._metadata import guess_trigger_words

    assert guess_trigger_words(raw) == ["sks dog", "toy robot"]


def _reference_hashes(data: bytes) -> dict[str, str]:
    n = struct.unpack("<Q", data[:8])[0]
    tensor = hashlib.sha256(data[8 + n :]).hexdigest()
    whole = hashlib.sha256(data).hexdigest()
    return {"sha256": whole, "autov2": whole[:10], "tensor_sha256": tensor, "autov3": tensor[:12],
            "legacy": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]}  # fmt: skip


@pytest.mark.parametrize("producer", ["kohya-sdxl-lora", "lycoris-standalone", "peft-flux", "aitoolkit-flux"])
def test_hashes_match_reference_definitions(by_producer, producer):
    path = by_producer[producer].path
    info = inspect(path, hashes=True, sidecars=False)
    assert info.hashes == _reference_hashes(path.read_bytes())


def test_small_file_legacy_hash_is_empty_sha(tmp_path):
    from lorabench.files import hash_file

    p = tmp_path / "small.safetensors"
    header = b'{"__metadata__":{"a":"b"}}      '
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    assert hash_file(p).legacy == "e3b0c442"


def test_embedded_hash_hints_are_compared_not_trusted(by_producer, tmp_path):
    info = inspect(by_producer["kohya-sdxl-lora"].path, hashes=True, sidecars=False)
    assert info.hash_hints["sshs_model_hash"]["matches"] is True
    unhashed = inspect(by_producer["kohya-sdxl-lora"].path, sidecars=False)
    assert unhashed.hash_hints["sshs_model_hash"]["matches"] is None
    # a lying embedded hash is reported as not matching
    data = by_producer["kohya-sdxl-lora"].path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["sshs_model_hash"] = "0" * 64
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    liar = tmp_path / "liar.safetensors"
    liar.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    assert inspect(liar, hashes=True, sidecars=False).hash_hints["sshs_model_hash"]["matches"] is False


def test_sidecars_of_every_kind_are_read_with_provenance(showcase):
    kinds_seen: set[str] = set()
    for sample in showcase.files:
        if not sample.path.name.endswith(".safetensors"):
            continue
        info = inspect(sample.path)
        got = {s["kind"] for s in info.sidecars["sidecars"]}
        kinds_seen |= got
        for field in info.sidecars["fields"].values():
            assert field["source"] in got
    assert kinds_seen >= {"civitai_info", "a1111_json", "lora_manager", "stability_matrix"}
    assert kinds_seen & {"description_text", "txt"}
    assert kinds_seen & {"markdown", "md"}


def test_sidecar_trigger_words_and_base_hint(showcase):
    for sample in showcase.files:
        if "civitai_info" not in sample.sidecars or not sample.path.name.endswith(".safetensors"):
            continue
        info = inspect(sample.path)
        report = info.sidecars
        civitai = next(s for s in report["sidecars"] if s["kind"] == "civitai_info")
        if civitai["status"] != "ok":
            continue
        words = civitai["fields"].get("trained_words") or []
        found = {t["word"] for t in info.trigger_words}
        assert set(words) <= found
        return
    pytest.fail("no civitai sidecar with trained words in the showcase")


def test_previews_and_their_infotext(showcase):
    formats = set()
    for sample in showcase.files:
        if sample.preview is None:
            continue
        info = inspect(sample.path)
        assert info.preview is not None
        assert info.preview["path"] == str(sample.preview)
        meta = read_image_metadata(sample.preview)
        formats.add(meta.format)
        assert meta.infotext is not None
        names = [lo["name"] for lo in meta.infotext.loras]
        assert names, meta.parameters
        assert meta.infotext.steps and meta.infotext.seed is not None
    assert formats >= {"PNG", "JPEG", "WEBP"}


def test_decoy_pickles_are_refused(showcase):
    decoys = [f for f in showcase.files if not f.path.name.endswith(".safetensors")]
    assert decoys
    for sample in decoys:
        with pytest.raises(UnsafeFormatError):
            inspect(sample.path)


def test_to_dict_is_strict_json(showcase):
    for sample in showcase.files:
        if sample.path.name.endswith(".safetensors"):
            doc = inspect(sample.path, hashes=True).to_dict()
            text = json.dumps(doc, allow_nan=False, default=str)
            for key in ("path", "size", "format", "algorithm", "dora", "base_model", "base_model_hint", "rank",
                        "alpha", "dtype", "n_tensors", "training", "modelspec", "tags", "trigger_words",
                        "hashes", "sidecars", "preview", "components"):  # fmt: skip
                assert key in doc
            assert "thumbnail" not in text or '"bytes"' in text

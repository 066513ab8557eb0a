"""Sidecar reading and merging, hostile sidecars, and preview lookup."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from lorabench.files._sidecars import (
    PREVIEW_EXTENSIONS,
    SIDECAR_PRECEDENCE,
    Field,
    SidecarReport,
    find_preview,
    read_sidecars,
)

SHA = "0123456789abcdef" * 4

CIVITAI_CURRENT: dict[str, Any] = {
    "id": 135867,
    "modelId": 122359,
    "name": "v1.0",
    "nsfwLevel": 1,
    "publishedAt": "2023-08-07T18:10:47.346Z",
    "trainedWords": ["add_detail"],
    "baseModel": "SDXL 1.0",
    "description": "<p>Hello <script>alert('x')</script>world</p><p>Tips &amp; tricks</p>",
    "air": "urn:air:sdxl:lora:civitai:122359@135867",
    "stats": {"downloadCount": 10, "thumbsUpCount": 3},
    "model": {"name": "Detail Tweaker XL", "type": "LORA", "nsfw": False},
    "files": [
        {"name": "other.safetensors", "primary": False, "hashes": {"SHA256": "F" * 64}},
        {
            "sizeKB": 223100.5,
            "name": "add-detail-xl.safetensors",
            "pickleScanResult": "Success",
            "metadata": {"format": "SafeTensor", "size": None, "fp": None},
            "hashes": {"AutoV1": "A1B2C3D4", "AutoV2": "0123456789", "SHA256": SHA.upper(),
                       "CRC32": "DEADBEEF", "BLAKE3": "B" * 64, "AutoV3": "ABCDEF012345"},
            "primary": True,
        },
    ],
    "images": [
        {"url": "https://image.civitai.com/x/1.jpeg", "nsfwLevel": 1, "width": 1024, "height": 1024,
         "type": "image", "meta": {"prompt": "a cat <lora:add-detail-xl:1>", "seed": 1}},
        {"url": "https://image.civitai.com/x/2.jpeg", "nsfwLevel": 1, "type": "image"},
    ],
}  # fmt: skip

CIVITAI_2023: dict[str, Any] = {
    "id": 62833,
    "modelId": 58390,
    "name": "v1.0",
    "createdAt": "2023-05-07T00:00:00.000Z",
    "trainedWords": ["  detail ", "", "more detail, sharp"],
    "baseModel": "SD 1.5",
    "earlyAccessTimeFrame": 0,
    "description": None,
    "stats": {"downloadCount": 5, "ratingCount": 2, "rating": 5},
    "model": {"name": "Detail Tweaker LoRA", "type": "LORA", "nsfw": False, "poi": False},
    "files": [{"name": "add_detail.safetensors", "primary": True,
               "hashes": {"AutoV2": "7C6BAD76EB", "SHA256": "7C6BAD76EB54"}}],
    "images": [{"url": "https://image.civitai.com/a.jpeg", "nsfw": "None"},
               {"url": "https://image.civitai.com/b.jpeg", "nsfw": "Mature"}],
}  # fmt: skip

A1111: dict[str, Any] = {
    "description": "My own notes",
    "sd version": "SDXL",
    "activation text": "add_detail, sharp focus, ",
    "preferred weight": 0.6,
    "negative text": "blurry",
    "notes": "works best at 0.6",
}

LORA_MANAGER: dict[str, Any] = {
    "file_name": "x",
    "model_name": "Detail Tweaker XL (LM)",
    "file_path": "/tmp/does/not/matter.safetensors",
    "size": 228454216,
    "modified": 1700000000.0,
    "sha256": SHA.upper(),
    "base_model": "SDXL 1.0",
    "preview_url": "/tmp/x.preview.png",
    "preview_nsfw_level": 0,
    "notes": "lm notes",
    "from_civitai": True,
    "civitai": {"id": 135867, "trainedWords": ["lm_word", "add_detail"]},
    "tags": ["detail", "tool", "detail"],
    "modelDescription": "<p>LM <b>description</b></p>",
    "civitai_deleted": False,
    "favorite": True,
    "exclude": False,
    "db_checked": False,
    "metadata_source": "civitai_api",
    "last_checked_at": 0,
    "usage_tips": '{"strength":0.9,"clipStrength":1.0}',
    "autov3": "ABCDEF012345",
    "unknown_future_field": {"kept": True},
}

STABILITY_MATRIX: dict[str, Any] = {
    "ModelId": 122359,
    "ModelName": "Detail Tweaker XL",
    "ModelDescription": "<p>SM description</p>",
    "Nsfw": False,
    "Tags": ["detail", "tool"],
    "ModelType": "LORA",
    "VersionId": 135867,
    "VersionName": "v1.0",
    "VersionDescription": None,
    "BaseModel": "SDXL 1.0",
    "ImportedAt": "2024-01-01T00:00:00+00:00",
    "Hashes": {"SHA256": SHA.upper(), "CRC32": "DEADBEEF"},
    "TrainedWords": ["add_detail"],
}


def model(tmp_path: Path, stem: str = "add-detail-xl") -> Path:
    path = tmp_path / f"{stem}.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return path


def write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


def write_all(tmp_path: Path, stem: str = "add-detail-xl") -> Path:
    write(tmp_path, f"{stem}.civitai.info", CIVITAI_CURRENT)
    write(tmp_path, f"{stem}.json", A1111)
    write(tmp_path, f"{stem}.metadata.json", LORA_MANAGER)
    write(tmp_path, f"{stem}.cm-info.json", STABILITY_MATRIX)
    write(tmp_path, f"{stem}.txt", "Plain description\r\nsecond line\n")
    write(tmp_path, f"{stem}.description.txt", "Other description")
    write(tmp_path, f"{stem}.md", "# Markdown\n\n*desc*")
    return model(tmp_path, stem)


def only(tmp_path: Path, suffix: str, content: Any, **kwargs: Any) -> SidecarReport:
    path = model(tmp_path)
    write(tmp_path, f"{path.stem}{suffix}", content)
    return read_sidecars(path, **kwargs)


def codes(report: SidecarReport) -> list[str]:
    return [warning["code"] for warning in report.warnings]


def assert_json_ready(report: SidecarReport) -> dict[str, Any]:
    data = report.to_dict()
    return json.loads(json.dumps(data, allow_nan=False))


# --------------------------------------------------------------------------- every kind


def test_each_kind_alone(tmp_path):
    report = only(tmp_path, ".civitai.info", CIVITAI_CURRENT)
    (sidecar,) = report.sidecars
    assert (sidecar.kind, sidecar.status, sidecar.raw) == ("civitai_info", "ok", CIVITAI_CURRENT)
    assert sidecar.path == str(tmp_path / "add-detail-xl.civitai.info")
    assert sidecar.fields == {
        "civitai_model_id": 122359,
        "civitai_version_id": 135867,
        "version_name": "v1.0",
        "base_model": "SDXL 1.0",
        "trained_words": ["add_detail"],
        "description_html": CIVITAI_CURRENT["description"],
        "description": "Hello world\n\nTips & tricks",
        "published_at": "2023-08-07T18:10:47.346Z",
        "air": "urn:air:sdxl:lora:civitai:122359@135867",
        "model_name": "Detail Tweaker XL",
        "model_type": "LORA",
        "image_urls": ["https://image.civitai.com/x/1.jpeg", "https://image.civitai.com/x/2.jpeg"],
        "nsfw": False,
        "hashes": {"autov1": "a1b2c3d4", "autov2": "0123456789", "sha256": SHA, "crc32": "deadbeef",
                   "blake3": "b" * 64, "autov3": "abcdef012345"},
        "sha256": SHA,
        "autov3": "abcdef012345",
    }  # fmt: skip
    assert report.warnings == []
    assert all(
        field.source == "civitai_info" and field.alternatives == [] for field in report.fields.values()
    )


def test_civitai_2023_shape(tmp_path):
    fields = only(tmp_path, ".civitai.info", CIVITAI_2023).sidecars[0].fields
    assert fields["trained_words"] == ["detail", "more detail, sharp"]
    assert fields["nsfw"] is True  # one image is "Mature"
    assert fields["hashes"] == {"autov2": "7c6bad76eb", "sha256": "7c6bad76eb54"}
    assert "autov3" not in fields
    assert "description" not in fields
    assert "air" not in fields
    assert fields["model_name"] == "Detail Tweaker LoRA"


@pytest.mark.parametrize(("level", "expected"), [(1, False), (2, False), (4, True), (8, True), (28, True)])
def test_civitai_nsfw_level(tmp_path, level, expected):
    data = {**CIVITAI_CURRENT, "nsfwLevel": level}
    assert only(tmp_path, ".civitai.info", data).value("nsfw") is expected


def test_civitai_empty_object_is_not_found(tmp_path):
    report = only(tmp_path, ".civitai.info", {})
    (sidecar,) = report.sidecars
    assert (sidecar.status, sidecar.fields, sidecar.raw) == ("not_found", {}, {})
    assert report.warnings == []
    assert report.fields == {}


def test_a1111_json(tmp_path):
    report = only(tmp_path, ".json", A1111)
    assert report.sidecars[0].fields == {
        "description": "My own notes",
        "sd_version": "SDXL",
        "activation_text": "add_detail, sharp focus,",
        "trained_words": ["add_detail", "sharp focus"],
        "preferred_weight": 0.6,
        "negative_text": "blurry",
        "notes": "works best at 0.6",
    }


def test_a1111_defaults_mean_unset(tmp_path):
    data = {"description": "", "sd version": "Unknown", "activation text": "", "preferred weight": 0,
            "negative text": "", "notes": ""}  # fmt: skip
    report = only(tmp_path, ".json", data)
    assert report.sidecars[0].status == "ok"
    assert report.fields == {}


def test_lora_manager(tmp_path):
    report = only(tmp_path, ".metadata.json", LORA_MANAGER)
    (sidecar,) = report.sidecars
    assert sidecar.raw == LORA_MANAGER  # unknown fields preserved
    assert sidecar.fields == {
        "model_name": "Detail Tweaker XL (LM)",
        "base_model": "SDXL 1.0",
        "sha256": SHA,
        "notes": "lm notes",
        "tags": ["detail", "tool"],
        "trained_words": ["lm_word", "add_detail"],
        "favorite": True,
        "preferred_weight": 0.9,
        "description_html": "<p>LM <b>description</b></p>",
        "description": "LM description",
        "autov3": "abcdef012345",
    }


def test_lora_manager_top_level_trained_words_and_dict_usage_tips(tmp_path):
    data = {**LORA_MANAGER, "trainedWords": ["top"], "usage_tips": {"strength": 0.7}, "autov3": None}
    fields = only(tmp_path, ".metadata.json", data).sidecars[0].fields
    assert fields["trained_words"] == ["top"]
    assert fields["preferred_weight"] == 0.7
    assert "autov3" not in fields


@pytest.mark.parametrize("camel", [False, True], ids=["PascalCase", "camelCase"])
def test_stability_matrix(tmp_path, camel):
    data = (
        {key[0].lower() + key[1:]: value for key, value in STABILITY_MATRIX.items()}
        if camel
        else STABILITY_MATRIX
    )
    report = only(tmp_path, ".cm-info.json", data)
    assert report.sidecars[0].raw == data
    assert report.sidecars[0].fields == {
        "civitai_model_id": 122359,
        "civitai_version_id": 135867,
        "model_name": "Detail Tweaker XL",
        "version_name": "v1.0",
        "base_model": "SDXL 1.0",
        "model_type": "LORA",
        "trained_words": ["add_detail"],
        "tags": ["detail", "tool"],
        "nsfw": False,
        "description_html": "<p>SM description</p>",
        "description": "SM description",
        "hashes": {"sha256": SHA, "crc32": "deadbeef"},
        "sha256": SHA,
    }


def test_text_kinds(tmp_path):
    path = model(tmp_path)
    write(tmp_path, "add-detail-xl.txt", "Plain description\r\nsecond line\n")
    write(tmp_path, "add-detail-xl.description.txt", "Other description")
    write(tmp_path, "add-detail-xl.md", "# Markdown\n\n*desc*")
    report = read_sidecars(path)
    assert [(s.kind, Path(s.path).name, s.raw) for s in report.sidecars] == [
        ("description_text", "add-detail-xl.txt", "Plain description\nsecond line"),
        ("description_text", "add-detail-xl.description.txt", "Other description"),
        ("markdown", "add-detail-xl.md", "# Markdown\n\n*desc*"),
    ]
    description = report.fields["description"]
    assert (description.value, description.source) == ("Plain description\nsecond line", "description_text")
    assert [alt["value"] for alt in description.alternatives] == [
        "Plain description\nsecond line", "Other description", "# Markdown\n\n*desc*",
    ]  # fmt: skip


def test_text_is_bounded(tmp_path):
    report = only(tmp_path, ".txt", "x" * 150_000)
    assert len(report.value("description")) == 100_000
    assert report.sidecars[0].status == "ok"


# --------------------------------------------------------------------------- merging


def test_merge_precedence_provenance_and_alternatives(tmp_path):
    report = read_sidecars(write_all(tmp_path))
    assert report.warnings == []
    assert [s.kind for s in report.sidecars] == [
        "civitai_info", "a1111_json", "lora_manager", "stability_matrix",
        "description_text", "description_text", "markdown",
    ]  # fmt: skip
    f = report.fields
    assert (f["description"].value, f["description"].source) == ("My own notes", "a1111_json")
    assert f["description"].alternatives == [
        {"value": "My own notes", "source": "a1111_json"},
        {"value": "LM description", "source": "lora_manager"},
        {"value": "Hello world\n\nTips & tricks", "source": "civitai_info"},
        {"value": "SM description", "source": "stability_matrix"},
        {"value": "Plain description\nsecond line", "source": "description_text"},
        {"value": "Other description", "source": "description_text"},
        {"value": "# Markdown\n\n*desc*", "source": "markdown"},
    ]
    assert (f["description_html"].value, f["description_html"].source) == (
        "<p>LM <b>description</b></p>", "lora_manager",
    )  # fmt: skip
    assert (f["trained_words"].value, f["trained_words"].source) == (
        ["add_detail", "sharp focus"],
        "a1111_json",
    )
    assert [alt["source"] for alt in f["trained_words"].alternatives] == [
        "a1111_json", "lora_manager", "civitai_info", "stability_matrix",
    ]  # fmt: skip
    assert (f["preferred_weight"].value, f["preferred_weight"].source) == (0.6, "a1111_json")
    assert f["preferred_weight"].alternatives == [
        {"value": 0.6, "source": "a1111_json"},
        {"value": 0.9, "source": "lora_manager"},
    ]
    assert (f["model_name"].value, f["model_name"].source) == ("Detail Tweaker XL (LM)", "lora_manager")
    assert [alt["source"] for alt in f["model_name"].alternatives] == [
        "lora_manager", "civitai_info", "stability_matrix",
    ]  # fmt: skip
    # Agreeing sources: the highest wins and no alternatives are listed.
    for name, source, value in [
        ("sha256", "lora_manager", SHA),
        ("base_model", "lora_manager", "SDXL 1.0"),
        ("civitai_model_id", "civitai_info", 122359),
        ("civitai_version_id", "civitai_info", 135867),
        ("autov3", "lora_manager", "abcdef012345"),
        ("nsfw", "civitai_info", False),
        ("version_name", "civitai_info", "v1.0"),
        ("tags", "lora_manager", ["detail", "tool"]),
        ("sd_version", "a1111_json", "SDXL"),
        ("favorite", "lora_manager", True),
        ("air", "civitai_info", "urn:air:sdxl:lora:civitai:122359@135867"),
    ]:
        assert (f[name].value, f[name].source, f[name].alternatives) == (value, source, []), name
    assert f["hashes"].source == "civitai_info"
    assert f["hashes"].alternatives[1] == {"value": {"sha256": SHA, "crc32": "deadbeef"},
                                           "source": "stability_matrix"}  # fmt: skip
    assert report.value("notes") == "works best at 0.6"
    assert report.value("missing", "default") == "default"
    data = assert_json_ready(report)
    assert data["fields"]["preferred_weight"] == {
        "value": 0.6,
        "source": "a1111_json",
        "alternatives": [{"value": 0.6, "source": "a1111_json"}, {"value": 0.9, "source": "lora_manager"}],
    }
    assert data["sidecars"][2]["raw"]["unknown_future_field"] == {"kept": True}


def test_precedence_without_user_json(tmp_path):
    path = model(tmp_path)
    write(tmp_path, "add-detail-xl.civitai.info", CIVITAI_CURRENT)
    write(tmp_path, "add-detail-xl.cm-info.json", STABILITY_MATRIX)
    write(tmp_path, "add-detail-xl.txt", "text")
    report = read_sidecars(path)
    assert (report.fields["description"].value, report.fields["description"].source) == (
        "Hello world\n\nTips & tricks", "civitai_info",
    )  # fmt: skip
    assert report.fields["model_name"] == Field("Detail Tweaker XL", "civitai_info", [])


def test_precedence_constant():
    assert SIDECAR_PRECEDENCE == ("a1111_json", "lora_manager", "civitai_info", "stability_matrix",
                                  "description_text", "markdown")  # fmt: skip


def test_no_sidecars(tmp_path):
    report = read_sidecars(model(tmp_path))
    assert (report.sidecars, report.fields, report.warnings, report.preview) == ([], {}, [], None)
    assert read_sidecars(tmp_path / "missing" / "nothing.safetensors").sidecars == []


def test_dotted_stem(tmp_path):
    path = model(tmp_path, "my.lora.v2")
    write(tmp_path, "my.lora.v2.json", {"notes": "dotted"})
    write(tmp_path, "my.lora.v2.png", b"png")
    report = read_sidecars(path)
    assert report.value("notes") == "dotted"
    assert report.preview == str(tmp_path / "my.lora.v2.png")


# --------------------------------------------------------------------------- hostile sidecars


@pytest.mark.parametrize(
    ("suffix", "content", "code"),
    [
        (".civitai.info", "{not json", "bad_json"),
        (".civitai.info", "", "bad_json"),
        (".json", '{"notes": NaN}', "bad_json"),
        (".json", '{"preferred weight": 1e999}', "bad_json"),
        (".metadata.json", "[" * 100_000, "bad_json"),
        (".metadata.json", '{"a":' * 100 + "1" + "}" * 100, "bad_json"),
        (".cm-info.json", "[1, 2, 3]", "bad_type"),
        (".cm-info.json", '"a string"', "bad_type"),
        (".civitai.info", b'{"name": "\xff\xfe"}', "unreadable"),
        (".txt", b"caf\xe9", "unreadable"),
    ],
    ids=["invalid", "empty", "nan", "inf", "deep_recursion", "deep_64", "array", "string", "bad_utf8",
         "bad_utf8_text"],
)  # fmt: skip
def test_broken_sidecar_becomes_warning(tmp_path, suffix, content, code):
    report = only(tmp_path, suffix, content)
    (sidecar,) = report.sidecars
    assert sidecar.status == "error"
    assert sidecar.fields == {}
    assert codes(report) == [code]
    assert report.warnings[0]["path"] == sidecar.path
    assert report.warnings[0]["message"].startswith(Path(sidecar.path).name)
    assert report.fields == {}
    assert_json_ready(report)


@pytest.mark.parametrize(
    ("suffix", "data", "kept", "dropped"),
    [
        (".civitai.info", {**CIVITAI_CURRENT, "trainedWords": 5}, "model_name", "trained_words"),
        (".civitai.info", {**CIVITAI_CURRENT, "model": "LORA"}, "trained_words", "model_name"),
        (".civitai.info", {**CIVITAI_CURRENT, "modelId": "122359"}, "version_name", "civitai_model_id"),
        (".civitai.info", {**CIVITAI_CURRENT, "files": {"a": 1}}, "base_model", "hashes"),
        (".json", {**A1111, "preferred weight": "heavy"}, "notes", "preferred_weight"),
        (".json", {**A1111, "description": ["list"]}, "notes", "description"),
        (".metadata.json", {**LORA_MANAGER, "favorite": "yes"}, "model_name", "favorite"),
        (".metadata.json", {**LORA_MANAGER, "usage_tips": "[1]"}, "model_name", "preferred_weight"),
        (".metadata.json", {**LORA_MANAGER, "tags": "a,b"}, "model_name", "tags"),
        (".cm-info.json", {**STABILITY_MATRIX, "Nsfw": "no"}, "model_name", "nsfw"),
    ],
)
def test_wrong_types_warn_and_keep_the_rest(tmp_path, suffix, data, kept, dropped):
    report = only(tmp_path, suffix, data)
    (sidecar,) = report.sidecars
    assert sidecar.status == "error"
    assert codes(report) == ["bad_type"]
    assert kept in sidecar.fields
    assert dropped not in sidecar.fields
    assert sidecar.raw == data


def test_list_with_wrong_items_keeps_the_strings(tmp_path):
    report = only(tmp_path, ".civitai.info", {**CIVITAI_CURRENT, "trainedWords": ["ok", 3, None, " two "]})
    assert codes(report) == ["bad_type"]
    assert report.sidecars[0].status == "error"
    assert report.value("trained_words") == ["ok", "two"]


def test_usage_tips_not_json(tmp_path):
    report = only(tmp_path, ".metadata.json", {**LORA_MANAGER, "usage_tips": "{strength: 0.9"})
    assert codes(report) == ["bad_json"]
    assert "preferred_weight" not in report.fields
    assert report.value("model_name") == "Detail Tweaker XL (LM)"


def test_a1111_numeric_string_weight_is_accepted(tmp_path):
    assert only(tmp_path, ".json", {"preferred weight": " 0.75 "}).value("preferred_weight") == 0.75


def test_too_large(tmp_path):
    report = only(tmp_path, ".civitai.info", CIVITAI_CURRENT, max_bytes=100)
    assert codes(report) == ["too_large"]
    assert report.sidecars[0].raw is None
    report = read_sidecars(model(tmp_path), max_bytes=10_000_000)
    assert codes(report) == []
    assert report.value("model_name") == "Detail Tweaker XL"


def test_exactly_max_bytes_is_read(tmp_path):
    content = json.dumps({"notes": "n"})
    assert only(tmp_path, ".json", content, max_bytes=len(content)).value("notes") == "n"


def run_with_timeout(function: Any, timeout: float = 5.0) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "read_sidecars blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_sidecar_does_not_block(tmp_path):
    path = model(tmp_path)
    os.mkfifo(tmp_path / "add-detail-xl.civitai.info")
    os.mkfifo(tmp_path / "add-detail-xl.txt")
    report = run_with_timeout(lambda: read_sidecars(path))
    assert codes(report) == ["not_regular_file", "not_regular_file"]
    assert [s.status for s in report.sidecars] == ["error", "error"]


def test_directory_and_symlink_sidecars(tmp_path):
    path = model(tmp_path)
    (tmp_path / "add-detail-xl.json").mkdir()
    target = write(tmp_path, "elsewhere.json", LORA_MANAGER)
    (tmp_path / "add-detail-xl.metadata.json").symlink_to(target)
    report = read_sidecars(path)
    assert codes(report) == ["not_regular_file", "not_regular_file"]
    assert report.fields == {}


def test_sidecar_paths_are_never_followed(tmp_path, monkeypatch):
    secret_dir = tmp_path / "home" / ".ssh"
    secret_dir.mkdir(parents=True)
    secret = secret_dir / "id_rsa"
    secret.write_text("-----BEGIN SECRET KEY----- TOP-SECRET-MATERIAL")
    models = tmp_path / "models" / "Lora"
    models.mkdir(parents=True)
    path = model(models)
    relative = "../../home/.ssh/id_rsa"
    civitai = {**CIVITAI_CURRENT, "file": relative, "images": [{"url": f"file://{secret}"}]}
    write(models, "add-detail-xl.civitai.info", civitai)
    manager = {**LORA_MANAGER, "file_path": str(secret), "preview_url": str(secret), "file": relative}
    write(models, "add-detail-xl.metadata.json", manager)
    write(models, "add-detail-xl.cm-info.json", {**STABILITY_MATRIX, "ThumbnailImageUrl": str(secret)})
    write(models, "add-detail-xl.json", {**A1111, "preview": str(secret)})
    opened: list[str] = []
    real_open = os.open

    def spy(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    report = read_sidecars(path)
    monkeypatch.undo()
    assert report.warnings == []
    assert opened
    assert all(Path(p).parent == models for p in opened)
    dumped = json.dumps(report.to_dict())
    assert "TOP-SECRET-MATERIAL" not in dumped
    assert "BEGIN SECRET KEY" not in dumped
    assert report.preview is None


# --------------------------------------------------------------------------- previews


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_preview_extensions():
    assert PREVIEW_EXTENSIONS == ("png", "jpg", "jpeg", "webp", "gif")


def test_find_preview_order(tmp_path):
    path = model(tmp_path, "x")
    assert find_preview(path) is None
    touch(tmp_path, "x.gif")
    assert find_preview(path) == tmp_path / "x.gif"
    touch(tmp_path, "x.preview.webp")
    assert find_preview(path) == tmp_path / "x.preview.webp"
    touch(tmp_path, "x.jpeg")
    assert find_preview(path) == tmp_path / "x.jpeg"
    touch(tmp_path, "x.preview.png")
    assert find_preview(path) == tmp_path / "x.preview.png"
    touch(tmp_path, "x.png")
    assert find_preview(path) == tmp_path / "x.png"
    assert find_preview(str(path)) == tmp_path / "x.png"
    assert read_sidecars(path).preview == str(tmp_path / "x.png")


def test_find_preview_png_beats_preview_png(tmp_path):
    path = model(tmp_path, "x")
    touch(tmp_path, "x.preview.png", "x.png")
    assert find_preview(path) == tmp_path / "x.png"


def test_find_preview_alone_and_gif_last(tmp_path):
    path = model(tmp_path, "x")
    touch(tmp_path, "x.preview.png")
    assert find_preview(path) == tmp_path / "x.preview.png"
    (tmp_path / "x.preview.png").unlink()
    touch(tmp_path, "x.gif", "x.preview.gif", "x.preview.jpg")
    assert find_preview(path) == tmp_path / "x.preview.jpg"
    (tmp_path / "x.preview.jpg").unlink()
    assert find_preview(path) == tmp_path / "x.gif"


def test_find_preview_skips_symlinks_dirs_and_fifos(tmp_path):
    path = model(tmp_path, "x")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    (tmp_path / "x.png").symlink_to(outside)
    (tmp_path / "x.preview.png").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "x.jpg")
    touch(tmp_path, "x.preview.jpg")
    assert find_preview(path) == tmp_path / "x.preview.jpg"
    (tmp_path / "x.preview.jpg").unlink()
    assert find_preview(path) is None

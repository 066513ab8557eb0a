"""Infotext parsing and image metadata from real PNG, JPEG, WebP and GIF files."""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lorabench.errors import FileReadError, FileTooLargeError, NotARegularFileError
from lorabench.files._infotext import ImageMetadata, Infotext, parse_infotext, read_image_metadata

A1111_TEXT = (
    "masterpiece, best quality, <lora:detail_tweaker:0.8>, 1girl\n"
    "<lora:other:1>, city at night\n"
    "Negative prompt: lowres, bad hands,\n"
    "worst quality\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3141592653, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, "
    'Lora hashes: "detail_tweaker: 0123456789ab, other: abcdefabcdef", '
    'Hires prompt: "a, b: c", Version: v1.10.1'
)
SDNEXT_TEXT = (
    "a photo of a cat, <lora:style_a:0.7> <lora:style_b:1.2:te=0.5>\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Size: 1024x1024, Sampler: Euler a, Seed: 42, CFG scale: 6, CLiP-skip: 2, "
    "App: SD.Next, Version: 058a7f0, Model: sdxl base, Model hash: 31e35c80fc, "
    'LoRA networks: "style_a, style_b", LoRA hashes: 1234abcd, 5678ef01'
)


def png_bytes(text: str | None = None, *, extra: dict[str, str] | None = None, size=(8, 6)) -> bytes:
    info = PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    for key, value in (extra or {}).items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def exif_image_bytes(fmt: str, comment: bytes, size=(16, 12)) -> bytes:
    exif = Image.Exif()
    exif[0x8769] = {0x9286: comment}
    buf = io.BytesIO()
    Image.new("RGB", size, "blue").save(buf, fmt, exif=exif)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares a huge size (CRCs correct, no real pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- parse_infotext


def test_a1111_infotext():
    info = parse_infotext(A1111_TEXT)
    assert info.prompt == (
        "masterpiece, best quality, <lora:detail_tweaker:0.8>, 1girl\n<lora:other:1>, city at night"
    )
    assert info.negative_prompt == "lowres, bad hands,\nworst quality"
    assert (info.steps, info.sampler, info.scheduler, info.seed) == (28, "DPM++ 2M", "Karras", 3141592653)
    assert (info.cfg_scale, info.width, info.height, info.clip_skip) == (7.0, 512, 768, 2)
    assert (info.model, info.model_hash, info.app) == ("v1-5-pruned-emaonly", "6ce0161689", "a1111")
    assert info.loras == [
        {"name": "detail_tweaker", "weight": 0.8, "hash": "0123456789ab"},
        {"name": "other", "weight": 1.0, "hash": "abcdefabcdef"},
    ]
    assert info.lora_hashes == {"detail_tweaker": "0123456789ab", "other": "abcdefabcdef"}
    assert info.params["Lora hashes"] == "detail_tweaker: 0123456789ab, other: abcdefabcdef"
    assert info.params["Hires prompt"] == "a, b: c"
    assert info.params["Version"] == "v1.10.1"
    assert info.raw == A1111_TEXT


def test_sdnext_infotext_pairs_bare_hashes_with_networks():
    info = parse_infotext(SDNEXT_TEXT)
    assert info.app == "sdnext"
    assert info.clip_skip == 2
    assert info.params["LoRA networks"] == "style_a, style_b"
    assert info.params["LoRA hashes"] == "1234abcd, 5678ef01"
    assert info.loras == [
        {"name": "style_a", "weight": 0.7, "hash": "1234abcd"},
        {"name": "style_b", "weight": 1.2, "hash": "5678ef01"},
    ]
    assert info.lora_hashes == {"style_a": "1234abcd", "style_b": "5678ef01"}
    assert info.model == "sdxl base"


def test_bare_hashes_stay_anonymous_when_counts_differ():
    info = parse_infotext('p\nSteps: 20, Seed: 1, LoRA networks: a, LoRA hashes: "11111111, 22222222"')
    assert info.loras == [
        {"name": "a", "weight": None, "hash": None},
        {"name": None, "weight": None, "hash": "11111111"},
        {"name": None, "weight": None, "hash": "22222222"},
    ]
    assert info.lora_hashes == {}


def test_lora_tags_variants():
    info = parse_infotext(
        "<lora:plain> <LORA:Upper:0.5> <lyco:locon_x:0.3:unet=0.2> <lora:named:te=0.6:unet=0.4>"
        " <lora:sched:0.2@0,1@10> <lora::1> <hypernet:h:1>\nSteps: 1, Seed: 2, Sampler: Euler"
    )
    assert [(item["name"], item["weight"]) for item in info.loras] == [
        ("plain", None),
        ("Upper", 0.5),
        ("locon_x", 0.3),
        ("named", 0.6),
        ("sched", None),
    ]


def test_quoted_values_with_commas_colons_and_escapes():
    info = parse_infotext(
        'prompt\nSteps: 5, Wildcards: "a, b: c", Json: "say \\"hi\\", ok", Empty: , Seed: 9, Sampler: UniPC'
    )
    assert info.params == {
        "Steps": "5",
        "Wildcards": "a, b: c",
        "Json": 'say "hi", ok',
        "Empty": "",
        "Seed": "9",
        "Sampler": "UniPC",
    }


def test_multiline_prompt_without_negative_and_template_lines():
    text = 'line one\nline two\n\nline four\nTemplate: "{x}, y"\nSteps: 3, Seed: 4, Size: 64x32'
    info = parse_infotext(text)
    assert info.prompt == "line one\nline two\n\nline four"
    assert info.negative_prompt == ""
    assert info.params["Template"] == "{x}, y"
    assert (info.width, info.height) == (64, 32)


def test_text_without_params_line_is_all_prompt():
    info = parse_infotext("just a prompt, with commas\nNegative prompt: ugly")
    assert (info.prompt, info.negative_prompt, info.params) == ("just a prompt, with commas", "ugly", {})
    assert info.app is None


@pytest.mark.parametrize(
    "garbage",
    ["", "   \n ", "::::,,,,", "\x00\xff\ufffd" * 50, "Steps: x, Seed: y, Size: huge, CFG scale: nan",
     "a: b" * 20000, " " * 300_000, "<lora:" * 5000, '"' * 10000, "Steps:" * 50000],
)  # fmt: skip
def test_garbage_never_raises(garbage):
    info = parse_infotext(garbage)
    assert isinstance(info, Infotext)
    assert info.raw == garbage
    assert info.steps is None
    assert info.seed is None
    assert info.cfg_scale is None
    json.dumps(info.to_dict())


def test_non_string_input_never_raises():
    assert parse_infotext(b"bytes").raw == ""  # type: ignore[arg-type]


def test_to_dict_round_trips_as_json():
    data = json.loads(json.dumps(parse_infotext(A1111_TEXT).to_dict()))
    assert data["loras"][0] == {"name": "detail_tweaker", "weight": 0.8, "hash": "0123456789ab"}
    assert set(data) >= {"prompt", "negative_prompt", "params", "lora_hashes", "app", "raw"}


# --------------------------------------------------------------------------- read_image_metadata


def test_png_parameters(tmp_path):
    path = tmp_path / "preview.png"
    path.write_bytes(png_bytes(A1111_TEXT, extra={"Software": "test", "prompt": "{}"}))
    meta = read_image_metadata(path)
    assert isinstance(meta, ImageMetadata)
    assert (meta.format, meta.width, meta.height) == ("PNG", 8, 6)
    assert meta.parameters == A1111_TEXT
    assert meta.parameters_source == "png_text"
    assert meta.text_chunks == {"Software": "test", "prompt": "{}"}
    assert meta.infotext is not None
    assert meta.infotext.lora_hashes == {"detail_tweaker": "0123456789ab", "other": "abcdefabcdef"}
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["infotext"]["loras"][0]["weight"] == 0.8
    assert read_image_metadata(str(path)) == meta


def test_png_itxt_and_ztxt_parameters():
    for zip_flag in (False, True):
        info = PngInfo()
        info.add_itxt("parameters", "ünïcode prompt\nSteps: 1, Seed: 2, Sampler: Euler", zip=zip_flag)
        buf = io.BytesIO()
        Image.new("L", (4, 4)).save(buf, "PNG", pnginfo=info)
        meta = read_image_metadata(buf.getvalue())
        assert meta.infotext is not None
        assert meta.infotext.prompt == "ünïcode prompt"
    info = PngInfo()
    info.add_text("parameters", "z prompt\nSteps: 1, Seed: 2, Sampler: Euler", zip=True)
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG", pnginfo=info)
    assert read_image_metadata(buf.getvalue()).infotext.prompt == "z prompt"  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_big_endian_sdnext(tmp_path, fmt):
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(exif_image_bytes(fmt, b"UNICODE\0" + SDNEXT_TEXT.encode("utf-16-be")))
    meta = read_image_metadata(path)
    assert (meta.format, meta.width, meta.height) == (fmt, 16, 12)
    assert meta.parameters == SDNEXT_TEXT
    assert meta.parameters_source == "exif_user_comment"
    assert meta.text_chunks == {}
    assert meta.infotext is not None
    assert meta.infotext.app == "sdnext"
    assert meta.infotext.lora_hashes == {"style_a": "1234abcd", "style_b": "5678ef01"}


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        (b"UNICODE\0" + "little endian, é".encode("utf-16-le"), "little endian, é"),
        (b"UNICODE\0" + "\ufeffwith bom".encode("utf-16-be"), "with bom"),
        (b"UNICODE\0" + "\ufeffle bom".encode("utf-16-le"), "le bom"),
        (b"UNICODE\0" + "一只猫".encode("utf-16-be"), "一只猫"),
        (b"ASCII\0\0\0ascii text", "ascii text"),
        (b"\0" * 8 + "undefined utf-8 ü".encode(), "undefined utf-8 ü"),
        (b"UNICODE\0" + "trailing nuls".encode("utf-16-be") + b"\0\0\0\0", "trailing nuls"),
    ],
)
def test_exif_user_comment_encodings(comment, expected):
    meta = read_image_metadata(exif_image_bytes("JPEG", comment))
    assert meta.parameters == expected


def test_jpeg_comment_fallback_and_no_metadata():
    buf = io.BytesIO()
    Image.new("RGB", (5, 5)).save(buf, "JPEG", comment=b"a prompt\nSteps: 9, Seed: 1, Sampler: Euler")
    meta = read_image_metadata(buf.getvalue())
    assert meta.parameters_source == "comment"
    assert meta.infotext is not None
    assert meta.infotext.steps == 9
    buf = io.BytesIO()
    Image.new("RGB", (5, 5)).save(buf, "JPEG")
    meta = read_image_metadata(buf.getvalue())
    assert (meta.parameters, meta.infotext, meta.parameters_source) == (None, None, None)
    assert meta.to_dict()["infotext"] is None


def test_gif():
    buf = io.BytesIO()
    Image.new("P", (3, 2)).save(buf, "GIF", comment=b"gif comment")
    meta = read_image_metadata(buf.getvalue())
    assert (meta.format, meta.width, meta.height, meta.parameters) == ("GIF", 3, 2, "gif comment")


def test_text_chunks_are_bounded():
    extra = {f"k{i:02d}": "v" for i in range(40)}
    extra["big"] = "x" * 200_000
    meta = read_image_metadata(png_bytes(None, extra=extra))
    assert meta.parameters is None
    assert len(meta.text_chunks) == 32
    assert all(len(value) <= 65_536 for value in meta.text_chunks.values())


@pytest.mark.parametrize(
    "data",
    [
        png_bytes(A1111_TEXT)[:30],  # truncated inside the IHDR chunk
        b"\x89PNG\r\n\x1a\n",
        b"",
        b"not an image at all",
        b"\xff\xd8\xff\xe0" + b"\x00" * 10,
    ],
    ids=["truncated_png", "signature_only", "empty", "text", "broken_jpeg"],
)
def test_broken_images_are_bad_image(tmp_path, data):
    path = tmp_path / "broken.png"
    path.write_bytes(data)
    with pytest.raises(FileReadError) as caught:
        read_image_metadata(path)
    assert caught.value.code == "bad_image"
    assert caught.value.path == str(path)
    with pytest.raises(FileReadError) as caught:
        read_image_metadata(data)
    assert caught.value.code == "bad_image"


def test_other_formats_are_refused():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(FileReadError) as caught:
        read_image_metadata(buf.getvalue())
    assert caught.value.code == "bad_image"


@pytest.mark.parametrize("side", [60_000, 10_000], ids=["bomb_error", "bomb_warning"])
def test_decompression_bomb_is_bad_image(tmp_path, side):
    data = png_declaring(side, side)
    assert len(data) < 200
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(FileReadError) as caught:
        read_image_metadata(path)
    assert caught.value.code == "bad_image"
    assert "decompression bomb" in caught.value.message


def test_declared_size_is_read_without_decoding():
    meta = read_image_metadata(png_declaring(4000, 3000))
    assert (meta.width, meta.height) == (4000, 3000)


def test_max_bytes(tmp_path):
    data = png_bytes(A1111_TEXT)
    path = tmp_path / "p.png"
    path.write_bytes(data)
    with pytest.raises(FileTooLargeError) as caught:
        read_image_metadata(path, max_bytes=len(data) - 1)
    assert caught.value.code == "too_large"
    with pytest.raises(FileTooLargeError):
        read_image_metadata(data, max_bytes=len(data) - 1)
    assert read_image_metadata(path, max_bytes=len(data)).parameters == A1111_TEXT


def test_missing_and_special_files(tmp_path):
    with pytest.raises(FileReadError) as caught:
        read_image_metadata(tmp_path / "missing.png")
    assert caught.value.code == "not_found"
    with pytest.raises(NotARegularFileError):
        read_image_metadata(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.png"
        os.mkfifo(fifo)
        with pytest.raises(NotARegularFileError) as caught:
            read_image_metadata(fifo)  # must not block
        assert caught.value.code == "not_regular_file"


def test_pathlike_and_bytes_agree(tmp_path: Path):
    data = exif_image_bytes("WEBP", b"UNICODE\0" + SDNEXT_TEXT.encode("utf-16-be"))
    path = tmp_path / "x.webp"
    path.write_bytes(data)
    assert read_image_metadata(path) == read_image_metadata(data) == read_image_metadata(bytearray(data))


def test_parallel_reads_leave_warning_filters_alone():
    before = list(warnings.filters)
    good, bomb = png_bytes(A1111_TEXT), png_declaring(10_000, 10_000)

    def work(index: int) -> object:
        try:
            return read_image_metadata(bomb if index % 2 else good).width
        except FileReadError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(64)))
    assert results == [8 if index % 2 == 0 else "bad_image" for index in range(64)]
    assert warnings.filters == before

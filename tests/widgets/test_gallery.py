"""The gallery widget without a browser: static-file rules, the message handler, traits, thumbnails."""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from pathlib import Path

import ipywidgets
import pytest
import traitlets
from PIL import Image

from lorabench.catalog import Catalog
from lorabench.widgets import FACETS, SORTS, Gallery, ThumbnailCache, dashboard_catalog, show_stats
from lorabench.widgets._detail import ROW_FIELDS, detail_of
from lorabench.widgets._thumbnails import render_webp

STATIC = Path(__file__).resolve().parents[2] / "lorabench" / "widgets" / "static"
FORBIDDEN = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function|\bFunction\s*\(|"
    r"srcdoc|\.href\s*=|javascript:|setTimeout\(\s*['\"`]|setInterval\(\s*['\"`]|createContextualFragment|"
    r"DOMParser|\bimport\s*\(|^\s*import\s|https?://",
    re.MULTILINE,
)


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_file(showcase, tmp_path_factory):
    path = tmp_path_factory.mktemp("gallery") / "catalog.duckdb"
    with Catalog(path) as catalog:
        catalog.import_library([showcase.root], progress=False, hashes=False)
    return path


@pytest.fixture
def catalog(catalog_file, tmp_path):
    copy = tmp_path / "catalog.duckdb"
    copy.write_bytes(catalog_file.read_bytes())
    wal = catalog_file.with_name(catalog_file.name + ".wal")
    if wal.exists():
        copy.with_name(copy.name + ".wal").write_bytes(wal.read_bytes())
    with Catalog(copy) as cat:
        yield cat


@pytest.fixture
def thumbs(tmp_path):
    return ThumbnailCache(tmp_path / "thumbnails")


@pytest.fixture
def gallery(catalog, thumbs, monkeypatch):
    g = Gallery(catalog, thumbnails=thumbs)
    g.sent = []
    monkeypatch.setattr(g, "send", lambda content, buffers=None: g.sent.append((content, list(buffers or []))))
    return g


def ask(gallery, msg):
    """Send one browser message; return the reply (and its buffers)."""
    before = len(gallery.sent)
    gallery._dispatch(gallery, msg, [])
    replies = [(c, b) for c, b in gallery.sent[before:] if c.get("type") != "patch"]
    assert len(replies) == 1, gallery.sent[before:]
    return replies[0]


def names_in_order(catalog, query="sort:name"):
    return [r["name"] for r in catalog.search(query, columns=["id", "name"])]


# -- the static front-end files ------------------------------------------------------------------------------


def test_esm_has_no_html_sinks_or_remote_urls():
    for path in STATIC.glob("*.js"):
        code = path.read_text()
        hits = [m.group(0) for m in FORBIDDEN.finditer(code)]
        assert not hits, f"{path.name}: forbidden {hits}"
        assert "export default" in code
        # setAttribute only inside the allow-listing helper
        assert code.count("setAttribute(") == 1, "use attr() so attributes stay allow-listed"
        # images only from blob: URLs we made (one assignment, behind a startsWith("blob:") check)
        assert len(re.findall(r"\.src\s*=", code)) == 1
        assert 'startsWith("blob:")' in code


def test_css_is_scoped_and_local():
    css = STATIC.joinpath("gallery.css").read_text()
    assert "http" not in css
    assert "@import" not in css
    assert "url(" not in css
    body = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    for block in re.findall(r"([^{}]+)\{", body):
        for selector in block.split(","):
            selector = selector.strip()
            assert selector.startswith(".lb-gallery"), f"unscoped selector {selector!r}"
    assert "var(--jp-layout-color1" in css
    assert "var(--jp-ui-font-color1" in css


def test_widget_loads_its_static_files(gallery):
    assert "export default" in gallery._esm
    assert ".lb-gallery" in gallery._css
    assert gallery._row_fields == list(ROW_FIELDS)


# -- construction and traits ---------------------------------------------------------------------------------


def test_unknown_keyword_is_a_type_error(catalog, thumbs):
    with pytest.raises(TypeError, match="colour"):
        Gallery(catalog, thumbnails=thumbs, colour="red")
    with pytest.raises(TypeError, match="_detail"):
        Gallery(catalog, thumbnails=thumbs, _detail={})


def test_initial_state(gallery, catalog):
    assert gallery.total == catalog.count() == 26
    assert gallery.error == ""
    assert gallery.selected == []
    assert gallery.focused is None
    assert gallery.nsfw_blur is True
    assert [k for k, _ in gallery.sort_options] == list(SORTS)
    assert [k for k, _ in gallery.facet_fields] == list(FACETS)
    assert "26 LoRAs" in repr(gallery)


def test_accepts_a_catalog_path(catalog, thumbs):
    g = Gallery(catalog.path, "base:sdxl", thumbnails=thumbs, sort="-size")
    assert g.total == catalog.count("base:sdxl")
    assert g.effective_query() == "base:sdxl sort:-size"


def test_search_sort_and_filters_drive_rows(gallery, catalog):
    reply, _ = ask(gallery, {"type": "rows", "start": 0, "count": 100, "uuid": "1"})
    assert [r[1] for r in reply["rows"]] == names_in_order(catalog)
    gallery.query = "base:sdxl"
    assert gallery.total == catalog.count("base:sdxl")
    gallery.sort = "-size"
    reply, _ = ask(gallery, {"type": "rows", "start": 0, "count": 100, "uuid": "2"})
    assert [r[1] for r in reply["rows"]] == names_in_order(catalog, "base:sdxl sort:-size")
    gallery.filters = {"algorithm": ["lora", "lokr"]}
    assert gallery.total == catalog.count("base:sdxl (algo:lora OR algo:lokr)")
    reply, _ = ask(gallery, {"type": "facets", "uuid": "3"})
    assert set(reply["facets"]) == set(FACETS)
    algos = dict(reply["facets"]["algorithm"])  # its own filter left out: other algorithms stay choosable
    assert algos["lora"] >= 1
    assert len(algos) > 2


def test_facet_values_are_quoted(gallery, catalog):
    gallery.filters = {"training_tags": ['say "hi" \\ there'], "folder": ["styles"]}
    assert gallery.effective_query() == 'tag:"say \\"hi\\" \\\\ there" folder:"styles" sort:name'
    assert gallery.total == 0
    assert gallery.error == ""


def test_query_error_keeps_the_last_valid_search(gallery):
    gallery.query = "base:sdxl"
    total, generation = gallery.total, gallery._generation
    gallery.query = "base:sdxl rating:>>4"
    assert "rating" in gallery.error
    assert gallery.error_position == len("base:sdxl rating:")
    assert gallery.total == total
    assert gallery._generation == generation
    reply, _ = ask(gallery, {"type": "rows", "start": 0, "count": 50, "uuid": "x"})
    assert len(reply["rows"]) == total  # still the last valid search, not an empty grid
    gallery.query = "base:sd1"
    assert gallery.error == ""
    assert gallery.error_position is None


def test_python_writes_are_validated(gallery, catalog):
    with pytest.raises(traitlets.TraitError):
        gallery.sort = "-nonsense"
    with pytest.raises(traitlets.TraitError):
        gallery.filters = {"path": ["/etc"]}
    with pytest.raises(traitlets.TraitError):
        gallery.filters = {"base_model": "sdxl"}
    with pytest.raises(traitlets.TraitError, match="999999"):
        gallery.selected = [999999]
    with pytest.raises(traitlets.TraitError):
        gallery.focused = 999999
    ids = catalog.search("sort:name", limit=3, columns=["id"]).ids
    gallery.selected = [*ids, ids[0]]
    assert gallery.selected == ids


def test_browser_trait_writes_are_filtered(gallery, catalog):
    ids = catalog.search("sort:name", limit=2, columns=["id"]).ids
    gallery.set_state({"selected": [ids[0], 999999, ids[1]], "total": 5, "_esm": "alert(1)", "error": "x"})
    assert gallery.selected == ids
    assert gallery.total == 26
    assert gallery._esm != "alert(1)"
    assert gallery.error == ""
    gallery.set_state({"selected": "1,2"})
    assert gallery.selected == ids
    gallery.set_state({"sort": "-rating; DROP TABLE loras", "query": 42, "nsfw_blur": "no"})
    assert gallery.sort == "name"
    assert gallery.query == ""
    assert gallery.nsfw_blur is True
    gallery.set_state({"focused": 999999})
    assert gallery.focused is None
    gallery.set_state({"focused": ids[1], "query": "base:sdxl", "nsfw_blur": False})
    assert gallery.focused == ids[1]
    assert gallery.query == "base:sdxl"
    assert gallery.nsfw_blur is False
    assert gallery._detail["id"] == ids[1]
    assert catalog.count() == 26


# -- the message handler -------------------------------------------------------------------------------------


BAD_MESSAGES = [
    {"type": "exec", "code": "import os", "uuid": "u"},
    {"type": "__init__", "uuid": "u"},
    {"type": "rows", "start": -1, "count": 10, "uuid": "u"},
    {"type": "rows", "start": 0, "count": 0, "uuid": "u"},
    {"type": "rows", "start": 0, "count": 10_000_000, "uuid": "u"},
    {"type": "rows", "start": "0", "count": 10, "uuid": "u"},
    {"type": "rows", "start": 0.5, "count": 10, "uuid": "u"},
    {"type": "rows", "start": True, "count": 10, "uuid": "u"},
    {"type": "rows", "start": 10**12, "count": 10, "uuid": "u"},
    {"type": "rows", "start": 500, "count": 10, "uuid": "u"},
    {"type": "thumbs", "ids": [999999], "uuid": "u"},
    {"type": "thumbs", "ids": list(range(1, 1000)), "uuid": "u"},
    {"type": "thumbs", "ids": ["1"], "uuid": "u"},
    {"type": "thumbs", "ids": [-1], "uuid": "u"},
    {"type": "thumbs", "ids": [1], "size": "huge", "uuid": "u"},
    {"type": "thumbs", "ids": "1,2", "uuid": "u"},
    {"type": "update", "id": 999999, "field": "rating", "value": 3, "uuid": "u"},
    {"type": "update", "id": 1, "field": "path", "value": "/etc/passwd", "uuid": "u"},
    {"type": "update", "id": 1, "field": "rating", "value": 7, "uuid": "u"},
    {"type": "update", "id": 1, "field": "favorite", "value": "yes", "uuid": "u"},
    {"type": "update", "id": 1, "field": "notes", "value": "x" * 100_001, "uuid": "u"},
    {"type": "update", "id": 1, "field": "tags", "value": ["t"] * 1000, "uuid": "u"},
    {"type": "update", "id": 1, "field": "preferred_weight", "value": float("inf"), "uuid": "u"},
    {"type": "update", "id": 1, "field": "trigger_groups", "value": [{"words": "x"}], "uuid": "u"},
    {"type": "select", "mode": "sql", "uuid": "u"},
    {"type": "select", "mode": "range", "start": 0, "end": 10_000, "uuid": "u"},
]


@pytest.mark.parametrize("msg", BAD_MESSAGES, ids=lambda m: f"{m['type']}-{sorted(m)[0]}")
def test_bad_messages_get_an_error_reply_and_change_nothing(gallery, catalog, msg):
    before = catalog.get(1)
    selected, generation = list(gallery.selected), gallery._generation
    reply, buffers = ask(gallery, msg)
    assert reply["uuid"] == "u"
    assert reply["error"]
    assert buffers == []
    assert gallery.selected == selected
    assert gallery._generation == generation
    after = catalog.get(1)
    assert {k: after[k] for k in ("rating", "favorite", "notes", "user_tags", "preferred_weight")} == {
        k: before[k] for k in ("rating", "favorite", "notes", "user_tags", "preferred_weight")
    }


@pytest.mark.parametrize("content", [None, [], "rows", {"start": 0}, {"type": "rows", "start": 0, "count": 1}])
def test_malformed_messages_still_get_a_reply(gallery, content):
    gallery._dispatch(gallery, content, [])
    reply, buffers = gallery.sent[-1]
    assert reply["error"]
    assert buffers == []


def test_unexpected_failures_are_replied_and_logged(gallery, monkeypatch, caplog):
    def boom(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gallery._catalog, "search", boom)
    reply, _ = ask(gallery, {"type": "rows", "start": 0, "count": 5, "uuid": "b"})
    assert reply == {"type": "rows", "uuid": "b", "error": "disk on fire"}
    assert "disk on fire" in caplog.text


def test_rows_are_compact(gallery):
    reply, buffers = ask(gallery, {"type": "rows", "start": 20, "count": 100, "uuid": "r"})
    assert buffers == []
    assert reply["start"] == 20
    assert reply["total"] == 26
    assert len(reply["rows"]) == 6
    for row in reply["rows"]:
        assert len(row) == len(ROW_FIELDS)
        record = dict(zip(ROW_FIELDS, row, strict=True))
        assert isinstance(record["id"], int)
        assert isinstance(record["preview"], bool)
    assert len(json.dumps(reply)) < 200 * len(reply["rows"])


def test_thumbnails_are_binary_buffers(gallery, catalog, thumbs):
    with_preview = catalog.search("has:preview sort:name", limit=3, columns=["id"]).ids
    without = catalog.search("-has:preview", limit=1, columns=["id"]).ids
    reply, buffers = ask(gallery, {"type": "thumbs", "ids": [*with_preview, *without], "uuid": "t"})
    items = {item["id"]: item for item in reply["items"]}
    assert items[without[0]]["key"] is None
    assert len(buffers) == 3
    for lora_id in with_preview:
        item = items[lora_id]
        assert re.fullmatch(r"[0-9a-f]{64}-256", item["key"])
        assert item["mime"] == "image/webp"
        data = buffers[item["buffer"]]
        assert data[:4] == b"RIFF"
        assert data[8:12] == b"WEBP"
        assert (thumbs.root / item["key"][:2] / f"{item['key']}.webp").read_bytes() == data
    # once generated, the rows carry the key so the browser can reuse its blob
    rows, _ = ask(gallery, {"type": "rows", "start": 0, "count": 100, "uuid": "r"})
    keys = {r[0]: r[ROW_FIELDS.index("thumb")] for r in rows["rows"]}
    assert all(keys[i] == items[i]["key"] for i in with_preview)
    large, big = ask(gallery, {"type": "thumbs", "ids": with_preview[:1], "size": "large", "uuid": "l"})
    assert large["items"][0]["key"].endswith("-640")
    assert len(big) == 1


def test_update_saves_to_the_catalog_and_patches_the_grid(gallery, catalog):
    lora_id = catalog.search("sort:name", limit=1, columns=["id"]).ids[0]
    gallery.focused = lora_id
    for field, value in [
        ("rating", 4),
        ("favorite", True),
        ("notes", "<b>keep</b> me"),
        ("tags", ["Ink", "ink "]),
        ("preferred_weight", 0.75),
        ("nsfw", True),
        ("trigger_groups", [{"name": "outfit", "words": ["red coat"]}]),
    ]:
        reply, _ = ask(gallery, {"type": "update", "id": lora_id, "field": field, "value": value, "uuid": field})
        assert reply["ok"] is True, reply
    record = Catalog(catalog.path).get(lora_id)
    assert record["rating"] == 4
    assert record["favorite"] is True
    assert record["notes"] == "<b>keep</b> me"
    assert record["user_tags"] == ["ink"]
    assert record["preferred_weight"] == 0.75
    assert record["nsfw"] is True
    assert record["trigger_groups"] == [{"name": "outfit", "words": ["red coat"]}]
    patches = [c for c, _ in gallery.sent if c.get("type") == "patch"]
    row = dict(zip(ROW_FIELDS, patches[-1]["row"], strict=True))
    assert row["id"] == lora_id
    assert row["rating"] == 4
    assert row["favorite"]
    assert row["nsfw"]
    assert gallery._detail["rating"] == 4
    assert gallery._detail["notes"] == "<b>keep</b> me"
    reply, _ = ask(gallery, {"type": "update", "id": lora_id, "field": "rating", "value": None, "uuid": "clear"})
    assert reply["ok"]
    assert Catalog(catalog.path).get(lora_id)["rating"] is None


def test_select_range_and_all(gallery, catalog):
    order = catalog.search("sort:name", columns=["id"]).ids
    reply, _ = ask(gallery, {"type": "select", "mode": "range", "start": 5, "end": 2, "uuid": "s"})
    assert reply["selected"] == 4
    assert gallery.selected == order[2:6]
    ask(gallery, {"type": "select", "mode": "range", "start": 10, "end": 10, "additive": True, "uuid": "s"})
    assert gallery.selected == [*order[2:6], order[10]]
    gallery.query = "base:sdxl"
    ask(gallery, {"type": "select", "mode": "all", "uuid": "s"})
    assert sorted(gallery.selected) == sorted(catalog.search("base:sdxl", columns=["id"]).ids)


def test_detail_is_text_only(catalog):
    record = catalog.get(catalog.search("has:description", limit=1, columns=["id"]).ids[0])
    record["description"] = "<p>Hello <script>alert(1)</script><img src=x onerror=alert(2)>world</p>"
    detail = detail_of(record)
    assert detail["description"] == "Hello world"
    json.dumps(detail)  # plain JSON
    assert all(isinstance(k, str) for k in detail)


# -- thumbnails ----------------------------------------------------------------------------------------------


def _png(path: Path, colour=(200, 30, 30), size=(64, 80)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_thumbnails_are_content_addressed_and_never_beside_the_library(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    a = _png(library / "a.png")
    b = library / "b.preview.png"
    b.write_bytes(a.read_bytes())
    c = _png(library / "c.png", colour=(0, 0, 255))
    before = _listing(library)
    cache = ThumbnailCache(tmp_path / "cache")
    ta, tb, tc = (cache.get(str(p), str(library)) for p in (a, b, c))
    assert ta.key == tb.key != tc.key
    assert ta.key.startswith(__import__("hashlib").sha256(a.read_bytes()).hexdigest())
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.webp")) == sorted({f"{ta.key}.webp", f"{tc.key}.webp"})
    assert _listing(library) == before
    assert cache.known_key(str(a)) == ta.key
    c.write_bytes(a.read_bytes())
    os.utime(c, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.known_key(str(c)) is None
    assert cache.get(str(c), str(library)).key == ta.key


def _bomb_png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_decompression_bombs_and_odd_files_are_refused(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    cache = ThumbnailCache(tmp_path / "cache")
    bomb = _bomb_png(library / "bomb.png", 100_000, 100_000)
    started = time.perf_counter()
    assert cache.get(str(bomb), str(library)) is None
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="pixel"):
        render_webp(bomb.read_bytes(), (256, 320))
    svg = library / "x.preview.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
    text = library / "x.png"
    text.write_text("not an image")
    assert cache.get(str(svg), str(library)) is None
    assert cache.get(str(text), str(library)) is None
    outside = _png(tmp_path / "outside.png")
    assert cache.get(str(outside), str(library)) is None
    link = library / "link.png"
    link.symlink_to(outside)
    assert cache.get(str(link), str(library)) is None
    fifo = library / "fifo.png"
    os.mkfifo(fifo)
    assert cache.get(str(fifo), str(library)) is None
    assert not list((tmp_path / "cache").rglob("*.webp"))
    with pytest.raises(ValueError, match="size"):
        cache.get(str(outside), str(library), size="huge")


def test_cache_defaults_to_the_lorabench_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORABENCH_HOME", str(tmp_path / "home"))
    assert ThumbnailCache().root == tmp_path / "home" / "thumbnails"


# -- dashboard helpers ---------------------------------------------------------------------------------------


def test_dashboard_catalog_choices(tmp_path, monkeypatch, catalog):
    monkeypatch.setenv("LORABENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORABENCH_CATALOG", str(tmp_path / "absent.duckdb"))
    assert dashboard_catalog(catalog.path).path == catalog.path
    demo = dashboard_catalog()
    assert demo.path == str(tmp_path / "home" / "samples" / "catalog.duckdb")
    assert demo.count() > 20
    assert not (tmp_path / "absent.duckdb").exists()
    monkeypatch.setenv("LORABENCH_CATALOG", catalog.path)
    assert dashboard_catalog().path == catalog.path


def test_show_stats_is_plain_text_widgets(catalog):
    panel = show_stats(catalog)
    labels = []

    def walk(widget):
        assert not isinstance(widget, ipywidgets.HTML | ipywidgets.HTMLMath)
        if isinstance(widget, ipywidgets.Label):
            labels.append(widget.value)
        for child in getattr(widget, "children", ()):
            walk(child)

    walk(panel)
    assert "26" in labels
    assert any(v.startswith("Base models: ") for v in labels)


def test_dashboard_notebook_parameters():
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "dashboard.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.tags
    namespace: dict = {}
    exec(first.source, namespace)  # plain assignments only
    assert {k: v for k, v in namespace.items() if not k.startswith("__")} == {"catalog_path": None, "library_paths": []}


@pytest.mark.slow
def test_dashboard_notebook_runs_headless(tmp_path, monkeypatch):
    from lorabench._notebooks import run_notebook

    monkeypatch.setenv("LORABENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORABENCH_CATALOG", str(tmp_path / "default.duckdb"))
    out = run_notebook("dashboard.ipynb", tmp_path / "out.ipynb")
    import nbformat

    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert not (tmp_path / "default.duckdb").exists()

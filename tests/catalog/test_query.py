"""The search language compiled to bound-parameter SQL, run against a real DuckDB table."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import pytest

from lorabench.catalog._query import (
    FIELDS,
    CompiledQuery,
    FieldInfo,
    Term,
    compile_query,
    describe_syntax,
    facets,
)
from lorabench.catalog._rows import search_text
from lorabench.errors import CatalogError, QuerySyntaxError

NOW = datetime(2026, 3, 10, 12, 0)

COLUMNS = """
    id BIGINT, path VARCHAR, root VARCHAR, folder VARCHAR, name VARCHAR, title VARCHAR, description VARCHAR,
    author VARCHAR, size BIGINT, mtime TIMESTAMP, first_seen TIMESTAMP, status VARCHAR, missing BOOLEAN,
    offline BOOLEAN, error_code VARCHAR, format VARCHAR, algorithm VARCHAR, dora BOOLEAN, base_model VARCHAR,
    base_model_hint VARCHAR, rank INTEGER, alpha DOUBLE, dtype VARCHAR, n_tensors INTEGER, n_modules INTEGER,
    epochs INTEGER, steps INTEGER, images INTEGER, network_module VARCHAR, optimizer VARCHAR,
    trigger_words VARCHAR[], training_tags VARCHAR[], sha256 VARCHAR, autov2 VARCHAR, autov3 VARCHAR,
    tensor_sha256 VARCHAR, preview_path VARCHAR, sidecar_kinds VARCHAR[], favorite BOOLEAN, rating INTEGER,
    notes VARCHAR, user_tags VARCHAR[], preferred_weight DOUBLE, nsfw BOOLEAN, search_text VARCHAR
"""
NAMES = [c.split()[0] for c in COLUMNS.replace("\n", " ").split(",")]

DEFAULTS: dict[str, Any] = {
    "root": "/loras", "folder": "", "status": "ok", "missing": False, "offline": False, "dora": False,
    "trigger_words": [], "training_tags": [], "user_tags": [], "sidecar_kinds": [], "favorite": False,
    "nsfw": False, "first_seen": datetime(2025, 1, 1), "mtime": datetime(2025, 1, 1),
}  # fmt: skip

D = datetime
ROWS: dict[int, dict[str, Any]] = {
    1: {"name": "anime_girl_v1", "title": "Anime Girl", "folder": "characters/anime", "base_model": "sdxl",
        "base_model_hint": "pony", "algorithm": "lora", "rank": 32, "alpha": 16.0, "size": 150_000_000,
        "rating": 5, "favorite": True, "training_tags": ["anime", "1girl"], "user_tags": ["waifu"],
        "trigger_words": ["aniGirl"], "epochs": 10, "steps": 2000, "images": 50, "mtime": D(2025, 5, 1),
        "first_seen": D(2026, 1, 10), "sha256": "aa11" + "0" * 60, "autov2": "aa11bb22cc", "preview_path": "a.png",
        "sidecar_kinds": ["civitai_info"], "preferred_weight": 0.8, "author": "Alice", "format": "kohya",
        "description": "A cute anime girl in school uniform", "network_module": "networks.lora",
        "optimizer": "AdamW8bit", "n_tensors": 792, "n_modules": 264, "dtype": "F16"},
    2: {"name": "realistic_photo", "folder": "styles", "base_model": "sd1", "algorithm": "locon", "rank": 64,
        "alpha": 64.0, "size": 1_500_000_000, "rating": 3, "training_tags": ["photo", "realistic"],
        "trigger_words": ["rlphoto"], "mtime": D(2024, 12, 1), "first_seen": D(2025, 6, 1), "dtype": "BF16",
        "author": "Bob", "optimizer": "Prodigy", "epochs": 20, "steps": 5000, "images": 200,
        "preferred_weight": 1.0, "notes": "too strong at 1.0", "format": "kohya"},
    3: {"name": "flux_painting", "folder": "styles/flux", "base_model": "flux1", "rank": 16, "alpha": 8.0,
        "size": 2**30, "training_tags": ["painting"], "first_seen": D(2026, 3, 8), "mtime": D(2026, 3, 1),
        "dtype": "BF16", "format": "diffusers", "algorithm": "lora"},
    4: {"name": "sd3_thing", "base_model": "sd3", "rank": 8, "size": 500_000, "rating": 1, "algorithm": "lora"},
    5: {"name": "loha_model", "base_model": "sdxl", "algorithm": "loha", "rank": 4, "size": 10_000_000},
    6: {"name": "lokr_model", "base_model": "sdxl", "algorithm": "lokr"},
    7: {"name": "dora_model", "base_model": "sdxl", "algorithm": "lora", "dora": True},
    8: {"name": "broken", "status": "error", "error_code": "invalid_header", "base_model": "unknown"},
    9: {"name": "old_pickle", "status": "unsafe", "format": "pickle"},
    10: {"name": "gone", "missing": True},
    11: {"name": "on_nas", "missing": True, "offline": True},
    12: {"name": "spicy", "nsfw": True, "rating": 2},
    13: {"name": "100% sure"},
    14: {"name": "a_b"},
    15: {"name": "axb"},
    16: {"name": "back\\slash"},
    17: {"name": "inject", "title": "'; DROP TABLE lora_view; --"},
    18: {"name": "quoted", "title": 'say "hello"'},
    19: {"name": "zzz_nulls", "folder": None, "status": None, "missing": None, "offline": None, "dora": None,
         "trigger_words": None, "training_tags": None, "user_tags": None, "sidecar_kinds": None,
         "favorite": None, "nsfw": None, "mtime": None},
    20: {"name": "Zeta", "rating": 4, "title": "zeta title", "size": 1_000_000},
    21: {"name": "alpha_test", "rating": 4, "title": "Alpha", "size": 2**20},
    22: {"name": "illu_style", "base_model": "sdxl", "base_model_hint": "illustrious", "rating": 5},
    23: {"name": "styled", "user_tags": ["my favourite"], "training_tags": ["style_x", "styleguide"]},
    24: {"name": "hashed", "tensor_sha256": "deadbeef" + "0" * 56, "autov3": "CAFEBABE1234"},
    25: {"name": "linked", "description": "see https://civitai.com/models/123 for info"},
    26: {"name": "sidecars", "sidecar_kinds": ["a1111_json", "markdown"], "notes": "  "},
    27: {"name": "slider", "preferred_weight": -0.5, "alpha": 0.5},
    28: {"name": "Ärger", "author": "Ünal", "trigger_words": ["sks dog", "AND"]},
    29: {"name": "tagged", "training_tags": ["anime_style", "1girl"], "user_tags": ["anime"]},
    30: {"name": "C-model", "path": "C:\\loras\\C-model.safetensors", "base_model": "sd2"},
}  # fmt: skip
ALL = sorted(ROWS)


@pytest.fixture(scope="module")
def conn():
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE TABLE lora_view ({COLUMNS})")
    for row_id, row in ROWS.items():
        values = {**DEFAULTS, **row, "id": row_id}
        values.setdefault("path", f"/loras/{values['folder'] or ''}/{values['name']}.safetensors")
        values["search_text"] = search_text(values["name"] or "", values.get("title"), values.get("description"),
                                            values["folder"] or "", values.get("trigger_words") or [],
                                            values.get("training_tags") or [])  # fmt: skip
        for column in ("sha256", "autov2", "autov3", "tensor_sha256"):  # stored lower-case, as the catalog does
            if values.get(column):
                values[column] = values[column].lower()
        con.execute(f"INSERT INTO lora_view VALUES ({', '.join('?' * len(NAMES))})", [values.get(n) for n in NAMES])
    # The user's tags also live in curation (as in the catalog), where free text and utag: look them up.
    con.execute("CREATE TABLE curation AS SELECT id AS lora_id, user_tags FROM lora_view")
    # and searches that need no curation read lora_core, the same rows without it.
    con.execute("CREATE VIEW lora_core AS SELECT * EXCLUDE (favorite, rating, notes, user_tags, preferred_weight, "
                "nsfw) FROM lora_view")  # fmt: skip
    yield con
    con.close()


def run(conn, text: str) -> list[int]:
    q = compile_query(text, now=NOW)
    sql = f"SELECT l.id FROM lora_view l WHERE {q.where} ORDER BY {q.order_by}"
    return [r[0] for r in conn.execute(sql, q.params).fetchall()]


def ids(conn, text: str) -> list[int]:
    return sorted(run(conn, text))


def everything_but(*excluded: int) -> list[int]:
    return [i for i in ALL if i not in excluded]


# --- free text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("anime", [1, 29]),  # name, title, tags, trigger, description; case-insensitive
        ("ANIME uniform", [1]),  # every word must match
        ("anime girl", [1, 29]),  # 29 has the training tag 1girl
        ("aniGIRL", [1]),  # trigger word
        ("waifu", [1]),  # user tag
        ("uniform", [1]),  # description
        ("characters", [1]),  # path
        ('"sks dog"', [28]),  # phrase inside a trigger word
        ('"school uniform"', [1]),
        ('"uniform school"', []),
        ("ärger", [28]),  # non-ASCII case folding
        ("", ALL),
        ("   ", ALL),
    ],
)
def test_free_text(conn, query, expected):
    assert ids(conn, query) == expected


def test_like_wildcards_in_user_text_match_literally(conn):
    assert ids(conn, "%") == [13]
    assert ids(conn, "a_b") == [14]  # not axb
    assert ids(conn, "100%") == [13]
    assert ids(conn, "back\\slash") == [16]
    assert ids(conn, "\\") == [16, 30]  # the Windows path of 30 also has backslashes


def test_urls_and_drive_paths_are_free_text(conn):
    assert ids(conn, "https://civitai.com/models/123") == [25]
    assert ids(conn, "C:\\loras") == [30]
    assert compile_query("http://x").terms == [Term("text", ":", "http://x", False, 0, 8)]


def test_quoted_colon_is_free_text(conn):
    assert ids(conn, '"https:"') == [25]
    assert compile_query('"foo:bar"').terms[0].field == "text"


def test_text_field_and_keywords_can_be_searched_literally(conn):
    assert ids(conn, "text:AND") == [28]  # a trigger word "AND"
    assert ids(conn, '"AND"') == [28]
    assert ids(conn, "text:name:gone") == []
    assert compile_query("text:name:gone").terms[0].value == "name:gone"


# --- text fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name:GIRL", [1]),
        ("title:alpha", [21]),
        ('title:"zeta title"', [20]),
        ('title:"say \\"hello\\""', [18]),
        ("path:styles/flux", [3]),
        ("folder:styles", [2, 3]),  # prefix
        ("folder:STYLES/F", [3]),
        ("folder:flux", []),  # not a substring match
        ("author:ali", [1]),
        ("author:ünal", [28]),
        ("desc:uniform", [1]),
        ("description:uniform", [1]),
        ("notes:strong", [2]),
        ("hint:illu", [22]),
        ("network:networks", [1]),
        ("optimizer:adamw", [1]),
        ("optimizer:prodigy", [2]),
        ("trigger:rlpho", [2]),
        ('trigger:"sks dog"', [28]),
        ("triggers:anigirl", [1]),
        ("Name:gone", [10]),  # field names are case-insensitive
    ],
)
def test_text_fields(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("base:sdxl", [1, 5, 6, 7, 22]),
        ("base:xl", [1, 5, 6, 7, 22]),
        ("base:SD15", [2]),
        ("base:sd1.5", [2]),
        ("base:1.5", [2]),
        ("base:flux", [3]),
        ("base:sd3.5", [4]),
        ("base:pony", [1]),  # via the hint
        ("base:illustrious", [22]),
        ("base:sd", []),  # exact, not substring
        ("algo:lora", [1, 3, 4, 7]),
        ("algorithm:LOCON", [2]),
        ("algo:lycoris", [5, 6]),
        ("algo:dora", [7]),
        ("format:KOHYA", [1, 2]),
        ("dtype:bf16", [2, 3]),
        ("dtype:f16", [1]),
        ("status:error", [8]),
        ("status:ok", everything_but(8, 9, 19)),
    ],
)
def test_exact_fields(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tag:anime", [1, 29]),  # training tag of 1, user tag of 29; exact element
        ("tag:ANIME", [1, 29]),
        ("tag:anim", []),
        ("tag:anime*", [1, 29]),
        ("tag:*style*", [23, 29]),
        ("tag:style*", [23]),
        ('tag:"style*"', []),  # a quoted * is literal
        ("tag:style_x", [23]),  # _ is not a wildcard
        ("tag:style_*", [23]),
        ("tags:1girl", [1, 29]),
        ('utag:"my favourite"', [23]),
        ("utag:anime", [29]),
        ("usertag:wai*", [1]),
        ("sidecar:civitai_info", [1]),
        ("sidecar:markdown", [26]),
        ("sidecar:a1111*", [26]),
        ("sidecar:civitai", []),
    ],
)
def test_list_fields(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("hash:aa11", [1]),  # sha256 and autov2
        ("hash:AA11BB", [1]),
        ("hash:cafebabe", [24]),  # autov3, stored upper-case
        ("hash:0xdeadbeef", [24]),  # tensor hash, 0x prefix accepted
        ("hash:beef", []),  # prefix, not substring
        ("id:7", [7]),
        ("id:>=29", [29, 30]),
    ],
)
def test_hash_and_id(conn, query, expected):
    assert ids(conn, query) == expected


# --- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("rating:5", [1, 22]),
        ("rating:=5", [1, 22]),
        ("rating:>=4", [1, 20, 21, 22]),
        ("rating:>4", [1, 22]),
        ("rating:<=2", everything_but(1, 2, 20, 21, 22)),  # unrated counts as 0
        ("rating:<2", everything_but(1, 2, 12, 20, 21, 22)),
        ("rating:2..3", [2, 12]),
        ("rating:4..", [1, 20, 21, 22]),
        ("rating:..1", everything_but(1, 2, 12, 20, 21, 22)),
        ("rating:*..1", everything_but(1, 2, 12, 20, 21, 22)),
        ("rating:0", everything_but(1, 2, 4, 12, 20, 21, 22)),
        ("rating:none", everything_but(1, 2, 4, 12, 20, 21, 22)),
        ("rank:32", [1]),
        ("rank:>=16", [1, 2, 3]),
        ("rank:<16", [4, 5]),
        ("rank:4..8", [4, 5]),
        ("alpha:>=16", [1, 2]),
        ("alpha:0.5", [27]),
        ("alpha:<1.5", [27]),
        ("alpha:.5", [27]),
        ("weight:0.8", [1]),
        ("weight:<0", [27]),
        ("weight:-1..0", [27]),
        ("weight:>=0.8", [1, 2]),
        ("epochs:>10", [2]),
        ("steps:2000..5000", [1, 2]),
        ("images:<100", [1]),
        ("tensors:792", [1]),
        ("modules:>100", [1]),
    ],
)
def test_numeric_fields(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("size:>1gb", [2, 3]),  # 1 GiB is 1.07 GB
        ("size:>1gib", [2]),
        ("size:1gib", [3]),
        ("size:>=1.5GB", [2]),
        ("size:1mb", [20]),
        ("size:1MiB", [21]),
        ("size:1000kb", [20]),
        ("size:1024KiB", [21]),
        ("size:500000", [4]),
        ("size:500000b", [4]),
        ("size:<1mb", [4]),
        ("size:1mb..200mb", [1, 5, 20, 21]),
        ("size:0.5kb..0.5mb", [4]),
    ],
)
def test_size_units(conn, query, expected):
    assert ids(conn, query) == expected


# --- dates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("added:2026-01-10", [1]),  # that whole day
        ("added:>=2026-01-10", [1, 3]),
        ("added:>2026-01-10", [3]),  # after that day
        ("added:<2025-06-01", everything_but(1, 2, 3)),
        ("added:<=2025-06-01", everything_but(1, 3)),
        ("added:2025-06-01..2026-01-10", [1, 2]),  # inclusive
        ("added:7d", [3]),  # within the last 7 days (NOW is 2026-03-10 12:00)
        ("added:<7d", [3]),
        ("added:1d", []),
        ("added:2w", [3]),
        ("added:>7d", everything_but(3)),  # older than 7 days
        ("added:>=60d", everything_but(1, 3)),  # 1 was added 59 days before NOW
        ("added:24h", []),
        ("modified:<2025-01-01", [2]),
        ("modified:>=2025-05-01", [1, 3]),
        ("modified:30d", [3]),
        ("modified:>30d", everything_but(3, 19)),  # 19 has no mtime
    ],
)
def test_dates(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [("added:9999-12-31", []), ("added:>9999-12-31", []), ("added:0001-01-01", []), ("added:99999w", ALL)],
)
def test_extreme_dates_compile_and_run(conn, query, expected):
    assert ids(conn, query) == expected


def test_aware_now_is_converted_to_naive_utc():
    aware = datetime(2026, 3, 10, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert compile_query("added:7d", now=aware).params == [datetime(2026, 3, 3, 12, 0)]


def test_age_is_anchored_at_now():
    q = compile_query("added:7d", now=NOW)
    assert q.params == [datetime(2026, 3, 3, 12, 0)]
    assert compile_query("added:7d").params[0] > datetime(2026, 1, 1)  # defaults to the real clock


# --- is: and has: ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("is:favorite", [1]),
        ("is:fav", [1]),
        ("is:FAV", [1]),
        ("is:missing", [10, 11]),
        ("is:offline", [11]),
        ("is:nsfw", [12]),
        ("is:dora", [7]),
        ("is:error", [8]),
        ("is:unsafe", [9]),
        ("is:ok", everything_but(8, 9, 19)),
        ("is:rated", [1, 2, 4, 12, 20, 21, 22]),
        ("is:unrated", everything_but(1, 2, 4, 12, 20, 21, 22)),
        ("has:preview", [1]),
        ("has:triggers", [1, 2, 28]),
        ("has:tags", [1, 2, 3, 23, 29]),
        ("has:notes", [2]),  # whitespace-only notes of 26 do not count
        ("has:hash", [1]),
        ("has:description", [1, 25]),
        ("has:title", [1, 17, 18, 20, 21]),
        ("has:author", [1, 2, 28]),
        ("has:sidecar", [1, 26]),
        ("has:rating", [1, 2, 4, 12, 20, 21, 22]),
        ("has:weight", [1, 2, 27]),
        ("has:base", [1, 2, 3, 4, 5, 6, 7, 22, 30]),  # "unknown" does not count
    ],
)
def test_is_and_has(conn, query, expected):
    assert ids(conn, query) == expected


# --- negation, OR, parentheses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("-is:missing", everything_but(10, 11)),  # includes 19, whose missing is NULL
        ("-tag:anime", everything_but(1, 29)),  # includes 19, whose tags are NULL
        ("-author:bob", everything_but(2)),  # rows without an author are kept
        ("-rank:>=16", everything_but(1, 2, 3)),
        ('-"sks dog"', everything_but(28)),
        ("-anime -is:rated", everything_but(1, 2, 4, 12, 20, 21, 22, 29)),
        ("NOT is:missing", everything_but(10, 11)),
        ("NOT NOT is:missing", [10, 11]),
        ("base:sdxl -algo:lora", [5, 6, 22]),
        ("-(base:sdxl OR base:sd1)", everything_but(1, 2, 5, 6, 7, 22)),
    ],
)
def test_negation(conn, query, expected):
    assert ids(conn, query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("base:sd1 OR base:pony", [1, 2]),
        ("base:sd1 OR base:pony OR is:nsfw", [1, 2, 12]),
        # OR joins only its neighbours: a b OR c = a AND (b OR c)
        ("rating:>=4 base:sdxl OR base:sd2", [1, 22]),
        ("base:sd2 OR base:sdxl rating:>=4", [1, 22]),
        ("(rating:>=4 base:sdxl) OR base:sd2", [1, 22, 30]),
        ("rating:>=4 AND base:sdxl", [1, 22]),  # AND is optional
        ("(is:nsfw OR is:dora) -is:missing", [7, 12]),
        ("((is:nsfw))", [12]),
        ("(anime OR photo) (girl OR realistic)", [1, 2, 29]),
        ("is:fav and", []),  # lower-case "and" is a word to search for
        ("-AND", everything_but(28)),  # a negated AND is the word "AND"
    ],
)
def test_or_and_parentheses(conn, query, expected):
    assert ids(conn, query) == expected


def test_parenthesis_inside_a_word_at_top_level_is_literal(conn):
    conn.execute("INSERT INTO lora_view (id, name, search_text) VALUES (99, 'lora(v2)', 'lora(v2)')")
    try:
        assert ids(conn, "lora(v2)") == [99]
        assert ids(conn, '(name:"lora(v2)")') == [99]
    finally:
        conn.execute("DELETE FROM lora_view WHERE id = 99")


# --- sorting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("id:<=5", [1, 3, 5, 2, 4]),  # default: name, case-insensitive, then id
        ("id:<=5 sort:rating", [4, 2, 1, 3, 5]),  # NULLs last
        ("id:<=5 sort:-rating", [1, 2, 4, 3, 5]),  # NULLs last when descending too
        ("id:<=5 sort:+rating", [4, 2, 1, 3, 5]),
        ("id:<=5 sort:rating-desc", [1, 2, 4, 3, 5]),
        ("id:<=5 sort:-size", [2, 3, 1, 5, 4]),
        ("id:<=5 sort:rank", [5, 4, 3, 1, 2]),
        ("id:20..22 sort:name", [21, 22, 20]),  # case-insensitive: alpha_test, illu_style, Zeta
        ("id:20..22 sort:-name", [20, 22, 21]),
        ("id:20..22 sort:-rating", [22, 20, 21]),  # ties by id
        ("id:20..22 sort:-rating sort:name", [22, 21, 20]),  # several keys in order
        ("sort:-rating id:20..22 sort:-name", [22, 20, 21]),  # sorts may be anywhere
        ("id:<=3 sort:modified", [2, 1, 3]),
        ("id:<=3 sort:-added", [3, 1, 2]),
        ("id:1..3 sort:-base", [1, 2, 3]),  # sdxl, sd1, flux1
        ("id:1..3 sort:algo", [2, 1, 3]),
        ("id:1..3 sort:algorithm", [2, 1, 3]),
        ("id:1..4 sort:-alpha", [2, 1, 3, 4]),
        ("id:1..4 sort:epochs", [1, 2, 3, 4]),
        ("id:1..4 sort:-steps", [2, 1, 3, 4]),
        ("id:1..4 sort:-path", [2, 3, 1, 4]),
        ("id:1..4 sort:title", [1, 2, 3, 4]),
    ],
)
def test_sorting(conn, query, expected):
    assert run(conn, query) == expected


def test_order_by_always_ends_with_id():
    assert compile_query("").order_by == "lower(l.name) ASC NULLS LAST, l.id"
    assert compile_query("sort:-rating sort:name").order_by == (
        "l.rating DESC NULLS LAST, lower(l.name) ASC NULLS LAST, l.id"
    )


# --- the compiled object -----------------------------------------------------------------------------


def test_empty_query_compiles_to_true():
    q = compile_query("")
    assert q == CompiledQuery("TRUE", [], "lower(l.name) ASC NULLS LAST, l.id", [], "")
    assert compile_query("sort:name").where == "TRUE"


def test_terms_describe_what_was_parsed():
    text = 'anime -tag:"long hair" rating:>=4 rank:4..8 NOT is:fav sort:-rating'
    assert compile_query(text).terms == [
        Term("text", ":", "anime", False, 0, 5),
        Term("tag", ":", "long hair", True, 6, 22),
        Term("rating", ">=", "4", False, 23, 33),
        Term("rank", "..", "4..8", False, 34, 43),
        Term("is", ":", "fav", False, 48, 54),
        Term("sort", ":", "-rating", False, 55, 67),
    ]
    assert [t.field for t in compile_query("desc:x algo:y usertag:z").terms] == ["description", "algorithm", "utag"]


def test_fields_allow_list_and_help():
    assert isinstance(FIELDS["rating"], FieldInfo)
    assert {"name", "tag", "rating", "size", "added", "is", "has", "sort"} <= set(FIELDS)
    assert "favorite" in FIELDS["is"].values
    assert "desc" in FIELDS["description"].aliases
    help_text = describe_syntax()
    for name in FIELDS:
        assert f"{name}:" in help_text
    assert "OR binds tighter" in help_text


# --- injection ---------------------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE lora_view; --",
    '") OR 1=1 --',
    "' OR '1'='1",
    "%",
    "_",
    "\\",
    "l.id) OR (TRUE",
    "?",
    "$1",
    "\x00",
    "🙂 ' \" ) (",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["", "name:", "title:", "tag:", "trigger:", "folder:", "base:", "algo:", "status:"])
def test_hostile_values_are_only_parameters(conn, field, value):
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    q = compile_query(f'{field}"{escaped}"')
    assert q.terms[0].value == value
    for chunk in (value if len(value) > 1 else "DROP", "DROP", "1=1", "'1'", "$1", "\x00", "🙂", ") (", "TRUE"):
        assert chunk not in q.where
    assert q.where.count("?") == len(q.params)
    conn.execute(f"SELECT l.id FROM lora_view l WHERE {q.where}", q.params).fetchall()
    assert conn.execute("SELECT count(*) FROM lora_view").fetchone()[0] == len(ROWS)


@pytest.mark.parametrize("value", [*HOSTILE, "a_b", "100%", "back\\slash", "%_%", "*"])
def test_hostile_values_match_literally(conn, value):
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    expected = [i for i in ALL if value.lower() in ROWS[i]["name"].lower()]
    assert ids(conn, f'name:"{escaped}"') == expected


def test_injection_text_matches_literally(conn):
    assert ids(conn, 'title:"\'; DROP TABLE lora_view; --"') == [17]
    assert ids(conn, "'; DROP") == [17]
    with pytest.raises(QuerySyntaxError, match="Unterminated quote"):
        ids(conn, '") OR 1=1 --')
    assert ids(conn, '"\\") OR 1=1 --"') == []
    assert conn.execute("SELECT count(*) FROM lora_view").fetchone()[0] == len(ROWS)


def test_where_has_placeholders_for_every_value():
    q = compile_query("anime base:xl rating:>=4 size:<1gb added:7d is:error has:notes -hash:ab12", now=NOW)
    assert q.where.count("?") == len(q.params)
    for literal in ("anime", "sdxl", "error", "ab12", "1000000000"):
        assert literal not in q.where


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "position", "words"),
    [
        ("foo:bar", 0, ['"foo"', "Unknown search field"]),
        ("anime -rattng:5", 7, ['"rattng"', "did you mean rating"]),
        ("fodler:x", 0, ["did you mean folder"]),
        ("rank:abc", 5, ['"abc"', "whole number", "rank"]),
        ("rank:4.5", 5, ["whole number"]),
        ("rating:>=x", 9, ['"x"', "rating"]),
        ("rank:4..x", 8, ['"x"']),
        ("alpha:1e3", 6, ["not a number"]),
        ("size:12zb", 5, ["not a size"]),
        ("size:-5mb", 5, ["not a size"]),
        ("rank:>>4", 5, ["Bad comparison", '">>4"']),
        ("rank:=<4", 5, ["Bad comparison"]),
        ("rank:!=4", 5, ["Bad comparison"]),
        ("rank:>", 5, ["Bad comparison"]),
        ("rank:..", 5, ["no bounds"]),
        ("added:yesterday", 6, ["not a date"]),
        ("added:2026-13-01", 6, ["not a date"]),
        ("modified:>=2026/01/01", 11, ["not a date"]),
        ("hash:xyz", 5, ["hexadecimal"]),
        ("added:999999d", 6, ["before year 1"]),
        ("size:" + "9" * 400, 5, ["not a size", "…"]),  # overflow, and the value is clipped
        ("alpha:" + "9" * 400, 6, ["not a number"]),  # inf is refused
        ("weight:-" + "9" * 400, 7, ["not a number"]),
        ("id:99999999999999999999", 3, ["whole number"]),
        ("is:favourit", 3, ['Unknown is: value "favourit"', "did you mean favorite"]),
        ("has:previews", 4, ["has:", "did you mean preview"]),
        ("sort:popularity", 5, ['Unknown sort: key "popularity"']),
        ("sort:-ratng", 5, ["did you mean rating"]),
        ('anime "sks dog', 6, ["Unterminated quote"]),
        ('title:"my lora', 6, ["Unterminated quote"]),
        ("name:", 0, ["Empty value", "name:"]),
        ('tag:""', 0, ["Empty value"]),
        ('""', 0, ["Empty quoted phrase"]),
        ("OR anime", 0, ["Stray OR"]),
        ("anime OR", 6, ["Stray OR"]),
        ("a OR OR b", 2, ["Stray OR"]),
        ("(OR a)", 1, ["Stray OR"]),
        ("(a OR)", 3, ["Stray OR"]),
        ("AND a", 0, ["Stray AND"]),
        ("a AND", 2, ["Stray AND"]),
        ("NOT", 0, ["NOT must be followed"]),
        ("(anime", 0, ['Unbalanced "("']),
        ("x -(a (b)", 3, ['Unbalanced "("']),  # the outer one
        ("anime)", None, None),  # literal ")" at top level inside a word: no error
        ("anime )", 6, ['Unbalanced ")"']),
        ("(a) b )", 6, ['Unbalanced ")"']),
        ("()", 0, ["Empty parentheses"]),
        ("-sort:name", 0, ["sort: cannot be negated"]),
        ("(sort:name)", 1, ["sort: cannot be negated or nested"]),
        ("NOT sort:name", 4, ["sort: cannot be negated"]),
        ("a OR sort:name", 5, ["sort: cannot be part of an OR"]),
        ("x" * 2001, 2000, ["longer than 2000"]),
        ("(" * 20 + "a" + ")" * 20, 16, ["nested deeper"]),
        (" ".join(["a"] * 101), 200, ["more than 100 terms"]),
    ],
)
def test_syntax_errors(query, position, words):
    if position is None:
        compile_query(query)
        return
    with pytest.raises(QuerySyntaxError) as info:
        compile_query(query)
    err = info.value
    assert err.position == position
    for word in words:
        assert word in err.message
    assert f"at position {position}" in err.message
    assert err.code == "query_syntax"
    assert err.hint


def test_unknown_field_lists_the_known_fields_and_how_to_quote():
    with pytest.raises(QuerySyntaxError) as info:
        compile_query("artist:bob")
    assert "Known fields:" in info.value.hint
    assert '"artist:…"' in info.value.hint


# --- fuzz --------------------------------------------------------------------------------------------

ALPHABET = [*'ab:-"() \\%_*.<>=!0123456789', "OR", "AND", "NOT", "rating:", "tag:", "sort:", "size:", "added:",
            "is:", "has:", "..", "gb", "7d", "fav", "-"]  # fmt: skip


def test_fuzz_either_compiles_to_runnable_sql_or_raises_query_syntax_error(conn):
    rng = random.Random(20260310)
    compiled, bad_positions = 0, []
    for _ in range(1500):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
        try:
            q = compile_query(text, now=NOW)
        except QuerySyntaxError as err:
            bad_positions.append((err.position, len(text)))
            continue
        assert q.where.count("?") == len(q.params)
        conn.execute(f"SELECT l.id FROM lora_view l WHERE {q.where} ORDER BY {q.order_by}", q.params).fetchall()
        compiled += 1
    assert compiled > 200
    assert len(bad_positions) > 200
    assert all(pos is not None and 0 <= pos <= size for pos, size in bad_positions)


def test_fuzz_with_arbitrary_unicode(conn):
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 20)))
        try:
            q = compile_query(text, now=NOW)
        except QuerySyntaxError:
            continue
        conn.execute(f"SELECT l.id FROM lora_view l WHERE {q.where} ORDER BY {q.order_by}", q.params).fetchall()


def test_compile_is_cheap():
    text = 'anime "sks dog" base:xl rating:>=4 -tag:anime* (is:fav OR has:preview) size:<1gb sort:-rating'
    for _ in range(2000):
        compile_query(text, now=NOW)


# --- facets ------------------------------------------------------------------------------------------


def test_facets_count_the_matching_rows(conn):
    result = facets(conn, compile_query("-is:missing"), fields=("base_model", "training_tags", "folder"), limit=3)
    assert result["base_model"] == [("sdxl", 5), ("flux1", 1), ("sd1", 1)]
    assert result["training_tags"] == [("1girl", 2), ("anime", 1), ("anime_style", 1)]
    assert result["folder"][0] == ("", 24)  # 28 rows, of which 3 in folders and 1 NULL


def test_facets_use_the_query_and_defaults(conn):
    result = facets(conn, compile_query("base:sdxl"))
    assert set(result) == {"base_model", "algorithm", "training_tags", "folder"}
    assert result["algorithm"] == [("lora", 2), ("loha", 1), ("lokr", 1)]
    assert result["base_model"] == [("sdxl", 5)]
    assert facets(conn, compile_query("is:fav"), fields="rating") == {"rating": [(5, 1)]}


@pytest.mark.parametrize(
    ("fields", "limit"), [(("name; DROP TABLE lora_view",), 5), (("id",), 5), (("base_model",), 0), (("rank",), True)]
)
def test_facets_reject_fields_outside_the_allow_list(conn, fields, limit):
    with pytest.raises(CatalogError):
        facets(conn, compile_query(""), fields=fields, limit=limit)

"""Benchmark search on a 100,000-row catalog: p50/p95 of ``search`` alone and ``search`` + ``facets``.

The rows are synthetic and inserted in one statement through the public ``Catalog.sql`` (every data
value is a bound parameter), so setting up takes seconds instead of importing 100,000 files. About a
quarter of the rows get curation (ratings, favourites, user tags) so the view's join is exercised.

Each query of a mix of free text, field filters, comparisons, negation, tags, OR, dates and sorts runs
``catalog.search(q, limit=100)`` then ``catalog.facets(q)``; both are timed. Prints one JSON line with
p50/p95 over all runs (goal: p95 <= 30 ms), and the slowest queries by median.

Usage: python benchmarks/bench_search.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

from _common import emit, environment, percentile, scratch, timed

from lorabench.catalog import Catalog

P95_GOAL_MS = 30.0

QUERIES: Sequence[str] = (
    "",
    "forest",
    "misty knight",
    '"golden fox"',
    "base:sdxl",
    "base:pony",
    "base:flux sort:-rating",
    "algo:lycoris",
    "algo:dora",
    "rank:>=32",
    "rank:8..16 alpha:<=8",
    "size:>100mb",
    "rating:>=4",
    "is:favorite",
    "-tag:1girl",
    "tag:1girl tag:smile",
    "tag:score_*",
    "trigger:ohwx",
    "sort:-size",
    "sort:name",
    "folder:characters/00",
    "author:anon -base:sd1",
    "(base:sdxl OR base:flux) rank:>=16 sort:-steps",
    "added:7d",
    "hash:ab",
    "has:preview",
    "NOT is:rated",
    "steps:>1000 epochs:<10 sort:-epochs",
    "neon OR crimson",
    "utag:keeper -is:nsfw sort:-rating",
)

_WORDS = {
    "adj": ["misty", "golden", "crimson", "silent", "velvet", "frozen", "lunar", "amber", "neon", "rustic",
            "gentle", "stormy", "cosmic", "paper", "ivory", "shadow"],
    "noun": ["forest", "knight", "fox", "castle", "robot", "garden", "dragon", "harbor", "witch", "samurai",
             "lantern", "meadow", "pilot", "owl", "canyon", "violinist"],
    "kind": ["characters", "styles", "concepts", "clothing"],
    "base": ["sd1", "sdxl", "sdxl", "sdxl", "flux1", "flux1", "sd3", "sd2"],
    "hint": ["pony", "illustrious", "noobai"],
    "algo": ["lora", "lora", "lora", "lora", "locon", "loha", "lokr", "ia3", "oft", "full"],
    "format": ["kohya", "kohya", "peft", "diffusers", "lycoris"],
    "dtype": ["F16", "BF16", "F32"],
    "author": ["lorabench", "anon", "pixelsmith", "studio-k"],
    "tag": ["1girl", "1boy", "solo", "outdoors", "indoors", "smile", "night", "sky", "flowers", "portrait",
            "full body", "looking at viewer", "detailed background", "rain", "score_9", "score_8_up"],
    "trigger": ["ohwx", "sks", "zkz", "p3r"],
    "sidecar": ["civitai_info", "a1111_json", "lora_manager", "txt"],
    "utag": ["keeper", "todo", "style", "favourite-artist"],
}  # fmt: skip

# pick($list, salt) is written out as $list[1 + CAST(hash(concat(i, salt)) % len($list) AS BIGINT)]: one element of a
# bound list chosen by a per-row, per-attribute hash, so the attributes vary independently.
_ROWS_SQL = """
INSERT INTO loras (path, root, folder, name, title, description, author, size, mtime, mtime_ns, status,
    format, algorithm, dora, base_model, base_model_hint, rank, alpha, dtype, n_tensors, n_modules, epochs,
    steps, images, trigger_words, training_tags, sha256, autov2, autov3, tensor_sha256, preview_path,
    sidecar_kinds, first_seen, last_seen, updated_at)
SELECT $root || '/' || folder || '/' || name || '.safetensors', $root, folder, name, title,
    CASE WHEN h % 3 = 0 THEN title || ': a LoRA trained on ' || noun || ' images.' END, author,
    1000000 + (h % 400) * 1000000, now()::TIMESTAMP - to_days(CAST(h % 700 AS INTEGER)),
    1700000000000000000 + h % 1000000000, 'ok', format, algo, h % 17 = 0, base,
    CASE WHEN base = 'sdxl' AND h % 4 = 0 THEN $hint[1 + CAST(hash(concat(i, 'hint')) % len($hint) AS BIGINT)] END,
    rank, rank / 2.0, $dtype[1 + CAST(hash(concat(i, 'dtype')) % len($dtype) AS BIGINT)],
    200 + h % 600, 100 + h % 300, 1 + h % 30, 100 + h % 5000, 10 + h % 300,
    CASE WHEN h % 2 = 0 THEN [$trigger[1 + CAST(hash(concat(i, 'trigger')) % len($trigger) AS BIGINT)] || ' ' || noun]
         ELSE [] END,
    list_distinct([$tag[1 + CAST(hash(concat(i, 'tag1')) % len($tag) AS BIGINT)],
                   $tag[1 + CAST(hash(concat(i, 'tag2')) % len($tag) AS BIGINT)],
                   $tag[1 + CAST(hash(concat(i, 'tag3')) % len($tag) AS BIGINT)]]),
    sha, left(sha, 10), left(tsha, 12), tsha,
    CASE WHEN h % 30 = 0 THEN $root || '/' || folder || '/' || name || '.preview.png' END,
    CASE WHEN h % 5 = 0 THEN [$sidecar[1 + CAST(hash(concat(i, 'sidecar')) % len($sidecar) AS BIGINT)]] ELSE [] END,
    now()::TIMESTAMP - to_hours(CAST(h % 2000 AS INTEGER)), now()::TIMESTAMP, now()::TIMESTAMP
FROM (
    SELECT *, kind || '/' || lpad(CAST(i // 500 % 100 AS VARCHAR), 3, '0') AS folder,
           adj || '_' || noun || '_' || lpad(CAST(i AS VARCHAR), 6, '0') AS name,
           upper(left(adj, 1)) || substr(adj, 2) || ' ' || upper(left(noun, 1)) || substr(noun, 2)
               || ' v' || CAST(1 + h % 4 AS VARCHAR) AS title
    FROM (
        SELECT i, h, sha256(CAST(i AS VARCHAR)) AS sha, sha256('t' || CAST(i AS VARCHAR)) AS tsha,
               $adj[1 + CAST(hash(concat(i, 'adj')) % len($adj) AS BIGINT)] AS adj,
               $noun[1 + CAST(hash(concat(i, 'noun')) % len($noun) AS BIGINT)] AS noun,
               $kind[1 + CAST(hash(concat(i, 'kind')) % len($kind) AS BIGINT)] AS kind,
               $base[1 + CAST(hash(concat(i, 'base')) % len($base) AS BIGINT)] AS base,
               $algo[1 + CAST(hash(concat(i, 'algo')) % len($algo) AS BIGINT)] AS algo,
               $format[1 + CAST(hash(concat(i, 'format')) % len($format) AS BIGINT)] AS format,
               $author[1 + CAST(hash(concat(i, 'author')) % len($author) AS BIGINT)] AS author,
               [4, 8, 16, 32, 64, 128][1 + CAST(hash(concat(i, 'rank')) % 6 AS BIGINT)] AS rank
        FROM (SELECT i, CAST(hash(i) // 2 AS BIGINT) AS h FROM range($rows) r(i))
    )
)
"""

# What the importer stores in search_text (catalog._rows.search_text), computed in SQL for synthetic rows.
_SEARCH_TEXT_SQL = """
UPDATE loras SET search_text = lower(concat_ws(chr(31), name, title, description, folder,
    array_to_string(trigger_words, chr(31)), array_to_string(training_tags, chr(31))))
"""

_CURATION_SQL = """
INSERT INTO curation (lora_id, favorite, rating, notes, user_tags, nsfw, sha256, tensor_sha256, updated_at)
SELECT id, h % 9 = 0, CASE WHEN h % 3 > 0 THEN CAST(1 + h % 5 AS TINYINT) END,
       CASE WHEN h % 7 = 0 THEN 'note ' || name END,
       CASE WHEN h % 2 = 0 THEN [$utag[1 + CAST(hash(concat(id, 'utag')) % len($utag) AS BIGINT)]] ELSE [] END,
       CASE WHEN h % 25 = 0 THEN TRUE END, sha256, tensor_sha256, now()::TIMESTAMP
FROM (SELECT id, name, sha256, tensor_sha256, CAST(hash(concat(id, 'c')) // 2 AS BIGINT) AS h FROM loras)
WHERE h % 4 = 0
"""


def build(catalog: Catalog, rows: int) -> None:
    params = {"root": "/library", "rows": rows, **{k: v for k, v in _WORDS.items() if k != "utag"}}
    catalog.sql(_ROWS_SQL, params)
    catalog.sql(_SEARCH_TEXT_SQL)
    catalog.sql(_CURATION_SQL, {"utag": _WORDS["utag"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each query (after one warm-up)")
    parser.add_argument("--dir", default=None, help="work folder to keep (default: a temp folder, removed)")
    args = parser.parse_args()
    with scratch("lorabench-bench-search-", args.dir) as tmp:
        with Catalog(tmp / "search.duckdb") as catalog:
            build_s, _ = timed(lambda: build(catalog, args.rows))
            rows = catalog.count()
            curated = catalog.sql("SELECT count(*) AS n FROM curation").column("n")[0]
        catalog = Catalog(tmp / "search.duckdb")  # a fresh handle, as a notebook would open it
        search_ms: list[float] = []
        both_ms: list[float] = []
        per_query: dict[str, list[float]] = {}
        totals: dict[str, int] = {}
        for q in QUERIES:  # warm-up: compile paths, DuckDB caches
            totals[q] = catalog.search(q, limit=100).total
            catalog.facets(q)
        started = time.perf_counter()
        for _ in range(args.repeat):
            for q in QUERIES:
                s, _ = timed(lambda q=q: catalog.search(q, limit=100))
                f, _ = timed(lambda q=q: catalog.facets(q))
                search_ms.append(s * 1000)
                both_ms.append((s + f) * 1000)
                per_query.setdefault(q, []).append((s + f) * 1000)
        wall = time.perf_counter() - started
        catalog.close()
        slowest = sorted(per_query.items(), key=lambda kv: statistics.median(kv[1]), reverse=True)[:3]
        emit({
            "bench": "search", **environment(),
            "rows": rows, "curated_rows": curated, "build_s": round(build_s, 2), "queries": len(QUERIES),
            "runs_per_query": args.repeat, "empty_results": sorted(q for q, n in totals.items() if n == 0),
            "search_p50_ms": round(percentile(search_ms, 50), 2), "search_p95_ms": round(percentile(search_ms, 95), 2),
            "search_max_ms": round(max(search_ms), 2),
            "search_facets_p50_ms": round(percentile(both_ms, 50), 2),
            "search_facets_p95_ms": round(percentile(both_ms, 95), 2),
            "search_facets_max_ms": round(max(both_ms), 2),
            "p95_goal_ms": P95_GOAL_MS,
            "slowest_search_facets_median_ms": {q or "(all)": round(statistics.median(v), 1) for q, v in slowest},
            "searches_per_s": round(len(search_ms) / wall, 1),
        })  # fmt: skip


if __name__ == "__main__":
    main()

"""Benchmark the gallery widget in Chromium + JupyterLab: first paint, bytes for the first screen, DOM size.

For catalogs of 1,000, 10,000 and 100,000 synthetic LoRAs (one bound-parameter INSERT … SELECT; every 4th
row has one of 24 small PNG previews), a real JupyterLab is driven by Playwright with Debian's Chromium
(the recipe of docs/environment.md §4). Per size, in a fresh kernel:

- ``construct_ms``: ``Gallery(path)`` in the kernel (import excluded; counts, no rows yet), and
  ``bytes_widget_state``: what its comm_open sends (the ES module, CSS and traits);
- ``first_paint_ms``: from running the cell that displays the gallery to the first card painted with its
  row data (name, base model …), measured in the page with ``performance.now()`` and a MutationObserver;
- ``first_screen_ms``: until every visible card with a preview shows its thumbnail (cold thumbnail cache);
- ``bytes_first_paint`` / ``bytes_first_screen``: websocket bytes the browser received in those windows
  (the display message, row windows, WebP thumbnail buffers, kernel status messages);
  ``bytes_first_screen_total`` adds the widget state;
- ``warm_first_paint_ms``: the same display again (a second view; warm thumbnail cache);
- ``cards_max``: the most ``[data-testid=card]`` nodes in the DOM while scrolling to the middle and the end,
  and ``scroll_jump_ms``: how long each jump took until its cards were filled.

Prints one JSON line. Goals: first paint <= 1,000 ms at 100k rows; <= 500 card nodes.

Usage: python benchmarks/bench_gallery.py [--sizes 1000 10000 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import emit, environment, scratch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import _lab  # the browser tests' server helpers (tests/browser/_lab.py)

FIRST_PAINT_GOAL_MS = 1000
CARDS_GOAL = 500

OBSERVE_JS = """() => {
    const n0 = document.querySelectorAll('.lb-gallery').length;  // measure the view this run creates
    window.__bench = {t0: performance.now(), paint: null, screen: null};
    const done = () => {
        const b = window.__bench;
        const view = document.querySelectorAll('.lb-gallery')[n0];
        if (!view) return;
        const cards = view.querySelectorAll('[data-testid=card][data-loaded="1"]');
        if (b.paint === null && cards.length) b.paint = performance.now() - b.t0;
        const waiting = view.querySelectorAll('.lb-card.lb-waiting').length;
        if (b.paint !== null && b.screen === null && !waiting)
            b.screen = performance.now() - b.t0;
        if (b.screen !== null) { b.observer.disconnect(); }
    };
    window.__bench.observer = new MutationObserver(done);
    window.__bench.observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                                    attributeFilter: ['class', 'data-loaded']});
}"""
RUN_CELL_JS = """(i) => {
    const panel = window.jupyterapp.shell.currentWidget;
    panel.content.activeCellIndex = i;
    return window.jupyterapp.commands.execute('notebook:run-cell');
}"""


def measure(page, ws_bytes: list[tuple[float, int]], cell: int) -> dict[str, float]:
    """Run one display cell and time it; bytes are websocket frames received within each window."""
    page.evaluate(OBSERVE_JS)
    start = time.monotonic()
    page.evaluate(RUN_CELL_JS, cell)
    page.wait_for_function("() => window.__bench.screen !== null", timeout=120_000)
    bench = page.evaluate("() => ({paint: window.__bench.paint, screen: window.__bench.screen})")
    paint_at, screen_at = start + bench["paint"] / 1000, start + bench["screen"] / 1000
    return {
        "first_paint_ms": round(bench["paint"], 1),
        "first_screen_ms": round(bench["screen"], 1),
        "bytes_first_paint": sum(n for t, n in ws_bytes if start <= t <= paint_at),
        "bytes_first_screen": sum(n for t, n in ws_bytes if start <= t <= screen_at),
    }


def scroll_counts(page, total: int) -> tuple[list[int], list[float]]:
    """Card nodes in one view at the top, the middle and the end; ms until each jump's cards were loaded."""
    view = page.locator(".lb-gallery").first
    counts = [view.locator("[data-testid=card]").count()]
    times = []
    grid = view.locator("[data-testid=grid]")
    for target, index in (("v.scrollHeight / 2", total // 2 - 300), ("v.scrollHeight", total - 1)):
        started = time.perf_counter()
        grid.evaluate(f"(v) => {{ v.scrollTop = {target}; }}")
        page.wait_for_function(
            f"""() => [...document.querySelector('.lb-gallery').querySelectorAll('[data-loaded="1"]')]
                .some((c) => +c.dataset.index >= {index})""",
            timeout=60_000,
            polling="raf",
        )
        times.append(round((time.perf_counter() - started) * 1000, 1))
        counts.append(view.locator("[data-testid=card]").count())
    return counts, times


def run_size(chrome, server, base: Path, size: int) -> dict[str, object]:
    root = base / f"lib{size}"
    catalog_path = base / f"c{size}.duckdb"
    t0 = time.perf_counter()
    _lab.synthetic_catalog(catalog_path, size, root=root, previews=_lab.preview_images(root / "previews"), every=4)
    build_s = time.perf_counter() - t0
    thumbs = base / f"thumbs{size}"
    name = f"bench{size}.ipynb"
    _lab.write_notebook(server.root_dir / name, ["gallery", "gallery"])
    context = chrome.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    ws_bytes: list[tuple[float, int]] = []

    def on_ws(ws) -> None:
        ws.on("framereceived", lambda payload: ws_bytes.append((time.monotonic(), len(payload))))

    page.on("websocket", on_ws)
    try:
        _lab.open_notebook(page, server, name, run=False)
        _lab.execute(page, "from lorabench.widgets import Gallery, ThumbnailCache")
        t0, mark = time.perf_counter(), time.monotonic()
        _lab.execute(page, f"gallery = Gallery({str(catalog_path)!r}, thumbnails=ThumbnailCache({str(thumbs)!r}))")
        construct_ms = (time.perf_counter() - t0) * 1000
        page.wait_for_timeout(200)  # the widget's state (ES module, CSS, traits) travels with its comm_open
        bytes_construct = sum(n for t, n in ws_bytes if t >= mark)
        cold = measure(page, ws_bytes, 0)
        warm = measure(page, ws_bytes, 1)
        counts, jumps = scroll_counts(page, size)
    finally:
        context.close()
        server.shutdown_kernels()
    return {"rows": size, "build_s": round(build_s, 2), "construct_ms": round(construct_ms, 1),
            "bytes_widget_state": bytes_construct, **cold,
            "bytes_first_screen_total": bytes_construct + cold["bytes_first_screen"],
            "warm_first_paint_ms": warm["first_paint_ms"], "warm_bytes_first_screen": warm["bytes_first_screen"],
            "cards_after_scroll": counts, "cards_max": max(counts), "scroll_jump_ms": jumps}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--dir", default=None, help="work folder to keep (default: a temp folder, removed)")
    args = parser.parse_args()
    if _lab.chromium() is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    with scratch("lorabench-bench-gallery-", args.dir) as base:
        notebooks = base / "notebooks"
        notebooks.mkdir(exist_ok=True)
        server = _lab.start_lab(notebooks, base, _lab.jupyter_env(base))
        try:
            with _lab.browser() as chrome:
                results = [run_size(chrome, server, base, size) for size in args.sizes]
        finally:
            server.stop()
    by_size = {str(r["rows"]): r for r in results}
    largest = results[-1]
    emit({
        "bench": "gallery", **environment(), "browser": "chromium (headless) + JupyterLab",
        "sizes": by_size,
        "first_paint_ms_largest": largest["first_paint_ms"],
        "first_paint_goal_ms": FIRST_PAINT_GOAL_MS,
        "cards_max": max(r["cards_max"] for r in results), "cards_goal": CARDS_GOAL,
        "first_paint_median_ms": round(statistics.median(r["first_paint_ms"] for r in results), 1),
    })  # fmt: skip


if __name__ == "__main__":
    main()

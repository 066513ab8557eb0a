"""The gallery in a real Chromium, in a real JupyterLab and in Voila (docs/environment.md §4).

One JupyterLab server serves every notebook of this module; each test opens its notebook in a fresh
browser context and shuts the kernels down afterwards. Screenshots land in ``test-artifacts/``.
Set ``LORABENCH_UPDATE_SCREENSHOT=1`` to also refresh the README's ``docs/images/gallery.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from _lab import (
    ARTIFACTS,
    ROOT,
    XSS,
    browser,
    chromium,
    execute,
    jupyter_env,
    open_notebook,
    preview_images,
    start_lab,
    start_voila,
    synthetic_catalog,
    wait_for_file,
    write_notebook,
    xss_catalog,
)

from lorabench.catalog import Catalog
from lorabench.samples import build_library

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install chromium)"),
]

CARD = "[data-testid=card]"
LOADED = '[data-testid=card][data-loaded="1"]'
BIG = 10_000


def _gallery_cells(catalog: Path, out: Path | None = None, query: str = "") -> list[str]:
    cells = [f"from lorabench.widgets import Gallery\ngallery = Gallery({str(catalog)!r}, {query!r})"]
    if out is not None:
        cells.append(
            "import json, pathlib\n"
            f"OUT = pathlib.Path({str(out)!r})\n"
            "gallery.observe(lambda change: OUT.write_text(json.dumps(change['new'])), 'selected')"
        )
    cells.append("gallery")
    return cells


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    notebooks = base / "notebooks"
    notebooks.mkdir()
    ns = SimpleNamespace(base=base, notebooks=notebooks, env=jupyter_env(base))
    library = build_library(base / "library", seed=0)
    ns.sample = base / "sample.duckdb"
    with Catalog(ns.sample) as catalog:
        catalog.import_library([library.root], progress=False, hashes=False)
        ns.order = catalog.search("sort:name", columns=["id"]).ids
    big_root = base / "big"
    ns.big = base / "big.duckdb"
    synthetic_catalog(ns.big, BIG, root=big_root, previews=preview_images(big_root / "previews", 12), every=4).close()
    ns.xss = base / "xss.duckdb"
    catalog, ns.xss_ids = xss_catalog(ns.xss, base / "xss-library")
    catalog.close()
    ns.selected_file = base / "selected.json"
    ns.voila_file = base / "voila-selected.json"
    shutil.copyfile(ROOT / "notebooks" / "dashboard.ipynb", notebooks / "dashboard.ipynb")
    write_notebook(notebooks / "select.ipynb", _gallery_cells(ns.sample, ns.selected_file))
    write_notebook(notebooks / "edit.ipynb", _gallery_cells(ns.sample))
    write_notebook(notebooks / "big.ipynb", _gallery_cells(ns.big))
    write_notebook(notebooks / "xss.ipynb", _gallery_cells(ns.xss))
    write_notebook(base / "voila" / "voila.ipynb", _gallery_cells(ns.sample, ns.voila_file))
    ARTIFACTS.mkdir(exist_ok=True)
    return ns


@pytest.fixture(scope="module")
def lab(setup):
    server = start_lab(setup.notebooks, setup.base, setup.env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chrome():
    with browser() as b:
        yield b


@pytest.fixture
def lab_page(lab, chrome, request):
    context = chrome.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"))
    context.close()
    lab.shutdown_kernels()


def _count(page) -> str:
    return page.locator("[data-testid=count]").inner_text()


def _names(page, n: int) -> list[str]:
    return page.evaluate(
        """(n) => [...document.querySelectorAll('[data-testid=card][data-loaded="1"]')]
            .sort((a, b) => a.dataset.index - b.dataset.index).slice(0, n)
            .map((c) => c.querySelector('.lb-name').textContent)""",
        n,
    )


def _selected_in_dom(page) -> set[int]:
    return set(page.evaluate("() => [...document.querySelectorAll('.lb-card.lb-selected')].map(c => +c.dataset.id)"))


def _card(page, index: int):
    return page.locator(f'[data-testid=card][data-index="{index}"][data-loaded="1"]')


# -- the dashboard -------------------------------------------------------------------------------------------


def test_dashboard_search_filter_sort(lab_page, lab, setup):
    page = lab_page
    open_notebook(page, lab, "dashboard.ipynb")
    page.wait_for_selector(LOADED, timeout=90_000)
    catalog = Catalog(Path(setup.env["LORABENCH_HOME"]) / "samples" / "catalog.duckdb")
    total = catalog.count()
    page.wait_for_function(
        "(t) => document.querySelector('[data-testid=count]').textContent.startsWith(t)", arg=f"{total} LoRAs"
    )
    assert page.locator(".lb-stats").count() == 1
    assert _names(page, 3) == [r["name"] for r in catalog.search("sort:name", limit=3, columns=["id", "name"])]

    page.fill("[data-testid=search]", "base:sdxl")
    page.press("[data-testid=search]", "Enter")
    sdxl = catalog.count("base:sdxl")
    page.wait_for_function(
        "(t) => document.querySelector('[data-testid=count]').textContent.startsWith(t)", arg=f"{sdxl} LoRAs"
    )
    page.wait_for_function(f"() => document.querySelectorAll('{LOADED}').length === {sdxl}")
    assert 0 < sdxl < total

    page.click("[data-testid=facet-algorithm] summary")
    page.click('[data-testid=facet-algorithm] [data-testid=facet-option][data-value="lora"] input')
    narrowed = catalog.count('base:sdxl algo:"lora"')
    page.wait_for_function(f"() => document.querySelectorAll('{LOADED}').length === {narrowed}")
    assert 0 < narrowed < sdxl
    assert page.locator("[data-testid=filter-chip]").inner_text().startswith("Algorithm: lora")

    by_name = _names(page, narrowed)
    page.select_option("[data-testid=sort]", "-size")
    expected = [r["name"] for r in catalog.search('base:sdxl algo:"lora" sort:-size', columns=["id", "name"])]
    page.wait_for_function(
        "(first) => { const c = document.querySelector('[data-testid=card][data-index=\"0\"]');"
        " return c && c.querySelector('.lb-name').textContent === first; }",
        arg=expected[0],
    )
    assert _names(page, narrowed) == expected != by_name

    page.fill("[data-testid=search]", "base:sdxl rating:>>4")
    page.press("[data-testid=search]", "Enter")
    error = page.locator("[data-testid=query-error]")
    error.wait_for(state="visible")
    assert "rating" in error.inner_text()
    assert page.locator(LOADED).count() == narrowed  # the last valid result stays, marked stale
    page.screenshot(path=str(ARTIFACTS / "dashboard-query-error.png"))

    page.fill("[data-testid=search]", "")
    page.press("[data-testid=search]", "Enter")
    page.click("[data-testid=filter-chip]")
    page.select_option("[data-testid=sort]", "name")
    page.wait_for_function(
        "(t) => document.querySelector('[data-testid=count]').textContent.startsWith(t)", arg=f"{total} LoRAs"
    )
    target = catalog.search("has:preview has:triggers has:tags sort:name", limit=1, columns=["id", "name"])[0]
    card = page.locator(f'[data-testid=card][data-id="{target["id"]}"]')
    card.click()
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=detail-name]').textContent === n", arg=target["name"]
    )
    page.wait_for_selector(".lb-detail-preview.lb-has-img")
    page.wait_for_function("() => document.querySelectorAll('.lb-card.lb-waiting').length === 0")
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.set_viewport_size({"width": 1500, "height": 1100})
    page.wait_for_timeout(300)
    assert page.locator(".lb-facet[open]").count() == 0
    gallery = page.locator(".jp-OutputArea-output:has(.lb-gallery)")
    gallery.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    gallery.screenshot(path=str(ARTIFACTS / "gallery.png"))
    if os.environ.get("LORABENCH_UPDATE_SCREENSHOT"):
        from PIL import Image

        with Image.open(ARTIFACTS / "gallery.png") as image:
            image.convert("RGB").save(ROOT / "docs" / "images" / "gallery.png", optimize=True)
    assert not page.errors


# -- scale ---------------------------------------------------------------------------------------------------


def test_scrolling_a_10k_catalog_keeps_the_dom_bounded(lab_page, lab):
    page = lab_page
    open_notebook(page, lab, "big.ipynb")
    page.wait_for_selector(LOADED, timeout=60_000)
    page.wait_for_function(
        "(t) => document.querySelector('[data-testid=count]').textContent.startsWith(t)", arg=f"{BIG:,} LoRAs"
    )
    counts = [page.locator(CARD).count()]
    page.hover("[data-testid=grid]")
    for _ in range(5):  # smooth wheel scrolling
        page.mouse.wheel(0, 700)
        page.wait_for_timeout(60)
    counts.append(page.locator(CARD).count())
    for where, index in (("/ 2", BIG // 2 - 200), ("", BIG - 1)):
        page.evaluate(
            f"() => {{ const v = document.querySelector('[data-testid=grid]'); v.scrollTop = v.scrollHeight {where}; }}"
        )
        page.wait_for_function(
            f"""() => [...document.querySelectorAll('{LOADED}')].some((c) => +c.dataset.index >= {index})"""
        )
        counts.append(page.locator(CARD).count())
    assert _card(page, BIG - 1).count() == 1
    page.wait_for_function("() => document.querySelectorAll('.lb-card.lb-has-img').length > 0")
    page.screenshot(path=str(ARTIFACTS / "gallery-10k-end.png"))
    assert max(counts) <= 60, counts  # one viewport of cards plus overscan, whatever the catalog size
    assert min(counts) > 0
    assert not page.errors


# -- selection and curation ----------------------------------------------------------------------------------


def test_selection_round_trips_between_browser_and_python(lab_page, lab, setup):
    page, order, out = lab_page, setup.order, setup.selected_file
    out.unlink(missing_ok=True)
    open_notebook(page, lab, "select.ipynb")
    page.wait_for_selector(LOADED)
    _card(page, 1).click()
    assert wait_for_file(out, lambda v: v == order[1:2]) == order[1:2]
    _card(page, 4).click(modifiers=["Shift"])
    wait_for_file(out, lambda v: v == order[1:5])
    _card(page, 6).click(modifiers=["Control"])
    wait_for_file(out, lambda v: v == [*order[1:5], order[6]])
    _card(page, 2).click(modifiers=["Control"])
    expected = [order[1], *order[3:5], order[6]]
    wait_for_file(out, lambda v: v == expected)
    page.wait_for_function("(n) => document.querySelectorAll('.lb-card.lb-selected').length === n", arg=len(expected))
    assert _selected_in_dom(page) == set(expected)

    execute(page, f"gallery.selected = {[order[0], order[3]]!r}")
    page.wait_for_function("() => document.querySelectorAll('.lb-card.lb-selected').length === 2")
    assert _selected_in_dom(page) == {order[0], order[3]}
    assert "2 selected" in _count(page)

    # keyboard: arrows move, Space selects, Enter opens the detail; the notebook's shortcuts stay out
    active = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex")
    _card(page, 0).click()
    wait_for_file(out, lambda v: v == order[:1])
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    wait_for_file(out, lambda v: v == order[:2])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    cols = page.evaluate(
        "() => { const c = [...document.querySelectorAll('[data-testid=card]')];"
        " const y = c[0].getBoundingClientRect().top;"
        " return c.filter((x) => x.getBoundingClientRect().top === y).length; }"
    )
    name = Catalog(setup.sample).get(order[cols])["name"]
    page.wait_for_function("(n) => document.querySelector('[data-testid=detail-name]').textContent === n", arg=name)
    notebook = page.evaluate(
        "() => { const n = window.jupyterapp.shell.currentWidget.content; return [n.activeCellIndex, n.mode]; }"
    )
    assert notebook == [active, "command"]  # Enter and the arrows never reached the notebook

    page.click("[data-testid=select-all]")
    wait_for_file(out, lambda v: sorted(v) == sorted(order))
    page.click("[data-testid=clear-selection]")
    wait_for_file(out, lambda v: v == [])
    assert not page.errors


def test_detail_edits_reach_the_catalog(lab_page, lab, setup):
    page = lab_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_notebook(page, lab, "edit.ipynb")
    page.wait_for_selector(LOADED)
    target = Catalog(setup.sample).search("has:triggers sort:name", limit=1, columns=["id", "name"])[0]
    page.locator(f'[data-testid=card][data-id="{target["id"]}"]').click()
    page.wait_for_function(
        "(n) => document.querySelector('[data-testid=detail-name]').textContent === n", arg=target["name"]
    )
    status = page.locator("[data-testid=save-status]")

    page.click("[data-testid=rating-4]")
    page.wait_for_function("() => document.querySelector('[data-testid=save-status]').textContent === 'Saved'")
    page.fill("[data-testid=detail-notes]", "Tested in Chromium <b>not bold</b>")
    page.keyboard.press("Tab")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=detail-notes]').value.includes('Chromium')"
        " && document.querySelector('[data-testid=save-status]').textContent === 'Saved'"
    )
    page.click("[data-testid=detail-favorite]")
    page.wait_for_function("() => document.querySelector('[data-testid=detail-favorite]').textContent.startsWith('★')")
    page.fill("[data-testid=detail-tags]", "keeper, Ink")
    page.keyboard.press("Tab")
    page.fill("[data-testid=detail-weight]", "0.65")
    page.keyboard.press("Tab")
    page.wait_for_function("() => document.querySelector('[data-testid=detail-tags]').value === 'keeper, ink'")

    deadline = time.monotonic() + 15
    while True:
        record = Catalog(setup.sample).get(target["id"])
        done = record["preferred_weight"] == 0.65 and record["user_tags"] == ["keeper", "ink"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert record["rating"] == 4
    assert record["notes"] == "Tested in Chromium <b>not bold</b>"
    assert record["favorite"] is True
    assert record["user_tags"] == ["keeper", "ink"]
    assert record["preferred_weight"] == 0.65
    card = page.locator(f'[data-testid=card][data-id="{target["id"]}"]')
    assert card.locator(".lb-stars").inner_text() == "★★★★"
    assert "lb-fav" in card.get_attribute("class")

    word = record["trigger_words"][0]
    page.locator("[data-testid=detail-triggers] button", has_text=word).first.click()
    page.wait_for_function(
        "(w) => document.querySelector('[data-testid=save-status]').textContent.includes(w)", arg=word
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == word
    page.click("[data-testid=rating-4]")  # clicking the current rating clears it
    page.wait_for_function("() => !document.querySelector('.lb-rating').classList.contains('lb-rated')")
    assert status.inner_text() in ("Saving…", "Saved")
    assert not page.errors


# -- hostile catalog -----------------------------------------------------------------------------------------


def test_xss_payloads_stay_inert(lab_page, lab, setup):
    page = lab_page
    dialogs, requests = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    open_notebook(page, lab, "xss.ipynb")
    page.wait_for_function(f"() => document.querySelectorAll('{LOADED}').length === {len(XSS)}")
    texts = page.evaluate("() => [...document.querySelectorAll('.lb-card .lb-name')].map((n) => n.textContent)")
    assert sorted(texts) == sorted(XSS.values())  # shown as text, character for character

    for index in range(len(XSS)):
        _card(page, index).click()
        page.wait_for_function(
            "(i) => document.querySelector('[data-testid=detail-name]').textContent"
            ' === document.querySelector(`[data-testid=card][data-index="${i}"] .lb-name`)'
            ".textContent",
            arg=index,
        )
        page.locator("[data-testid=detail-triggers] button").first.click()  # copy a payload trigger word
    linker = page.locator(".lb-card .lb-name", has_text="data-commandlinker-command")
    linker.click()
    linker.dblclick()
    tag = page.locator(".lb-cloud-tag").first
    tag.click()  # a payload becomes a facet filter: quoted, never an error
    page.wait_for_selector("[data-testid=filter-chip]")
    assert page.locator("[data-testid=query-error]").is_hidden()
    page.click("[data-testid=filter-chip]")
    page.wait_for_timeout(800)  # let anything that would fire, fire

    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    assert lab.api("/api/terminals") == []
    outside = [u for u in requests if not u.startswith((lab.url, "blob:", "data:"))]
    assert outside == []
    dangerous = page.evaluate("""() => {
        const root = document.querySelector('.lb-gallery');
        const bad = root.querySelectorAll('script, iframe, svg, object, embed, form, a[href], [onerror], [onload],'
            + ' [srcdoc], [data-commandlinker-command], [id], [name], [style*="fixed"]');
        const imgs = [...root.querySelectorAll('img[src]')].filter((i) => !i.src.startsWith('blob:'));
        return [...bad, ...imgs].map((n) => n.outerHTML.slice(0, 120));
    }""")
    assert dangerous == []
    assert page.evaluate("() => document.getElementById('MathJax') === null")
    description = page.locator("[data-testid=detail-description]").inner_text()
    assert "window.__pwned" not in description or "<" in description  # text, never markup
    page.screenshot(path=str(ARTIFACTS / "gallery-xss.png"))
    assert not page.errors


# -- Notebook 7 ---------------------------------------------------------------------------------------------


def test_notebook7_renders_and_keeps_keys_in_the_grid(chrome, setup):
    pytest.importorskip("notebook", minversion="7", reason="Notebook 7 is not installed")
    out = setup.selected_file
    out.unlink(missing_ok=True)
    server = start_lab(setup.notebooks, setup.base, setup.env, app="notebook")
    context = chrome.new_context(viewport={"width": 1300, "height": 950})
    try:
        page = context.new_page()
        open_notebook(page, server, "select.ipynb")
        page.wait_for_selector(LOADED, timeout=60_000)
        _card(page, 1).click()
        wait_for_file(out, lambda v: v == setup.order[1:2])
        page.keyboard.press("ArrowRight")  # Notebook 7 binds arrows in command mode; inside the grid they are ours
        page.keyboard.press("Space")
        wait_for_file(out, lambda v: v == setup.order[1:3])
        page.screenshot(path=str(ARTIFACTS / "notebook7.png"))
    finally:
        context.close()
        server.shutdown_kernels()
        server.stop()


# -- Voila ---------------------------------------------------------------------------------------------------


def test_voila_renders_and_round_trips(chrome, setup):
    pytest.importorskip("voila", reason="Voila is not installed")
    out = setup.voila_file
    out.unlink(missing_ok=True)
    server = start_voila(setup.base / "voila" / "voila.ipynb", setup.base, setup.env)
    context = chrome.new_context(viewport={"width": 1300, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + "/", wait_until="domcontentloaded", timeout=90_000)
        page.wait_for_selector(LOADED, timeout=90_000)
        _card(page, 2).click()
        wait_for_file(out, lambda v: v == setup.order[2:3])
        _card(page, 5).click(modifiers=["Shift"])
        wait_for_file(out, lambda v: v == setup.order[2:6])
        name = Catalog(setup.sample).get(setup.order[2])["name"]
        page.wait_for_function("(n) => document.querySelector('[data-testid=detail-name]').textContent === n", arg=name)
        page.screenshot(path=str(ARTIFACTS / "voila.png"))
    finally:
        context.close()
        server.stop()
    json.loads(out.read_text())

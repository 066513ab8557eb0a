/**
 * lorabench gallery: a virtualized grid of LoRA cards with search, facet filters, sorting,
 * selection and a detail panel. A self-contained ES module for anywidget (it is loaded from a
 * Blob URL, so it imports nothing and loads nothing from the network).
 *
 * Safety rules (security-reliability.md §1): every string from the catalog is written with
 * textContent; attributes only through attr() and its allow-list; images only from blob: URLs
 * this module created from message buffers; no HTML parsing of any kind.
 *
 * Python holds the truth. The view asks for row windows ({type: "rows", start, count, uuid}),
 * thumbnails ({type: "thumbs", ids, size, uuid}), facet counts, range selections and curation
 * updates; every request gets one reply carrying the same uuid.
 */

const GAP = 12;
const PAD = 12;
const CARD_MIN = 172;
const INFO_H = 54;
const OVERSCAN_ROWS = 1;
const PAGE = 120;
const MAX_PAGES = 40;
const MAX_BLOBS = 600;
const THUMB_BATCH = 24;
const THUMB_IN_FLIGHT = 2;
const MAX_PX = 8000000;
const TIMEOUT_MS = 60000;
const SEARCH_DELAY_MS = 300;

const ATTRS = new Set([
  "data-testid", "data-id", "data-index", "data-value", "data-field", "data-base", "role", "tabindex",
  "aria-selected", "aria-label", "aria-pressed", "aria-live", "title", "type", "placeholder", "min", "max",
  "step", "rows", "spellcheck", "autocomplete", "inputmode", "data-loaded", "data-lm-suppress-shortcuts",
]);

const FOCUSABLE = new Set(["button", "input", "select", "textarea", "summary"]);

/** Create an element with an optional class and text (always textContent). */
function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  // Keys pressed on our controls are ours: Lumino matches shortcut selectors such as
  // ".jp-Notebook.jp-mod-commandMode :focus" against the focused element itself, and skips
  // elements carrying this attribute (JupyterLab and Notebook 7 command-mode shortcuts).
  if (FOCUSABLE.has(tag)) attr(node, "data-lm-suppress-shortcuts", "true");
  return node;
}

/** Set an allow-listed attribute (values are inert strings). */
function attr(node, name, value) {
  if (!ATTRS.has(name)) throw new Error(`lorabench: attribute ${name} is not allowed`);
  node.setAttribute(name, String(value));
}

/** Point an image at one of our own blob: URLs, and nothing else. */
function setBlobSrc(img, url) {
  if (typeof url === "string" && url.startsWith("blob:")) {
    if (img.getAttribute("src") !== url) img.src = url;
  } else if (img.hasAttribute("src")) {
    img.removeAttribute("src");
  }
}

function clamp(v, lo, hi) {
  return Math.max(lo, Math.min(hi, v));
}

function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

function formatSize(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function copyText(text, root) {
  const fallback = () => {
    const area = h("textarea", "lb-copy-area");
    area.value = text;
    root.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (_err) {
      ok = false;
    }
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  };
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text).catch(fallback);
  }
  return fallback();
}

function render({ model, el }) {
  const root = el;
  root.classList.add("lb-gallery");
  const viewId = Math.random().toString(36).slice(2, 10);
  const cleanups = [];
  let disposed = false;

  // -- requests -------------------------------------------------------------------------------
  let seq = 0;
  const pending = new Map();
  function request(type, payload) {
    const uuid = `${viewId}-${(seq += 1)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(uuid);
        reject(new Error(`${type} request timed out`));
      }, TIMEOUT_MS);
      pending.set(uuid, { resolve, reject, timer });
      model.send({ ...payload, type, uuid });
    });
  }
  function onCustom(msg, buffers) {
    if (disposed || !msg || typeof msg !== "object") return;
    if (msg.type === "patch" && Array.isArray(msg.row)) {
      patchRow(toRow(msg.row));
      return;
    }
    const entry = pending.get(msg.uuid);
    if (!entry) return;
    pending.delete(msg.uuid);
    clearTimeout(entry.timer);
    if (msg.error) entry.reject(new Error(String(msg.error)));
    else entry.resolve({ msg, buffers: buffers || [] });
  }
  model.on("msg:custom", onCustom);
  cleanups.push(() => model.off("msg:custom", onCustom));

  // -- state ------------------------------------------------------------------------------------
  const fields = model.get("_row_fields") || [];
  let generation = model.get("_generation");
  let total = model.get("total") || 0;
  let rows = new Map();
  let pages = new Map();
  let pagesPending = new Set();
  let tick = 0;
  let selSet = new Set(model.get("selected") || []);
  let focusedId = model.get("focused");
  let cursor = -1;
  let anchor = null;
  let lastFacets = {};

  function toRow(arr) {
    const row = {};
    fields.forEach((name, i) => {
      row[name] = arr[i];
    });
    return row;
  }

  // -- layout: toolbar, grid, detail -----------------------------------------------------------
  const toolbar = h("div", "lb-toolbar");
  const search = h("input", "lb-search");
  attr(search, "type", "search");
  attr(search, "data-testid", "search");
  attr(search, "placeholder", "Search: words, base:sdxl, tag:1girl, rating:>=4, -is:nsfw, sort:-added …");
  attr(search, "aria-label", "Search LoRAs");
  attr(search, "spellcheck", "false");
  attr(search, "autocomplete", "off");
  search.value = model.get("query") || "";
  const sortSelect = h("select", "lb-sort");
  attr(sortSelect, "data-testid", "sort");
  attr(sortSelect, "aria-label", "Sort by");
  for (const [value, label] of model.get("sort_options") || []) {
    const option = h("option", null, label);
    option.value = value;
    sortSelect.append(option);
  }
  sortSelect.value = model.get("sort");
  const blurLabel = h("label", "lb-toggle");
  const blurBox = h("input");
  attr(blurBox, "type", "checkbox");
  attr(blurBox, "data-testid", "nsfw-blur");
  blurLabel.append(blurBox, h("span", null, "Blur NSFW"));
  const selectAll = h("button", "lb-button", "Select all");
  attr(selectAll, "data-testid", "select-all");
  attr(selectAll, "type", "button");
  const clearSel = h("button", "lb-button", "Clear");
  attr(clearSel, "data-testid", "clear-selection");
  attr(clearSel, "type", "button");
  const count = h("span", "lb-count");
  attr(count, "data-testid", "count");
  attr(count, "aria-live", "polite");
  const row1 = h("div", "lb-toolbar-row");
  row1.append(search, sortSelect);
  const facetBar = h("div", "lb-facets");
  const chips = h("div", "lb-chips");
  const row2 = h("div", "lb-toolbar-row");
  const spacer = h("span", "lb-flex");
  row2.append(facetBar, chips, spacer, count, blurLabel, selectAll, clearSel);
  const errorBox = h("div", "lb-error");
  attr(errorBox, "data-testid", "query-error");
  attr(errorBox, "role", "alert");
  toolbar.append(row1, errorBox, row2);

  const body = h("div", "lb-body");
  const viewport = h("div", "lb-viewport");
  attr(viewport, "data-testid", "grid");
  attr(viewport, "tabindex", "0");
  attr(viewport, "data-lm-suppress-shortcuts", "true"); // arrows, Enter, Space, A … are the grid's
  attr(viewport, "role", "listbox");
  attr(viewport, "aria-label", "LoRAs");
  const canvas = h("div", "lb-canvas");
  const notice = h("div", "lb-notice");
  attr(notice, "data-testid", "grid-notice");
  viewport.append(canvas);
  const gridWrap = h("div", "lb-grid-wrap");
  gridWrap.append(viewport, notice);
  const panel = h("aside", "lb-detail");
  attr(panel, "data-testid", "detail");
  body.append(gridWrap, panel);
  root.append(toolbar, body);

  // -- blobs (thumbnails) ------------------------------------------------------------------------
  const blobs = new Map(); // key -> object URL (Map order = least recently used first)
  const keyOf = new Map(); // id -> card thumbnail key
  const thumbPending = new Set();
  const thumbNone = new Set();
  let thumbsInFlight = 0;
  let thumbTimer = 0;
  let inUse = new Set();
  let detailKey = null;

  function blobFor(key) {
    const url = blobs.get(key);
    if (url) {
      blobs.delete(key);
      blobs.set(key, url);
    }
    return url || null;
  }
  function storeBlob(key, buffer, mime) {
    if (blobs.has(key) || !buffer) return;
    const bytes = ArrayBuffer.isView(buffer)
      ? new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
      : new Uint8Array(buffer);
    const type = mime === "image/webp" ? "image/webp" : "application/octet-stream";
    blobs.set(key, URL.createObjectURL(new Blob([bytes], { type })));
    if (blobs.size > MAX_BLOBS) {
      for (const [k, url] of blobs) {
        if (blobs.size <= MAX_BLOBS) break;
        if (inUse.has(k) || k === detailKey) continue;
        URL.revokeObjectURL(url);
        blobs.delete(k);
      }
    }
  }
  function urlForRow(row) {
    const key = row.thumb || keyOf.get(row.id);
    return key ? blobFor(key) : null;
  }
  cleanups.push(() => {
    for (const url of blobs.values()) URL.revokeObjectURL(url);
    blobs.clear();
  });

  // -- grid geometry -----------------------------------------------------------------------------
  let cols = 1;
  let cardW = CARD_MIN;
  let thumbH = CARD_MIN;
  let rowH = CARD_MIN + INFO_H + GAP;
  let fullH = 0;
  let canvasH = 0;
  let visible = [0, 0];

  function layout() {
    const width = Math.max(CARD_MIN, viewport.clientWidth - 2 * PAD);
    cols = Math.max(1, Math.floor((width + GAP) / (CARD_MIN + GAP)));
    cardW = Math.floor((width - GAP * (cols - 1)) / cols);
    thumbH = Math.round(cardW * 1.2);
    rowH = thumbH + INFO_H + GAP;
    fullH = 2 * PAD + Math.ceil(total / cols) * rowH - (total > 0 ? GAP : 0);
    canvasH = Math.min(fullH, MAX_PX);
    canvas.style.height = `${canvasH}px`;
  }
  function virtualTop() {
    const st = viewport.scrollTop;
    if (fullH <= MAX_PX) return st;
    const room = canvasH - viewport.clientHeight;
    return room > 0 ? (st / room) * (fullH - viewport.clientHeight) : 0;
  }
  function scrollToVirtual(vt) {
    if (fullH <= MAX_PX) {
      viewport.scrollTop = vt;
      return;
    }
    const room = fullH - viewport.clientHeight;
    viewport.scrollTop = room > 0 ? (vt / room) * (canvasH - viewport.clientHeight) : 0;
  }

  // -- cards ---------------------------------------------------------------------------------------
  const live = new Map(); // index -> card
  const spare = [];
  const parts = new WeakMap();
  const signature = new WeakMap();

  function makeCard() {
    const card = h("div", "lb-card");
    attr(card, "data-testid", "card");
    attr(card, "role", "option");
    const thumb = h("div", "lb-thumb");
    const img = h("img", "lb-img");
    img.decoding = "async";
    img.draggable = false;
    img.alt = "";
    const ph = h("div", "lb-placeholder");
    const phBase = h("div", "lb-ph-base");
    const phName = h("div", "lb-ph-name");
    ph.append(phBase, phName);
    const fav = h("span", "lb-badge lb-badge-fav", "★");
    const nsfw = h("span", "lb-badge lb-badge-nsfw", "NSFW");
    const check = h("span", "lb-check", "✓");
    thumb.append(img, ph, fav, nsfw, check);
    const info = h("div", "lb-info");
    const name = h("div", "lb-name");
    const meta = h("div", "lb-meta");
    const base = h("span", "lb-chip lb-chip-base");
    const algo = h("span", "lb-chip");
    const stars = h("span", "lb-stars");
    meta.append(base, algo, stars);
    info.append(name, meta);
    card.append(thumb, info);
    parts.set(card, { img, ph, phBase, phName, name, base, algo, stars });
    return card;
  }

  function fill(card, index, row) {
    const p = parts.get(card);
    const url = row ? urlForRow(row) : null;
    const sig = row
      ? [row.id, row.name, row.title, row.base, row.algo, row.rating, row.favorite, row.nsfw, row.preview, url].join("\u0000")
      : "";
    if (signature.get(card) !== sig) {
      signature.set(card, sig);
      if (!row) {
        p.name.textContent = "";
        p.base.textContent = "";
        p.algo.textContent = "";
        p.stars.textContent = "";
        p.phBase.textContent = "";
        p.phName.textContent = "";
        setBlobSrc(p.img, null);
        attr(card, "data-id", "");
      } else {
        attr(card, "data-id", row.id);
        const label = row.title && row.title !== row.name ? `${row.title} (${row.name})` : row.name;
        attr(card, "title", label);
        p.name.textContent = row.name;
        p.base.textContent = row.base || "unknown";
        attr(p.base, "data-base", (row.base || "unknown").toLowerCase());
        p.algo.textContent = row.algo || (row.status !== "ok" ? row.status : "");
        p.stars.textContent = "★".repeat(clamp(Number(row.rating) || 0, 0, 5));
        p.phBase.textContent = (row.base || (row.status !== "ok" ? row.status : "unknown")).toUpperCase();
        p.phName.textContent = row.name;
        attr(p.ph, "data-base", (row.base || "unknown").toLowerCase());
        setBlobSrc(p.img, url);
        p.img.alt = row.name;
      }
      card.classList.toggle("lb-loading", !row);
      card.classList.toggle("lb-has-img", Boolean(url));
      card.classList.toggle("lb-waiting", Boolean(row && row.preview && !url));
      card.classList.toggle("lb-fav", Boolean(row && row.favorite));
      card.classList.toggle("lb-nsfw", Boolean(row && row.nsfw));
      attr(card, "data-loaded", row ? "1" : "0");
    }
    attr(card, "data-index", index);
    const selected = Boolean(row && selSet.has(row.id));
    card.classList.toggle("lb-selected", selected);
    attr(card, "aria-selected", selected ? "true" : "false");
    card.classList.toggle("lb-cursor", index === cursor);
    card.classList.toggle("lb-focused", Boolean(row && row.id === focusedId));
  }

  let frame = 0;
  function schedulePaint() {
    if (!frame && !disposed) frame = requestAnimationFrame(paint);
  }
  cleanups.push(() => cancelAnimationFrame(frame));

  function paint() {
    frame = 0;
    if (disposed) return;
    const vt = virtualTop();
    const shift = viewport.scrollTop - vt;
    const viewH = viewport.clientHeight;
    const nRows = Math.ceil(total / cols);
    const firstRow = Math.max(0, Math.floor((vt - PAD) / rowH) - OVERSCAN_ROWS);
    const lastRow = Math.min(nRows - 1, Math.floor((vt + viewH - PAD) / rowH) + OVERSCAN_ROWS);
    const a = firstRow * cols;
    const b = total > 0 ? Math.min(total, (lastRow + 1) * cols) : 0;
    visible = [a, b];
    for (const [i, card] of live) {
      if (i < a || i >= b) {
        card.remove();
        live.delete(i);
        if (spare.length < 2 * cols) spare.push(card);
      }
    }
    const used = new Set();
    for (let i = a; i < b; i += 1) {
      let card = live.get(i);
      if (!card) {
        card = spare.pop() || makeCard();
        live.set(i, card);
        canvas.append(card);
      }
      const x = PAD + (i % cols) * (cardW + GAP);
      const y = PAD + Math.floor(i / cols) * rowH + shift;
      card.style.transform = `translate(${x}px, ${y}px)`;
      card.style.width = `${cardW}px`;
      card.style.height = `${thumbH + INFO_H}px`;
      const row = rows.get(i);
      if (row) {
        const key = row.thumb || keyOf.get(row.id);
        if (key) used.add(key);
      }
      fill(card, i, row);
    }
    inUse = used;
    requestPages(a, b);
    scheduleThumbs();
    updateNotice();
  }

  // -- rows ---------------------------------------------------------------------------------------
  function requestPages(a, b) {
    if (b <= a) return;
    for (let p = Math.floor(a / PAGE); p <= Math.floor((b - 1) / PAGE); p += 1) {
      if (pages.has(p)) {
        pages.set(p, (tick += 1));
        continue;
      }
      if (pagesPending.has(p)) continue;
      const start = p * PAGE;
      if (start >= total) continue;
      const pend = pagesPending;
      const gen = generation;
      pend.add(p);
      request("rows", { start, count: Math.min(PAGE, total - start) })
        .then(({ msg }) => {
          pend.delete(p);
          if (disposed || msg.generation !== generation || gen !== generation) return;
          msg.rows.forEach((arr, k) => rows.set(msg.start + k, toRow(arr)));
          pages.set(p, (tick += 1));
          evictPages();
          schedulePaint();
        })
        .catch((err) => {
          pend.delete(p);
          showProblem(`Could not load LoRAs: ${err.message}`);
        });
    }
  }
  function evictPages() {
    if (pages.size <= MAX_PAGES) return;
    const keep = new Set();
    for (let p = Math.floor(visible[0] / PAGE); p <= Math.floor(Math.max(visible[0], visible[1] - 1) / PAGE); p += 1) {
      keep.add(p);
    }
    const order = [...pages.entries()].sort((x, y) => x[1] - y[1]);
    for (const [p] of order) {
      if (pages.size <= MAX_PAGES) break;
      if (keep.has(p)) continue;
      pages.delete(p);
      for (let i = p * PAGE; i < (p + 1) * PAGE; i += 1) rows.delete(i);
    }
  }
  function patchRow(row) {
    for (const [i, old] of rows) {
      if (old.id === row.id) rows.set(i, row);
    }
    schedulePaint();
  }

  // -- thumbnails ---------------------------------------------------------------------------------
  function scheduleThumbs() {
    if (!thumbTimer && !disposed) thumbTimer = setTimeout(flushThumbs, 40);
  }
  cleanups.push(() => clearTimeout(thumbTimer));
  function flushThumbs() {
    thumbTimer = 0;
    if (disposed || thumbsInFlight >= THUMB_IN_FLIGHT) return;
    const want = [];
    for (let i = visible[0]; i < visible[1] && want.length < THUMB_BATCH; i += 1) {
      const row = rows.get(i);
      if (!row || !row.preview || thumbPending.has(row.id) || thumbNone.has(row.id)) continue;
      if (urlForRow(row)) continue;
      want.push(row.id);
    }
    if (!want.length) return;
    want.forEach((id) => thumbPending.add(id));
    thumbsInFlight += 1;
    request("thumbs", { ids: want, size: "card" })
      .then(({ msg, buffers }) => {
        let again = false;
        for (const item of msg.items || []) {
          thumbPending.delete(item.id);
          if (item.key && typeof item.buffer === "number") {
            storeBlob(item.key, buffers[item.buffer], item.mime);
            keyOf.set(item.id, item.key);
          } else if (item.later) {
            again = true;
          } else {
            thumbNone.add(item.id);
          }
        }
        if (again) scheduleThumbs();
      })
      .catch(() => want.forEach((id) => thumbNone.add(id)))
      .finally(() => {
        want.forEach((id) => thumbPending.delete(id));
        thumbsInFlight -= 1;
        schedulePaint();
      });
    if (want.length === THUMB_BATCH) scheduleThumbs();
  }

  // -- notices, count, errors ------------------------------------------------------------------------
  let problem = "";
  function showProblem(text) {
    problem = text;
    updateNotice();
  }
  function updateNotice() {
    const error = model.get("error");
    let text = "";
    if (problem) text = problem;
    else if (error) text = "The search has an error (see above): showing the last valid search.";
    else if (total === 0) text = "No LoRAs match this search.";
    notice.textContent = text;
    notice.classList.toggle("lb-show", Boolean(text));
    gridWrap.classList.toggle("lb-stale", Boolean(error));
  }
  function updateCount() {
    const n = selSet.size;
    count.textContent = plural(total, "LoRA") + (n ? ` · ${n.toLocaleString()} selected` : "");
  }
  function updateError() {
    const error = model.get("error");
    const pos = model.get("error_position");
    errorBox.replaceChildren();
    errorBox.classList.toggle("lb-show", Boolean(error));
    search.classList.toggle("lb-invalid", Boolean(error));
    if (!error) return;
    errorBox.append(h("div", "lb-error-message", error));
    const query = search.value;
    if (typeof pos === "number" && pos >= 0 && pos <= query.length) {
      const where = h("div", "lb-error-where");
      where.append(
        h("span", null, query.slice(Math.max(0, pos - 40), pos)),
        h("mark", null, query.slice(pos, pos + 1) || " "),
        h("span", null, query.slice(pos + 1, pos + 40)),
      );
      errorBox.append(where);
    }
    updateNotice();
  }

  // -- facets ---------------------------------------------------------------------------------------
  const facetBoxes = new Map();
  for (const [field, label] of model.get("facet_fields") || []) {
    const details = h("details", "lb-facet");
    attr(details, "data-testid", `facet-${field}`);
    const summary = h("summary", null, label);
    const badge = h("span", "lb-facet-count");
    summary.append(badge);
    const list = h("div", "lb-facet-list");
    details.append(summary, list);
    details.addEventListener("toggle", () => {
      if (!details.open) return;
      for (const other of facetBoxes.values()) if (other.details !== details) other.details.open = false;
    });
    facetBar.append(details);
    facetBoxes.set(field, { details, list, badge, label });
  }
  function filtersNow() {
    return model.get("filters") || {};
  }
  function setFilter(field, value, on) {
    const current = filtersNow();
    const values = new Set(current[field] || []);
    if (on) values.add(value);
    else values.delete(value);
    const next = { ...current };
    if (values.size) next[field] = [...values];
    else delete next[field];
    model.set("filters", next);
    model.save_changes();
  }
  function renderFacets() {
    const filters = filtersNow();
    for (const [field, box] of facetBoxes) {
      const active = new Set(filters[field] || []);
      box.badge.textContent = active.size ? ` ${active.size}` : "";
      box.details.classList.toggle("lb-active", active.size > 0);
      box.list.replaceChildren();
      const values = lastFacets[field] || [];
      if (!values.length) box.list.append(h("div", "lb-facet-empty", "No values"));
      for (const [value, n] of values) {
        const option = h("label", "lb-facet-option");
        attr(option, "data-testid", "facet-option");
        attr(option, "data-value", value);
        const box2 = h("input");
        attr(box2, "type", "checkbox");
        box2.checked = active.has(value);
        box2.addEventListener("change", () => setFilter(field, value, box2.checked));
        option.append(box2, h("span", "lb-facet-value", value === "" ? "(top level)" : value));
        option.append(h("span", "lb-facet-n", typeof n === "number" ? n.toLocaleString() : ""));
        box.list.append(option);
      }
    }
    chips.replaceChildren();
    for (const [field, values] of Object.entries(filters)) {
      const box = facetBoxes.get(field);
      for (const value of values || []) {
        const chip = h("button", "lb-chip lb-filter-chip", `${box ? box.label : field}: ${value} ×`);
        attr(chip, "type", "button");
        attr(chip, "data-testid", "filter-chip");
        attr(chip, "title", "Remove this filter");
        chip.addEventListener("click", () => setFilter(field, value, false));
        chips.append(chip);
      }
    }
  }
  let facetTimer = 0;
  function requestFacets() {
    clearTimeout(facetTimer);
    facetTimer = setTimeout(() => {
      const gen = generation;
      request("facets", {})
        .then(({ msg }) => {
          if (disposed || msg.generation !== generation || gen !== generation) return;
          lastFacets = msg.facets || {};
          renderFacets();
        })
        .catch(() => {});
    }, 120);
  }
  cleanups.push(() => clearTimeout(facetTimer));
  function closeFacets(event) {
    for (const box of facetBoxes.values()) {
      if (box.details.open && !box.details.contains(event.target)) box.details.open = false;
    }
  }
  document.addEventListener("pointerdown", closeFacets, true);
  cleanups.push(() => document.removeEventListener("pointerdown", closeFacets, true));

  // -- selection ------------------------------------------------------------------------------------
  function setSelected(ids) {
    model.set("selected", ids);
    model.save_changes();
  }
  function toggle(id) {
    const next = new Set(selSet);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected([...next]);
  }
  function setFocused(id) {
    model.set("focused", id);
    model.save_changes();
  }
  function ensureVisible(index) {
    const top = PAD + Math.floor(index / cols) * rowH;
    const vt = virtualTop();
    const viewH = viewport.clientHeight;
    if (top < vt) scrollToVirtual(top - PAD);
    else if (top + rowH > vt + viewH) scrollToVirtual(top + rowH - viewH + PAD);
  }
  function onGridClick(event) {
    const card = event.target instanceof Element ? event.target.closest(".lb-card") : null;
    if (!card || !canvas.contains(card)) return;
    const index = Number(card.getAttribute("data-index"));
    const row = rows.get(index);
    if (!row) return;
    cursor = index;
    if (event.shiftKey && anchor !== null) {
      event.preventDefault();
      request("select", { mode: "range", start: anchor, end: index, additive: event.ctrlKey || event.metaKey })
        .catch((err) => showProblem(err.message));
    } else if (event.ctrlKey || event.metaKey) {
      toggle(row.id);
      anchor = index;
    } else {
      setSelected([row.id]);
      setFocused(row.id);
      anchor = index;
    }
    viewport.focus({ preventScroll: true });
    schedulePaint();
  }
  function onKey(event) {
    if (event.target !== viewport) return;
    let next = cursor < 0 ? 0 : cursor;
    const pageRows = Math.max(1, Math.floor(viewport.clientHeight / rowH));
    const row = rows.get(cursor);
    switch (event.key) {
      case "ArrowRight": next += cursor < 0 ? 0 : 1; break;
      case "ArrowLeft": next -= 1; break;
      case "ArrowDown": next += cursor < 0 ? 0 : cols; break;
      case "ArrowUp": next -= cols; break;
      case "PageDown": next += pageRows * cols; break;
      case "PageUp": next -= pageRows * cols; break;
      case "Home": next = 0; break;
      case "End": next = total - 1; break;
      case "Enter":
        if (row) setFocused(row.id);
        break;
      case " ":
        if (row) toggle(row.id);
        anchor = cursor;
        break;
      case "Escape":
        setFocused(null);
        break;
      case "a":
      case "A":
        if (!(event.ctrlKey || event.metaKey)) return;
        request("select", { mode: "all" }).catch((err) => showProblem(err.message));
        break;
      default:
        return;
    }
    event.preventDefault();
    event.stopPropagation();
    if (total > 0) {
      cursor = clamp(next, 0, total - 1);
      ensureVisible(cursor);
    }
    schedulePaint();
  }
  viewport.addEventListener("click", onGridClick);
  viewport.addEventListener("keydown", onKey);
  viewport.addEventListener("scroll", schedulePaint, { passive: true });
  viewport.addEventListener("mousedown", (event) => {
    if (event.shiftKey) event.preventDefault(); // no text selection on shift-click
  });

  // -- toolbar events -------------------------------------------------------------------------------
  let searchTimer = 0;
  function commitSearch() {
    clearTimeout(searchTimer);
    if (model.get("query") === search.value) return;
    model.set("query", search.value);
    model.save_changes();
  }
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(commitSearch, SEARCH_DELAY_MS);
  });
  search.addEventListener("keydown", (event) => {
    event.stopPropagation(); // keep JupyterLab's notebook shortcuts out of the search box
    if (event.key === "Enter") commitSearch();
  });
  cleanups.push(() => clearTimeout(searchTimer));
  sortSelect.addEventListener("change", () => {
    model.set("sort", sortSelect.value);
    model.save_changes();
  });
  blurBox.addEventListener("change", () => {
    model.set("nsfw_blur", blurBox.checked);
    model.save_changes();
  });
  selectAll.addEventListener("click", () => {
    request("select", { mode: "all" }).catch((err) => showProblem(err.message));
  });
  clearSel.addEventListener("click", () => setSelected([]));

  // -- detail panel -----------------------------------------------------------------------------------
  const detail = makeDetail();

  function makeDetail() {
    let shownId = null;
    let data = null;
    const head = h("div", "lb-detail-head");
    const title = h("div", "lb-detail-title");
    attr(title, "data-testid", "detail-name");
    const close = h("button", "lb-icon-button", "×");
    attr(close, "type", "button");
    attr(close, "aria-label", "Close the detail panel");
    close.addEventListener("click", () => setFocused(null));
    head.append(title, close);
    const subtitle = h("div", "lb-detail-sub");
    const preview = h("div", "lb-detail-preview");
    const img = h("img", "lb-img");
    img.alt = "";
    const ph = h("div", "lb-placeholder");
    const phBase = h("div", "lb-ph-base");
    const phName = h("div", "lb-ph-name");
    ph.append(phBase, phName);
    preview.append(img, ph);

    // curation controls (built once, values patched so typing is never interrupted)
    const cur = h("div", "lb-curation");
    const favButton = h("button", "lb-fav-button", "☆ Favourite");
    attr(favButton, "type", "button");
    attr(favButton, "data-testid", "detail-favorite");
    const ratingBox = h("div", "lb-rating");
    attr(ratingBox, "aria-label", "Rating");
    const ratingButtons = [1, 2, 3, 4, 5].map((n) => {
      const b = h("button", "lb-star", "★");
      attr(b, "type", "button");
      attr(b, "data-testid", `rating-${n}`);
      attr(b, "aria-label", `Rate ${n} of 5`);
      b.addEventListener("click", () => save("rating", data && data.rating === n ? null : n));
      ratingBox.append(b);
      return b;
    });
    const weight = h("input", "lb-weight");
    attr(weight, "type", "number");
    attr(weight, "step", "0.05");
    attr(weight, "min", "-10");
    attr(weight, "max", "10");
    attr(weight, "data-testid", "detail-weight");
    attr(weight, "aria-label", "Preferred weight");
    const nsfwLabel = h("label", "lb-toggle");
    const nsfwBox = h("input");
    attr(nsfwBox, "type", "checkbox");
    attr(nsfwBox, "data-testid", "detail-nsfw");
    nsfwLabel.append(nsfwBox, h("span", null, "NSFW"));
    const tagsInput = h("input", "lb-text");
    attr(tagsInput, "type", "text");
    attr(tagsInput, "data-testid", "detail-tags");
    attr(tagsInput, "placeholder", "your tags, comma separated");
    const notes = h("textarea", "lb-text lb-notes");
    attr(notes, "rows", "3");
    attr(notes, "data-testid", "detail-notes");
    attr(notes, "placeholder", "Notes");
    const groups = h("textarea", "lb-text");
    attr(groups, "rows", "2");
    attr(groups, "data-testid", "detail-trigger-groups");
    attr(groups, "placeholder", "Trigger groups, one per line: name: word, word");
    const status = h("div", "lb-save-status");
    attr(status, "data-testid", "save-status");
    attr(status, "aria-live", "polite");
    const line1 = h("div", "lb-cur-row");
    const weightLabel = h("label", "lb-field");
    weightLabel.append(h("span", null, "Weight"), weight);
    line1.append(favButton, ratingBox);
    const line2 = h("div", "lb-cur-row");
    line2.append(weightLabel, nsfwLabel);
    cur.append(line1, line2, labelled("Tags", tagsInput), labelled("Notes", notes),
      labelled("Trigger groups", groups), status);

    const summary = h("div", "lb-detail-info");
    const info = h("div", "lb-detail-info");
    panel.append(head, subtitle, preview, summary, cur, info);

    function labelled(text, control) {
      const label = h("label", "lb-field lb-field-block");
      label.append(h("span", null, text), control);
      return label;
    }
    function save(field, value) {
      if (!data) return;
      const id = data.id;
      status.textContent = "Saving…";
      status.classList.remove("lb-bad");
      request("update", { id, field, value })
        .then(() => {
          if (shownId === id) status.textContent = "Saved";
        })
        .catch((err) => {
          status.textContent = `Not saved: ${err.message}`;
          status.classList.add("lb-bad");
        });
    }
    favButton.addEventListener("click", () => data && save("favorite", !data.favorite));
    nsfwBox.addEventListener("change", () => save("nsfw", nsfwBox.checked));
    weight.addEventListener("change", () => {
      const text = weight.value.trim();
      const n = Number(text);
      if (text === "") save("preferred_weight", null);
      else if (Number.isFinite(n)) save("preferred_weight", n);
    });
    tagsInput.addEventListener("change", () => {
      save("tags", tagsInput.value.split(",").map((t) => t.trim()).filter(Boolean));
    });
    notes.addEventListener("change", () => save("notes", notes.value));
    groups.addEventListener("change", () => {
      const parsed = [];
      for (const line of groups.value.split("\n")) {
        if (!line.trim()) continue;
        const at = line.indexOf(":");
        const name = at >= 0 ? line.slice(0, at).trim() : "";
        const words = (at >= 0 ? line.slice(at + 1) : line).split(",").map((w) => w.trim()).filter(Boolean);
        parsed.push({ name, words });
      }
      save("trigger_groups", parsed);
    });
    for (const control of [weight, tagsInput, notes, groups]) {
      control.addEventListener("keydown", (event) => event.stopPropagation());
    }

    function setValue(control, value) {
      if (document.activeElement !== control && control.value !== value) control.value = value;
    }
    function patchCuration(d) {
      favButton.textContent = d.favorite ? "★ Favourite" : "☆ Favourite";
      favButton.classList.toggle("lb-on", d.favorite);
      attr(favButton, "aria-pressed", d.favorite ? "true" : "false");
      ratingButtons.forEach((b, i) => b.classList.toggle("lb-on", (d.rating || 0) > i));
      ratingBox.classList.toggle("lb-rated", Boolean(d.rating));
      nsfwBox.checked = d.nsfw;
      setValue(weight, d.preferred_weight === null || d.preferred_weight === undefined ? "" : String(d.preferred_weight));
      setValue(tagsInput, (d.user_tags || []).join(", "));
      setValue(notes, d.notes || "");
      setValue(groups, (d.trigger_groups || []).map((g) => (g.name ? `${g.name}: ` : "") + g.words.join(", ")).join("\n"));
    }

    function section(label, content, where = info) {
      const box = h("section", "lb-section");
      box.append(h("h4", null, label), content);
      where.append(box);
    }
    function facts(pairs) {
      const dl = h("dl", "lb-facts");
      for (const [k, v] of pairs) {
        if (v === null || v === undefined || v === "") continue;
        dl.append(h("dt", null, k), h("dd", null, v));
      }
      return dl;
    }
    function renderInfo(d) {
      info.replaceChildren();
      summary.replaceChildren();
      const rankAlpha = d.rank !== null && d.rank !== undefined ? `${d.rank} / ${d.alpha ?? "–"}` : "";
      summary.append(facts([
        ["Base model", d.base_model + (d.base_hint ? ` (${d.base_hint})` : "")],
        ["Algorithm", d.algorithm + (d.dora ? " + DoRA" : "")],
        ["Rank / alpha", rankAlpha], ["Format", d.format], ["Dtype", d.dtype], ["Size", formatSize(d.size)],
        ["Folder", d.folder], ["File", d.file], ["Status", d.status !== "ok" ? `${d.status}: ${d.error}` : ""],
      ]));
      summary.firstChild.classList.add("lb-summary");
      if (d.triggers.length) {
        const list = h("div", "lb-tokens");
        attr(list, "data-testid", "detail-triggers");
        for (const t of d.triggers) {
          const b = h("button", "lb-token", t.word);
          attr(b, "type", "button");
          attr(b, "title", `Click to copy${t.source ? ` · from ${t.source}` : ""}`);
          b.addEventListener("click", () => {
            copyText(t.word, root).then(() => {
              status.textContent = `Copied “${t.word}”`;
              b.classList.add("lb-copied");
              setTimeout(() => b.classList.remove("lb-copied"), 900);
            }, () => {
              status.textContent = "Copy failed: select the word instead";
            });
          });
          list.append(b);
        }
        section("Trigger words · click to copy", list, summary);
      }
      if (d.tags.length) {
        const cloud = h("div", "lb-cloud");
        attr(cloud, "data-testid", "detail-tags-cloud");
        const counts = d.tags.map((p) => p[1]);
        const lo = Math.min(...counts);
        const hi = Math.max(...counts);
        const active = new Set(filtersNow().training_tags || []);
        for (const [tag, n] of d.tags) {
          const b = h("button", "lb-cloud-tag", tag);
          attr(b, "type", "button");
          attr(b, "title", `${n} image${n === 1 ? "" : "s"} · click to filter`);
          b.style.fontSize = `${(0.78 + (hi > lo ? (n - lo) / (hi - lo) : 0.5) * 0.6).toFixed(2)}em`;
          b.classList.toggle("lb-on", active.has(tag));
          b.addEventListener("click", () => setFilter("training_tags", tag, !active.has(tag)));
          cloud.append(b);
        }
        section("Training tags", cloud);
      }
      if (d.facts.length) section("Training", facts(d.facts));
      if (d.description) {
        const text = h("div", "lb-description", d.description);
        attr(text, "data-testid", "detail-description");
        section("Description", text);
      }
      if (d.hashes.length) {
        const dl = facts(d.hashes);
        dl.classList.add("lb-mono");
        section("Hashes", dl);
      }
      if (d.sidecars.length || d.evidence.length) {
        const list = h("ul", "lb-provenance");
        for (const s of d.sidecars) {
          const li = h("li", null, `${s.kind} · ${s.file}`);
          if (s.status && s.status !== "ok") li.append(h("span", "lb-muted", ` (${s.status})`));
          if (s.fields.length) li.append(h("div", "lb-muted", `provides ${s.fields.join(", ")}`));
          list.append(li);
        }
        for (const [source, value, confidence] of d.evidence) {
          const conf = typeof confidence === "number" ? ` (${Math.round(confidence * 100)}%)` : "";
          list.append(h("li", "lb-muted", `base model ${value} ← ${source}${conf}`));
        }
        section("Sidecars and provenance", list);
      }
    }
    function show(d) {
      data = d && typeof d.id === "number" ? d : null;
      panel.classList.toggle("lb-open", Boolean(data));
      root.classList.toggle("lb-with-detail", Boolean(data));
      if (!data) {
        shownId = null;
        detailKey = null;
        return;
      }
      if (shownId !== data.id) {
        shownId = data.id;
        status.textContent = "";
        status.classList.remove("lb-bad");
        notes.value = "";
        detailKey = null;
        setBlobSrc(img, null);
        if (data.has_preview) loadLarge(data.id);
      }
      title.textContent = data.name;
      subtitle.textContent = data.title && data.title !== data.name ? data.title : "";
      phBase.textContent = (data.base_model || "unknown").toUpperCase();
      phName.textContent = data.name;
      attr(ph, "data-base", (data.base_model || "unknown").toLowerCase());
      preview.classList.toggle("lb-nsfw", data.nsfw);
      patchCuration(data);
      renderInfo(data);
    }
    function loadLarge(id) {
      request("thumbs", { ids: [id], size: "large" })
        .then(({ msg, buffers }) => {
          const item = (msg.items || [])[0];
          if (!item || !item.key || typeof item.buffer !== "number" || shownId !== id) return;
          storeBlob(item.key, buffers[item.buffer], item.mime);
          detailKey = item.key;
          setBlobSrc(img, blobFor(item.key));
          preview.classList.add("lb-has-img");
        })
        .catch(() => {});
      preview.classList.remove("lb-has-img");
    }
    return { show };
  }

  // -- model events -----------------------------------------------------------------------------------
  function onGeneration() {
    generation = model.get("_generation");
    total = model.get("total") || 0;
    rows = new Map();
    pages = new Map();
    pagesPending = new Set();
    anchor = null;
    cursor = -1;
    problem = "";
    layout();
    viewport.scrollTop = 0;
    updateCount();
    schedulePaint();
    requestFacets();
  }
  function onSelected() {
    selSet = new Set(model.get("selected") || []);
    updateCount();
    schedulePaint();
  }
  function onFocused() {
    focusedId = model.get("focused");
    schedulePaint();
  }
  function onQuery() {
    if (document.activeElement !== search) search.value = model.get("query") || "";
  }
  function onBlur() {
    blurBox.checked = Boolean(model.get("nsfw_blur"));
    root.classList.toggle("lb-blur", blurBox.checked);
  }
  function onHeight() {
    body.style.height = `${model.get("height")}px`;
  }
  const handlers = {
    "change:_generation": onGeneration,
    "change:selected": onSelected,
    "change:focused": onFocused,
    "change:_detail": () => detail.show(model.get("_detail")),
    "change:query": onQuery,
    "change:sort": () => { sortSelect.value = model.get("sort"); },
    "change:filters": renderFacets,
    "change:error": updateError,
    "change:error_position": updateError,
    "change:nsfw_blur": onBlur,
    "change:height": onHeight,
    "change:total": () => { updateCount(); updateNotice(); },
  };
  for (const [name, fn] of Object.entries(handlers)) {
    model.on(name, fn);
    cleanups.push(() => model.off(name, fn));
  }

  const resize = new ResizeObserver(() => {
    root.classList.toggle("lb-narrow", root.clientWidth < 780);
    const before = cols;
    const keepIndex = Math.floor(virtualTop() / rowH) * before;
    layout();
    if (cols !== before && keepIndex > 0) scrollToVirtual(Math.floor(keepIndex / cols) * rowH);
    schedulePaint();
  });
  resize.observe(root);
  resize.observe(viewport);
  cleanups.push(() => resize.disconnect());

  onHeight();
  onBlur();
  updateError();
  updateCount();
  renderFacets();
  detail.show(model.get("_detail"));
  layout();
  schedulePaint();
  requestFacets();

  return () => {
    disposed = true;
    for (const fn of cleanups.splice(0)) {
      try {
        fn();
      } catch (_err) {
        // keep cleaning up
      }
    }
    for (const entry of pending.values()) clearTimeout(entry.timer);
    pending.clear();
  };
}

export default { render };

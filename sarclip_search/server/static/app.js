// sarsearch's page: search by text or example, refine with 👍/👎, filter, see footprints, export.
// It calls only the public API of the server that served it (api.js) and keeps its state in the URL.
import { ApiError, follow, getJSON, linkOf, postImage, postJSON } from "./api.js";
import { Detail } from "./detail.js";
import { download, toCSV, toGeoJSON, toSTAC } from "./exports.js";
import { Filters } from "./filters.js";
import { Grid, thumb } from "./grid.js";
import { isPlaced, thumbnailOf, tileId } from "./items.js";
import { ResultsMap } from "./map.js";
import { emptyState, hasFilters, hasQuery, searchBody, searchQuery, stateFromURL, stateToURL } from "./state.js";

const $ = (selector) => document.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

let state = stateFromURL(location.search);
let items = []; // the results shown, in rank order
let nextLink = null;
let running = null; // AbortController of the search under way
let searches = 0; // searches shown so far (tests wait on body[data-searches])
let grid;
let map;
let filters;
let detail;

const marks = () => ({ positive: state.positive, negative: state.negative });

// ---------------------------------------------------------------- errors and status

function showError(error) {
  const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  const fix = error instanceof ApiError && error.fix ? ` — ${error.fix}` : "";
  $("#error-text").textContent = `${message}${fix}`;
  $("#error").hidden = false;
}

function hideError() {
  $("#error").hidden = true;
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "loading" : "ready";
  $("#results-panel").setAttribute("aria-busy", String(busy));
}

// ---------------------------------------------------------------- running a search

function describe() {
  if (state.positive.length) return "re-ranked by your feedback";
  const parts = [];
  if (state.q.trim()) parts.push(`“${state.q.trim()}”`);
  if (state.like.length) parts.push(`${state.like.length} example${state.like.length > 1 ? "s" : ""}`);
  if (state.image) parts.push("your image");
  if (parts.length) return `for ${parts.join(" + ")}`;
  return hasFilters(state) ? "matching the filters, by tile id" : "in the archive, by tile id";
}

async function request(signal) {
  const body = searchBody(state, filters.names);
  if (state.positive.length) {
    // relevance feedback: the "more like this" examples count as marked relevant too
    const positive = [...new Set([...state.positive, ...state.like])].map(Number);
    const { like, not, ...rest } = body;
    return postJSON("/feedback", { ...rest, positive, negative: state.negative.map(Number) }, signal);
  }
  if (state.image) return postImage("/search", state.image, body, signal);
  return getJSON("/search", searchQuery(state, filters.names), signal);
}

async function run({ push = true } = {}) {
  if (running) running.abort();
  const controller = new AbortController();
  running = controller;
  const url = stateToURL(state);
  if (url !== `${location.pathname}${location.search}`) {
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
  }
  renderQueryBar();
  hideError();
  setBusy(true);
  const started = performance.now();
  try {
    const answer = await request(controller.signal);
    if (controller !== running) return;
    show(answer, performance.now() - started);
  } catch (error) {
    if (error.name === "AbortError" || controller !== running) return;
    items = [];
    nextLink = null;
    grid.clear();
    map.clear();
    updateStatus(null);
    showError(error);
  } finally {
    if (controller === running) {
      running = null;
      setBusy(false);
      searches += 1;
      document.body.dataset.searches = String(searches);
    }
  }
}

function show(answer, ms) {
  items = answer.features || [];
  nextLink = linkOf(answer, "next");
  $("#results-panel").scrollTop = 0; // a new list starts at its top
  grid.clear();
  grid.append(items, marks(), 1);
  map.clear();
  map.add(items);
  map.fit();
  if (detail.item) {
    const id = tileId(detail.item);
    grid.select(id);
    map.select(id);
  }
  updateStatus(ms);
}

async function more() {
  if (!nextLink || running) return;
  const controller = new AbortController();
  running = controller;
  setBusy(true);
  const button = $("#more");
  button.disabled = true;
  try {
    const answer = await follow(nextLink, controller.signal);
    const fresh = (answer.features || []).filter((item) => !items.some((old) => tileId(old) === tileId(item)));
    grid.append(fresh, marks(), items.length + 1);
    items = items.concat(fresh);
    nextLink = linkOf(answer, "next");
    map.add(fresh);
    updateStatus(null);
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  } finally {
    button.disabled = false;
    if (controller === running) {
      running = null;
      setBusy(false);
      searches += 1;
      document.body.dataset.searches = String(searches);
    }
  }
}

function updateStatus(ms) {
  const placed = items.filter(isPlaced).length;
  const time = ms ? ` · ${Math.round(ms)} ms` : "";
  $("#status").textContent = items.length
    ? `${items.length} result${items.length > 1 ? "s" : ""} ${describe()}${time}`
    : hasQuery(state) || hasFilters(state) ? "No results. Remove a filter or an example." : "";
  $("#map-note").textContent = items.length
    ? `${placed} of ${items.length} on the map${placed < items.length ? " (the others have no footprint)" : ""}`
    : "";
  $("#more").hidden = !nextLink;
  for (const id of ["#export-geojson", "#export-stac", "#export-csv"]) $(id).disabled = !items.length;
}

// ---------------------------------------------------------------- the query bar: what is searched

function chip(text, title, onRemove, thumb) {
  const node = el("span", { className: "chip", title });
  if (thumb) node.append(el("img", { src: thumb, alt: "", width: 28, height: 28 }));
  node.append(el("span", { textContent: text }));
  const remove = el("button", { type: "button", className: "remove", textContent: "×", title: "Remove" });
  remove.setAttribute("aria-label", `Remove ${text}`);
  remove.addEventListener("click", onRemove);
  node.append(remove);
  return node;
}

function renderQueryBar() {
  const chips = [];
  if (state.q.trim()) {
    chips.push(chip(`text: ${state.q.trim()}`, "the text query", () => { state.q = ""; $("#q").value = ""; run(); }));
  }
  for (const id of state.like) {
    chips.push(chip(`like #${id}`, "an example tile (more like this)", () => {
      state.like = state.like.filter((x) => x !== id);
      run();
    }, thumbnailOf(id)));
  }
  if (state.image) {
    chips.push(chip(`image: ${state.image.name || "upload"}`, "the query image (not kept in the page's link)", () => {
      state.image = null;
      $("#image-input").value = "";
      run();
    }));
  }
  for (const text of state.not) {
    chips.push(chip(`not: ${text}`, "a text to push results away from", () => {
      state.not = state.not.filter((t) => t !== text);
      run();
    }));
  }
  $("#query-chips").replaceChildren(...chips);

  const tray = [];
  for (const [kind, ids] of [["up", state.positive], ["down", state.negative]]) {
    for (const id of ids) {
      const node = chip(`#${id}`, `marked ${kind === "up" ? "relevant" : "not relevant"}; × unmarks it`,
        () => mark(id, kind), thumbnailOf(id));
      node.prepend(thumb(kind === "down"));
      node.classList.add(`mark-${kind}`);
      node.dataset.id = id;
      tray.push(node);
    }
  }
  $("#marks").replaceChildren(...tray);
  const marked = state.positive.length + state.negative.length;
  $("#feedback-bar").hidden = !marked;
  $("#feedback-hint").textContent = marked && !state.positive.length
    ? "Mark at least one tile relevant (thumb up) to re-rank; thumbs down alone do not." : "";
  $("#query-bar").hidden = !(chips.length || marked || hasFilters(state));
}

// ---------------------------------------------------------------- actions

function newText(text) {
  state.q = text;
  state.like = [];
  state.positive = [];
  state.negative = [];
  state.not = [];
  state.image = null;
  $("#image-input").value = "";
  $("#q").value = text;
  run();
}

// More like this: the tile joins the examples, which become the query. The text is dropped: blended at its
// default weight (alpha 0.75) it would outweigh the examples (a deep link can still hold both).
function like(id) {
  if (!state.like.includes(id)) state.like = [...state.like, id];
  state.q = "";
  $("#q").value = "";
  run();
}

function mark(id, kind) {
  const [own, other] = kind === "up" ? ["positive", "negative"] : ["negative", "positive"];
  state[other] = state[other].filter((x) => x !== id);
  state[own] = state[own].includes(id) ? state[own].filter((x) => x !== id) : [...state[own], id];
  detail.refresh(marks());
  run();
}

function open(item) {
  detail.show(item, marks());
  const id = tileId(item);
  grid.select(id);
  if (!map.select(id)) map.fit();
  $("#detail-empty").hidden = true;
  if (window.matchMedia("(max-width: 900px)").matches) $("#detail").scrollIntoView({ behavior: "smooth" });
}

// hover links the grid and the map; a tile hovered on the map is scrolled into view in the grid
let hovered = null;
function hover(id, from = "grid") {
  if (hovered !== null) {
    grid.highlight(hovered, false);
    map.highlight(hovered, false);
  }
  hovered = id;
  if (id !== null) {
    grid.highlight(id, true, from === "map");
    map.highlight(id, true);
  }
}

function searchImage(file) {
  if (!file) return;
  state.image = file;
  state.like = [];
  state.positive = [];
  state.negative = [];
  run();
}

function exportAs(kind) {
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  if (kind === "geojson") {
    download(`sarsearch-${stamp}.geojson`, JSON.stringify(toGeoJSON(items), null, 1), "application/geo+json");
  } else if (kind === "stac") {
    download(`sarsearch-${stamp}.stac.json`, JSON.stringify(toSTAC(items, location.href), null, 1), "application/json");
  } else {
    download(`sarsearch-${stamp}.csv`, toCSV(items), "text/csv");
  }
}

// ---------------------------------------------------------------- start

function showExamples(queryables) {
  const labels = queryables.properties?.label;
  const counts = labels?.["x-counts"] || {};
  const values = (labels?.enum || Object.keys(counts))
    .slice().sort((a, b) => (counts[b] ?? 0) - (counts[a] ?? 0)).slice(0, 6);
  const box = $("#examples");
  box.replaceChildren();
  if (!values.length) return;
  box.append(el("span", { className: "hint", textContent: "Try:" }));
  for (const value of values) {
    const text = String(value).replace(/_/g, " ");
    const button = el("button", { type: "button", className: "example", textContent: text });
    button.addEventListener("click", () => newText(text));
    box.append(button);
  }
}

function wire() {
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#q").value.trim();
    if (text !== state.q.trim() || !hasQuery(state)) newText(text);
    else run();
  });
  $("#image-input").addEventListener("change", (event) => searchImage(event.target.files[0]));
  const overlay = $("#drop-overlay");
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    overlay.hidden = false;
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    searchImage(event.dataTransfer.files[0]);
  });
  $("#more").addEventListener("click", more);
  $("#reset-feedback").addEventListener("click", () => {
    state.positive = [];
    state.negative = [];
    detail.refresh(marks());
    run();
  });
  $("#clear-all").addEventListener("click", () => {
    state = emptyState();
    $("#q").value = "";
    $("#image-input").value = "";
    filters.show(state);
    detail.hide();
    run();
  });
  $("#clear-filters").addEventListener("click", () => {
    Object.assign(state, { collections: [], filters: {}, datetime: "", bbox: null });
    filters.show(state);
    showBbox();
    run();
  });
  $("#search-area").addEventListener("click", () => {
    state.bbox = map.viewBbox();
    showBbox();
    run();
  });
  $("#error-close").addEventListener("click", hideError);
  for (const kind of ["geojson", "stac", "csv"]) $(`#export-${kind}`).addEventListener("click", () => exportAs(kind));
  window.addEventListener("popstate", () => {
    state = stateFromURL(location.search);
    $("#q").value = state.q;
    filters.show(state);
    showBbox();
    run({ push: false });
  });
  window.addEventListener("resize", () => map.invalidate());
}

function showBbox() {
  const note = $("#bbox-note");
  note.hidden = !state.bbox;
  note.replaceChildren();
  map.showArea(state.bbox);
  if (!state.bbox) return;
  const remove = el("button", { type: "button", className: "link", textContent: "remove", id: "clear-area" });
  remove.addEventListener("click", () => {
    state.bbox = null;
    showBbox();
    run();
  });
  note.append(`Map area (dashed on the map): ${state.bbox.map((v) => v.toFixed(3)).join(", ")} `, remove);
}

async function start() {
  if (window.matchMedia("(max-width: 900px)").matches) $("#filters-details").open = false; // fold on phones
  const handlers = { onOpen: open, onLike: like, onMark: mark, onHover: hover };
  grid = new Grid($("#grid"), handlers);
  detail = new Detail($("#detail"), { ...handlers, onClose: () => {
    grid.select(null);
    map.select(null);
    $("#detail-empty").hidden = false;
  } });
  map = new ResultsMap($("#map"), handlers);
  map.addSizeToggle();
  map.loadOutlines("/static/vendor/world-atlas/countries-110m.json").catch(showError);
  filters = new Filters($("#filters"), (chosen) => {
    Object.assign(state, chosen);
    run();
  });
  wire();
  let queryables = { properties: {} };
  try {
    queryables = await getJSON("/queryables");
  } catch (error) {
    showError(error);
  }
  filters.build(queryables);
  filters.show(state);
  showExamples(queryables);
  showBbox();
  $("#q").value = state.q;
  await run({ push: false });
}

start();

// The detail panel of one result: its scene's quicklook with the tile outlined, its actions, all metadata.
import { actionButtons } from "./grid.js";
import { collection, label, sceneHref, scoreText, tileId } from "./items.js";

const FIRST = ["score", "collection", "label", "datetime", "scene", "window", "bbox"];

function format(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map((v) => (typeof v === "number" ? +v.toFixed(6) : v)).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export class Detail {
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers;
    this.item = null;
    this.located = null; // the tile whose scene shows a locate overlay
    root.querySelector("#detail-close").addEventListener("click", () => this.hide());
    root.querySelector("#detail-locate").addEventListener("submit", (event) => {
      event.preventDefault();
      this.locate();
    });
  }

  // "locate in scene": the heat of a phrase over the scene's quicklook (GET /scenes/{id}/locate.png)
  locate() {
    const scene = this.item?.properties?.["sarsearch:scene_id"];
    const caption = this.root.querySelector("#detail-caption");
    const input = this.root.querySelector("#locate-q");
    const q = input.value.trim();
    if (scene === undefined) return;
    if (!q) {
      caption.textContent = "Type a phrase to locate in the scene, e.g. ship";
      return;
    }
    const img = this.root.querySelector("#detail-quicklook");
    const href = `/scenes/${encodeURIComponent(scene)}/locate.png?q=${encodeURIComponent(q)}&size=512`;
    this.located = tileId(this.item);
    caption.textContent = `Locating “${q}” in the scene…`;
    img.onload = () => {
      img.onload = img.onerror = null;
      caption.textContent = `Where “${q}” matches (red: best; peaks boxed)`;
    };
    img.onerror = async () => {
      img.onload = img.onerror = null;
      let message = "the scene could not be located";
      try {
        message = (await (await fetch(href)).json()).error || message;
      } catch { /* not JSON: keep the generic line */ }
      caption.textContent = `Error: ${message}`;
    };
    img.alt = `Heat of “${q}” over the scene`;
    img.src = href;
  }

  show(item, marks) {
    this.item = item;
    const id = tileId(item);
    const p = item.properties || {};
    this.root.querySelector("#detail-title").textContent = `#${id} ${label(item)}`;
    this.root.querySelector("#detail-actions").replaceChildren(...actionButtons(id, marks, this.handlers));
    const img = this.root.querySelector("#detail-quicklook");
    const href = sceneHref(item);
    img.hidden = !href;
    this.root.querySelector("#detail-locate").hidden = p["sarsearch:scene_id"] === undefined;
    if (this.located !== id) {  // a refresh of the same tile keeps its locate overlay
      this.located = null;
      img.onload = img.onerror = null;
      img.alt = "Scene quicklook with the tile outlined";
      this.root.querySelector("#detail-caption").textContent = "The scene, tile outlined";
      const input = this.root.querySelector("#locate-q");
      input.value = new URLSearchParams(location.search).get("q") || input.value;
      if (href && img.getAttribute("src") !== href) img.src = href;
    }
    const rows = {
      score: `${scoreText(item)} ${p.score_kind ?? p["sarsearch:score_kind"] ?? ""}`.trim(),
      collection: collection(item), label: label(item),
      datetime: p["sarsearch:datetime_unknown"] ? "unknown" : (p.datetime ?? ""),
      scene: p["sarsearch:scene_id"], window: p["sarsearch:window"], bbox: item.bbox ?? "not placed (no CRS)",
    };
    const skip = new Set(["score", "sarsearch:score", "score_kind", "sarsearch:score_kind", "label", "datetime",
      "sarsearch:scene_id", "sarsearch:window", "dataset"]);
    for (const key of Object.keys(p).sort()) if (!skip.has(key)) rows[key] = p[key];
    const table = this.root.querySelector("#detail-meta");
    table.replaceChildren();
    for (const key of [...FIRST, ...Object.keys(rows).filter((k) => !FIRST.includes(k))]) {
      const text = format(rows[key]);
      if (!text) continue;
      const tr = table.insertRow();
      tr.insertCell().textContent = key;
      tr.insertCell().textContent = text;
    }
    this.root.hidden = false;
  }

  refresh(marks) {
    if (this.item && !this.root.hidden) this.show(this.item, marks);
  }

  hide() {
    this.root.hidden = true;
    this.item = null;
    this.located = null;
    this.handlers.onClose?.();
  }
}

// The results grid: one tile per Item, with its thumbnail, score, label, date and id, and its actions.
import { collection, date, isPlaced, label, scoreText, thumbnailHref, tileId } from "./items.js";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};

// 👍/👎 drawn as inline SVG (an emoji needs a colour emoji font, which a server or CI machine may lack)
const THUMB = "M7 11 10.5 3.5c1.4 0 2.4 1 2.2 2.5L12.3 9.5H19c1.2 0 2.1 1.1 1.9 2.3l-1.3 7.6c-.2 1-1 1.6-2 1.6H7Z"
  + "M3 11h4v10H3Z";

export function thumb(down) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("thumb");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB);
  if (down) path.setAttribute("transform", "rotate(180 12 12)");
  svg.append(path);
  return svg;
}

// The three actions of a tile (grid and detail panel): more like this, 👍, 👎.
export function actionButtons(id, marks, handlers) {
  const mark = marks.positive.includes(id) ? "up" : marks.negative.includes(id) ? "down" : "";
  const like = el("button", { type: "button", className: "like", textContent: "More like this",
    title: "Add this tile as an example and search again" });
  like.addEventListener("click", (event) => { event.stopPropagation(); handlers.onLike(id); });
  const up = el("button", { type: "button", className: `up${mark === "up" ? " on" : ""}`,
    title: "Relevant (👍): re-rank with this tile as a positive example" }, thumb(false));
  up.setAttribute("aria-pressed", String(mark === "up"));
  up.setAttribute("aria-label", `Mark tile ${id} relevant`);
  up.addEventListener("click", (event) => { event.stopPropagation(); handlers.onMark(id, "up"); });
  const down = el("button", { type: "button", className: `down${mark === "down" ? " on" : ""}`,
    title: "Not relevant (👎): re-rank with this tile as a negative example" }, thumb(true));
  down.setAttribute("aria-pressed", String(mark === "down"));
  down.setAttribute("aria-label", `Mark tile ${id} not relevant`);
  down.addEventListener("click", (event) => { event.stopPropagation(); handlers.onMark(id, "down"); });
  return [like, up, down];
}

export class Grid {
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers; // onOpen(item), onLike(id), onMark(id, "up"|"down"), onHover(id|null)
    this.tiles = new Map(); // tile id -> <li>
  }

  clear() {
    this.root.replaceChildren();
    this.tiles.clear();
  }

  append(items, marks, startRank) {
    items.forEach((item, i) => this.root.append(this.tile(item, marks, startRank + i)));
  }

  tile(item, marks, rank) {
    const id = tileId(item);
    const img = el("img", { src: thumbnailHref(item), alt: `tile ${id}: ${label(item)}`,
      width: 128, height: 128 });
    const score = scoreText(item);
    const caption = el("div", { className: "caption" },
      el("div", { className: "line1" },
        el("span", { className: "label", textContent: label(item) || "(no label)", title: collection(item) }),
        el("span", { className: "score", textContent: score, title: "score" })),
      el("div", { className: "line2" },
        el("span", { className: "date", textContent: date(item) || "date unknown" }),
        el("span", { className: "id", textContent: `#${id}`, title: "tile id" })));
    const actions = el("div", { className: "tile-actions" }, ...actionButtons(id, marks, this.handlers));
    const open = el("button", { type: "button", className: "open", title: "Show details" }, img);
    open.addEventListener("click", () => this.handlers.onOpen(item));
    const li = el("li", { className: "result" }, open, caption, actions);
    li.dataset.id = id;
    li.dataset.rank = String(rank);
    li.dataset.label = label(item);
    li.dataset.collection = collection(item);
    li.dataset.placed = isPlaced(item) ? "yes" : "no";
    if (marks.positive.includes(id)) li.classList.add("marked-up");
    if (marks.negative.includes(id)) li.classList.add("marked-down");
    li.addEventListener("mouseenter", () => this.handlers.onHover(id));
    li.addEventListener("mouseleave", () => this.handlers.onHover(null));
    this.tiles.set(id, li);
    return li;
  }

  highlight(id, on, scroll = false) {
    const li = this.tiles.get(id);
    if (!li) return;
    li.classList.toggle("hover", on);
    if (on && scroll) li.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  select(id) {
    for (const [key, li] of this.tiles) li.classList.toggle("selected", key === id);
  }
}

// Export of the results shown, built in the browser from the Items already fetched (no new request):
// GeoJSON (footprints + flat properties), STAC ItemCollection (the Items, links made absolute), CSV.
import { collection, date, label, score, thumbnailHref, tileId } from "./items.js";

const absolute = (href) => (href ? new URL(href, location.href).href : href);

function absoluteItem(item) {
  const copy = structuredClone(item);
  for (const link of copy.links || []) link.href = absolute(link.href);
  for (const asset of Object.values(copy.assets || {})) asset.href = absolute(asset.href);
  return copy;
}

// one flat record per item: the columns of the CSV and the properties of the GeoJSON features
export function record(item, rank) {
  const p = item.properties || {};
  const flat = {
    rank, id: tileId(item), score: score(item), label: label(item), collection: collection(item),
    date: date(item), scene_id: p["sarsearch:scene_id"] ?? "",
    window: (p["sarsearch:window"] || []).join(" "),
    bbox: (item.bbox || []).join(" "),
    thumbnail: absolute(thumbnailHref(item)),
  };
  for (const [key, value] of Object.entries(p)) {
    if (key in flat || key === "score") continue;
    flat[key] = Array.isArray(value) ? value.join(" ") : value !== null && typeof value === "object"
      ? JSON.stringify(value) : value;
  }
  return flat;
}

export function toGeoJSON(items) {
  return {
    type: "FeatureCollection",
    features: items.map((item, i) => ({
      type: "Feature", id: tileId(item), geometry: item.geometry ?? null,
      ...(item.bbox ? { bbox: item.bbox } : {}),
      properties: record(item, i + 1),
    })),
  };
}

export function toSTAC(items, search) {
  return {
    type: "FeatureCollection",
    features: items.map(absoluteItem),
    numberReturned: items.length,
    links: [{ rel: "self", href: absolute(search), type: "text/html", title: "the page that showed these results" }],
  };
}

function csvCell(value) {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCSV(items) {
  const rows = items.map((item, i) => record(item, i + 1));
  const columns = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  const lines = [columns.map(csvCell).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Reading the fields the page shows from a STAC Item of the API.

export const tileId = (item) => String(item.properties?.["sarsearch:tile_id"] ?? item.id);

export const label = (item) => item.properties?.label ?? "";

export const collection = (item) => item.collection ?? item.properties?.dataset ?? "";

export function score(item) {
  const p = item.properties || {};
  return p.score ?? p["sarsearch:score"] ?? null;
}

export function scoreText(item) {
  const value = score(item);
  if (value === null || value === undefined) return "";
  const kind = item.properties?.score_kind ?? item.properties?.["sarsearch:score_kind"] ?? "";
  return kind === "rrf" ? value.toFixed(4) : value.toFixed(3);
}

// the acquisition day (YYYY-MM-DD), or "" when unknown
export function date(item) {
  const p = item.properties || {};
  if (p["sarsearch:datetime_unknown"]) return "";
  const text = p.datetime || p.start_datetime || "";
  return typeof text === "string" ? text.slice(0, 10) : "";
}

function linkHref(item, rel) {
  const link = (item.links || []).find((l) => l.rel === rel);
  return link ? link.href : null;
}

export function thumbnailHref(item) {
  return item.assets?.thumbnail?.href || linkHref(item, "thumbnail") || `/items/${tileId(item)}/thumbnail.png`;
}

export function sceneHref(item) {
  const scene = item.properties?.["sarsearch:scene_id"];
  return linkHref(item, "scene") || (scene !== undefined ? `/scenes/${scene}/quicklook.png?outline=${tileId(item)}` : null);
}

export const thumbnailOf = (id) => `/items/${encodeURIComponent(id)}/thumbnail.png`;

export function isPlaced(item) {
  return Boolean(item.geometry && item.geometry.coordinates);
}

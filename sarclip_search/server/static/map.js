// The map: Natural Earth country outlines for context (no tiles: the page works offline), the footprint of
// each placed result as a polygon with its thumbnail laid in it, hover linked with the grid.
import { isPlaced, label, thumbnailHref, tileId } from "./items.js";

const L = window.L;
const STYLE = { color: "#d9480f", weight: 2, fillOpacity: 0.08, className: "footprint" };
const HOVER = { color: "#1971c2", weight: 4, fillOpacity: 0.25 };
const SELECTED = { color: "#7048e8", weight: 4, fillOpacity: 0.2 };

export class ResultsMap {
  constructor(root, handlers) {
    this.handlers = handlers; // onHover(id|null), onOpen(item)
    this.map = L.map(root, { worldCopyJump: true, minZoom: 1, maxZoom: 18, zoomSnap: 0.5 }).setView([20, 0], 1);
    this.map.attributionControl.setPrefix(false);
    this.map.attributionControl.addAttribution("Outlines: Natural Earth");
    this.outlines = L.layerGroup().addTo(this.map);
    this.images = L.layerGroup().addTo(this.map);
    this.footprints = L.featureGroup().addTo(this.map);
    this.layers = new Map(); // tile id -> polygon layer
    this.selected = null;
  }

  async loadOutlines(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`map outlines: ${response.status} from ${url}`);
    const topology = await response.json();
    const countries = window.topojson.feature(topology, topology.objects.countries);
    L.geoJSON(countries, {
      interactive: false,
      style: { color: "#868e96", weight: 0.6, fillColor: "#f1f3f5", fillOpacity: 1, className: "country" },
    }).addTo(this.outlines);
  }

  clear() {
    this.footprints.clearLayers();
    this.images.clearLayers();
    this.layers.clear();
    this.selected = null;
  }

  // add the footprints of `items`; returns how many were placed
  add(items) {
    let placed = 0;
    for (const item of items) {
      if (!isPlaced(item)) continue;
      const id = tileId(item);
      if (this.layers.has(id)) continue;
      const layer = L.geoJSON(item.geometry, { style: () => ({ ...STYLE }) }).getLayers()[0];
      layer.bindTooltip(`#${id} ${label(item)}`, { sticky: true });
      layer.on("mouseover", () => this.handlers.onHover(id));
      layer.on("mouseout", () => this.handlers.onHover(null));
      layer.on("click", () => this.handlers.onOpen(item));
      this.footprints.addLayer(layer);
      layer.getElement()?.setAttribute("data-id", id);
      if (item.bbox && item.bbox.length === 4) {
        const [minx, miny, maxx, maxy] = item.bbox;
        L.imageOverlay(thumbnailHref(item), [[miny, minx], [maxy, maxx]],
          { opacity: 0.85, interactive: false, className: "footprint-image" }).addTo(this.images);
      }
      this.layers.set(id, layer);
      placed += 1;
    }
    return placed;
  }

  fit() {
    const bounds = this.footprints.getBounds();
    if (bounds.isValid()) this.map.fitBounds(bounds, { padding: [24, 24], maxZoom: 13 });
  }

  highlight(id, on) {
    const layer = this.layers.get(id);
    if (!layer) return;
    layer.setStyle(on ? HOVER : id === this.selected ? SELECTED : STYLE);
    if (on) layer.bringToFront();
  }

  select(id) {
    if (this.selected && this.layers.has(this.selected)) this.layers.get(this.selected).setStyle(STYLE);
    this.selected = id;
    const layer = this.layers.get(id);
    if (!layer) return false;
    layer.setStyle(SELECTED);
    layer.bringToFront();
    this.map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 14 });
    return true;
  }

  // the map's view as a STAC bbox, clamped to lon/lat limits
  viewBbox() {
    const b = this.map.getBounds();
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
      clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)];
  }

  invalidate() {
    this.map.invalidateSize();
  }
}

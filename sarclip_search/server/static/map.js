// The map: Natural Earth country outlines for context (no tiles: the page works offline), the footprint of
// each placed result as a polygon with its thumbnail laid in it, hover linked with the grid.
import { isPlaced, label, thumbnailHref, tileId } from "./items.js";

const L = window.L;
const STYLE = { color: "#d9480f", weight: 2, fillOpacity: 0.04, className: "footprint" };
const HOVER = { color: "#1971c2", weight: 4, fillOpacity: 0.15 };
const SELECTED = { color: "#7048e8", weight: 4, fillOpacity: 0.04 };

export class ResultsMap {
  constructor(root, handlers) {
    this.handlers = handlers; // onHover(id|null), onOpen(item)
    this.map = L.map(root, { worldCopyJump: true, minZoom: 1, maxZoom: 18, zoomSnap: 0.5 }).setView([20, 0], 1);
    this.map.attributionControl.setPrefix(false);
    this.map.attributionControl.addAttribution("Outlines: Natural Earth");
    // the outlines get a pane of their own below the overlay pane: the thumbnails laid in the footprints
    // (images of the overlay pane) would otherwise sit under the land fill of the overlay pane's SVG
    this.map.createPane("outlines").style.zIndex = 350;
    this.outlines = L.layerGroup().addTo(this.map);
    this.images = L.layerGroup().addTo(this.map);
    this.footprints = L.featureGroup().addTo(this.map);
    this.dots = L.layerGroup().addTo(this.map);
    this.layers = new Map(); // tile id -> polygon layer
    this.dotOf = new Map(); // tile id -> the dot marking a footprint too small to see at this zoom
    this.map.on("zoomend", () => this.updateDots());
    this.selected = null;
  }

  // a button on the map that makes it larger (the side column widens) and back
  addSizeToggle() {
    const Toggle = L.Control.extend({
      onAdd: () => {
        const button = L.DomUtil.create("button", "map-size leaflet-bar");
        button.type = "button";
        button.id = "map-size";
        button.textContent = "Larger map";
        L.DomEvent.disableClickPropagation(button);
        button.addEventListener("click", () => {
          const big = document.body.classList.toggle("big-map");
          button.textContent = big ? "Smaller map" : "Larger map";
          this.map.invalidateSize();
          this.fit();
        });
        return button;
      },
    });
    new Toggle({ position: "topright" }).addTo(this.map);
  }

  async loadOutlines(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`map outlines: ${response.status} from ${url}`);
    const topology = await response.json();
    const countries = window.topojson.feature(topology, topology.objects.countries);
    L.geoJSON(countries, {
      interactive: false, pane: "outlines", renderer: L.svg({ pane: "outlines" }),
      style: { color: "#868e96", weight: 0.6, fillColor: "#f1f3f5", fillOpacity: 1, className: "country" },
    }).addTo(this.outlines);
  }

  clear() {
    this.footprints.clearLayers();
    this.dots.clearLayers();
    this.dotOf.clear();
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
      layer.on("mouseover", () => this.handlers.onHover(id, "map"));
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
      const dot = L.circleMarker(layer.getBounds().getCenter(),
        { radius: 5, color: STYLE.color, weight: 2, fillOpacity: 0.6, className: "footprint-dot" });
      dot.bindTooltip(`#${id} ${label(item)}`);
      dot.on("mouseover", () => this.handlers.onHover(id, "map"));
      dot.on("mouseout", () => this.handlers.onHover(null));
      dot.on("click", () => this.handlers.onOpen(item));
      this.dotOf.set(id, dot);
      placed += 1;
    }
    this.updateDots();
    return placed;
  }

  // a footprint smaller than a few pixels at this zoom is shown as a dot as well
  updateDots() {
    for (const [id, layer] of this.layers) {
      const bounds = layer.getBounds();
      const a = this.map.latLngToLayerPoint(bounds.getSouthWest());
      const b = this.map.latLngToLayerPoint(bounds.getNorthEast());
      const small = Math.max(Math.abs(a.x - b.x), Math.abs(a.y - b.y)) < 8;
      const dot = this.dotOf.get(id);
      if (small && !this.dots.hasLayer(dot)) this.dots.addLayer(dot);
      if (!small && this.dots.hasLayer(dot)) this.dots.removeLayer(dot);
    }
  }

  fit() {
    const bounds = this.footprints.getBounds();
    if (bounds.isValid()) this.map.fitBounds(bounds, { padding: [24, 24], maxZoom: 13 });
  }

  highlight(id, on) {
    const layer = this.layers.get(id);
    if (!layer) return;
    const style = on ? HOVER : id === this.selected ? SELECTED : STYLE;
    layer.setStyle(style);
    this.dotOf.get(id)?.setStyle({ color: style.color });
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

  // the searched map area (a bbox filter) as a dashed box; null removes it
  showArea(bbox) {
    if (this.area) this.area.remove();
    this.area = null;
    if (!bbox) return;
    const [west, south, east, north] = bbox;
    this.area = L.rectangle([[south, west], [north, east]], {
      color: "#495057", weight: 1.5, dashArray: "6 4", fill: false, interactive: false, className: "search-area",
    }).addTo(this.map);
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

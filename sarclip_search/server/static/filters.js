// The filter panel, built from GET /queryables: datasets (STAC collections), label, sensor, polarization,
// split, a date range; the map area (bbox) is set by the map's button and shown here.
import { FILTER_FIELDS } from "./state.js";

const TITLES = { label: "Label", sensor: "Sensor", polarization: "Polarization (contains)", split: "Split" };
const COLLECTION_NAMES = ["dataset", "collection", "collections"];

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

// the values a queryable offers, most frequent first: [[value, count|null], ...]
function valuesOf(schema) {
  const counts = schema["x-counts"] || {};
  const values = schema.enum || (schema.items && schema.items.enum) || Object.keys(counts);
  return values.map((v) => [String(v), counts[v] ?? null])
    .sort((a, b) => (b[1] ?? 0) - (a[1] ?? 0) || a[0].localeCompare(b[0]));
}

// polarization values as single channels ("VV+VH" counts for VV and for VH): the API's filter is "contains"
function single(values) {
  const counts = new Map();
  for (const [value, count] of values) {
    for (const part of value.split(/[+,/\s]+/).filter(Boolean)) {
      counts.set(part, count === null || counts.get(part) === null ? null : (counts.get(part) || 0) + count);
    }
  }
  return [...counts].sort((a, b) => (b[1] ?? 0) - (a[1] ?? 0) || a[0].localeCompare(b[0]));
}

const withCount = (value, count) => (count === null ? value : `${value} (${count})`);

export class Filters {
  constructor(form, onChange) {
    this.form = form;
    this.onChange = onChange; // called with {collections, filters, datetime}
    this.names = {}; // URL key -> queryable name
    this.properties = {};
  }

  build(queryables) {
    this.properties = queryables.properties || {};
    this.form.replaceChildren();
    const collections = COLLECTION_NAMES.find((n) => n in this.properties);
    if (collections) {
      const box = el("fieldset", { className: "collections" }, el("legend", { textContent: "Dataset" }));
      for (const [value, count] of valuesOf(this.properties[collections])) {
        const input = el("input", { type: "checkbox", name: "collections", value });
        box.append(el("label", { title: withCount(value, count) }, input, ` ${withCount(value, count)}`));
      }
      this.form.append(box);
    }
    for (const [key, columns] of Object.entries(FILTER_FIELDS)) {
      const name = columns.find((column) => column in this.properties);
      if (!name) continue;
      this.names[key] = name;
      const schema = this.properties[name];
      const values = key === "polarization" ? single(valuesOf(schema)) : valuesOf(schema);
      let control;
      if (values.length) {
        control = el("select", { name: key, id: `filter-${key}` }, el("option", { value: "", textContent: "any" }));
        for (const [value, count] of values) control.append(el("option", { value, textContent: withCount(value, count) }));
      } else {
        control = el("input", { type: "text", name: key, id: `filter-${key}`, placeholder: "any" });
      }
      this.form.append(el("label", { className: "field", htmlFor: `filter-${key}` },
        el("span", { textContent: TITLES[key] }), control));
    }
    // the date range is STAC's datetime parameter, always there
    const from = el("input", { type: "date", name: "date-from", id: "filter-date-from" });
    const to = el("input", { type: "date", name: "date-to", id: "filter-date-to" });
    this.form.append(el("fieldset", { className: "dates" }, el("legend", { textContent: "Acquired" }),
      el("label", { htmlFor: "filter-date-from" }, "from ", from), el("label", { htmlFor: "filter-date-to" }, "to ", to)));
    this.form.addEventListener("change", () => this.onChange(this.read()));
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.onChange(this.read()); });
  }

  read() {
    const data = new FormData(this.form);
    const filters = {};
    for (const key of Object.keys(this.names)) {
      const value = String(data.get(key) || "").trim();
      if (value) filters[key] = [value];
    }
    const from = data.get("date-from") || "";
    const to = data.get("date-to") || "";
    const datetime = from || to
      ? `${from ? `${from}T00:00:00Z` : ".."}/${to ? `${to}T23:59:59Z` : ".."}` : "";
    return { collections: data.getAll("collections").map(String), filters, datetime };
  }

  // show the state's filters in the controls (after a deep link or a reset)
  show(state) {
    for (const box of this.form.querySelectorAll("input[name=collections]")) {
      box.checked = state.collections.includes(box.value);
    }
    for (const key of Object.keys(this.names)) {
      const control = this.form.elements[key];
      const value = (state.filters[key] || [])[0] || "";
      if (control.tagName === "SELECT" && value && ![...control.options].some((o) => o.value === value)) {
        control.append(el("option", { value, textContent: value }));
      }
      control.value = value;
    }
    const [from, to] = state.datetime ? state.datetime.split("/") : ["", ""];
    const day = (text) => (text && text !== ".." ? text.slice(0, 10) : "");
    this.form.elements["date-from"].value = day(from);
    this.form.elements["date-to"].value = day(to ?? from);
  }
}

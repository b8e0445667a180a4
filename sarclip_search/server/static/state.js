// What the page is searching for, and its two forms: the page's URL (deep link) and the API request.
//
// The URL holds everything but an uploaded image:
//   /?q=ship+near+harbor&like=12,40&positive=3&negative=7&not=land&collections=HRSID
//    &label=T72&sensor=...&polarization=VV&datetime=2015-01-01/..&bbox=minx,miny,maxx,maxy&limit=20

// filter keys of the URL = the API's shortcut parameters, and the catalog columns (in /queryables) whose values
// they offer, the first one there wins. One value goes as the shortcut; several as a CQL2 IN filter on the column.
export const FILTER_FIELDS = {
  label: ["label"],
  sensor: ["sensor"],
  polarization: ["polarization", "sar:polarizations"], // the API's shortcut: "contains", e.g. VV
  split: ["split"],
};
export const DEFAULT_LIMIT = 10; // the API's default page size

export function emptyState() {
  return {
    q: "", like: [], not: [], positive: [], negative: [],
    collections: [], filters: {}, datetime: "", bbox: null, limit: DEFAULT_LIMIT,
    image: null, // a File: searched by example, never in the URL
  };
}

const ids = (text) => (text || "").split(",").map((s) => s.trim()).filter((s) => /^\d+$/.test(s));
const list = (text) => (text || "").split(",").map((s) => s.trim()).filter(Boolean);

export function stateFromURL(search) {
  const params = new URLSearchParams(search);
  const state = emptyState();
  state.q = params.get("q") || "";
  state.like = ids(params.get("like"));
  state.not = params.getAll("not").filter((t) => t.trim());
  state.positive = ids(params.get("positive"));
  state.negative = ids(params.get("negative")).filter((id) => !state.positive.includes(id));
  state.collections = list(params.get("collections"));
  for (const key of Object.keys(FILTER_FIELDS)) {
    const values = list(params.get(key));
    if (values.length) state.filters[key] = values;
  }
  state.datetime = params.get("datetime") || "";
  const bbox = list(params.get("bbox")).map(Number);
  state.bbox = bbox.length === 4 && bbox.every(Number.isFinite) ? bbox : null;
  const limit = parseInt(params.get("limit"), 10);
  if (limit > 0) state.limit = limit;
  return state;
}

export function stateToURL(state) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.like.length) params.set("like", state.like.join(","));
  for (const text of state.not) params.append("not", text);
  if (state.positive.length) params.set("positive", state.positive.join(","));
  if (state.negative.length) params.set("negative", state.negative.join(","));
  if (state.collections.length) params.set("collections", state.collections.join(","));
  for (const [key, values] of Object.entries(state.filters)) {
    if (values && values.length) params.set(key, values.join(","));
  }
  if (state.datetime) params.set("datetime", state.datetime);
  if (state.bbox) params.set("bbox", state.bbox.map((v) => +v.toFixed(5)).join(","));
  if (state.limit !== DEFAULT_LIMIT) params.set("limit", String(state.limit));
  const text = params.toString();
  return text ? `/?${text}` : "/";
}

export function hasQuery(state) {
  return Boolean(state.q.trim() || state.like.length || state.image || state.positive.length);
}

export function hasFilters(state) {
  return Boolean(state.collections.length || state.datetime || state.bbox
    || Object.values(state.filters).some((v) => v && v.length));
}

// CQL2 text of the filter fields given several values (one value goes as the API's shortcut parameter of the
// same name), with each URL key mapped to the queryable it names (`names`: key -> name)
export function cql2(state, names) {
  const quote = (value) => `'${String(value).replace(/'/g, "''")}'`;
  const parts = [];
  for (const [key, values] of Object.entries(state.filters)) {
    if (!values || values.length < 2) continue;
    const name = names[key] || key;
    const ident = /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : `"${name}"`;
    parts.push(values.length === 1 ? `${ident} = ${quote(values[0])}`
      : `${ident} IN (${values.map(quote).join(", ")})`);
  }
  return parts.join(" AND ");
}

// The STAC + similarity parameters of a search, as the JSON body of POST /search (feedback marks are added
// by the caller: the API takes them only with at least one positive, and then without like, not or image).
export function searchBody(state, names) {
  const body = { limit: state.limit };
  if (state.q.trim()) body.q = state.q.trim();
  if (state.like.length) body.like = state.like.map(Number);
  if (state.not.length) body.not = state.not;
  if (state.collections.length) body.collections = state.collections;
  if (state.datetime) body.datetime = state.datetime;
  if (state.bbox) body.bbox = state.bbox;
  for (const [key, values] of Object.entries(state.filters)) if (values && values.length === 1) body[key] = values[0];
  const filter = cql2(state, names);
  if (filter) {
    body.filter = filter;
    body["filter-lang"] = "cql2-text";
  }
  return body;
}

// The same parameters as the query string of GET /search.
export function searchQuery(state, names) {
  const body = searchBody(state, names);
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(body)) {
    if (key === "not") value.forEach((text) => params.append("not", text));
    else params.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  return params;
}

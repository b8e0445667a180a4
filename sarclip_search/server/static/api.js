// Calls to the sarsearch API (same origin only). Errors become ApiError with the API's one-line message.

export class ApiError extends Error {
  constructor(message, fix = "", status = 0) {
    super(message);
    this.fix = fix;
    this.status = status;
  }
}

async function send(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...options });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError("the server did not answer", "check that `sarsearch serve` is still running, then reload");
  }
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (payload && payload.error) throw new ApiError(String(payload.error), String(payload.fix || ""), response.status);
    throw new ApiError(`${response.status} ${response.statusText || "error"} from ${new URL(url, location.href).pathname}`,
      "", response.status);
  }
  if (payload === null) throw new ApiError(`${new URL(url, location.href).pathname} did not answer JSON`);
  return payload;
}

export function getJSON(path, params, signal) {
  const query = params && params.toString();
  return send(query ? `${path}?${query}` : path, { signal });
}

export function postJSON(path, body, signal) {
  return send(path, {
    method: "POST", signal, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
}

// multipart POST /search: the file in `image`, the other parameters as JSON in the form field `search`
export function postImage(path, file, body, signal) {
  const form = new FormData();
  form.append("image", file, file.name || "image");
  form.append("search", JSON.stringify(body));
  return send(path, { method: "POST", signal, body: form });
}

// Follow a STAC `next` link: a GET href, or a POST with the body the link carries.
export function follow(link, signal) {
  if (new URL(link.href, location.href).origin !== location.origin) {
    throw new ApiError("the next page link points to another host; not followed");
  }
  if ((link.method || "GET").toUpperCase() === "POST") return postJSON(link.href, link.body || {}, signal);
  return send(link.href, { signal });
}

export function linkOf(object, rel) {
  return (object.links || []).find((link) => link.rel === rel) || null;
}

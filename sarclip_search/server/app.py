"""The ASGI app of `sarsearch serve`: FastAPI routes over the query engine (API contract: docs/server.md).

FastAPI (on Starlette) because it is a maintained ASGI stack that writes the OpenAPI description from
the routes, has a test client, and reads multipart uploads through python-multipart; uvicorn runs it.

Every route only translates: it parses and checks the request (`params`, `cql`), leases the current
generation's engines for its whole life (`engines.Generations.lease`: one request, one generation), calls
the engine's public API, and serializes STAC items (`items`) or PNGs (`images`). Errors are 4xx JSON
``{"error", "fix"}`` (`errors`), never a traceback. `Guard` checks the token and the size of request
bodies before any route runs.
"""

from __future__ import annotations

import hmac
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sarclip_search._fs import bytes_sha256
from sarclip_search.errors import RasterError, SarclipError
from sarclip_search.index.errors import VectorIndexError
from sarclip_search.query.engine import MAX_K, Engine, Hit, given_text
from sarclip_search.server import images, items, locating, params
from sarclip_search.server.engines import ENGINES_PER_GENERATION, Snapshot, open_generations
from sarclip_search.server.errors import ApiError, api_error
from sarclip_search.server.serve import host_name, is_loopback
from sarclip_search.store.filters import Filters

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # an uploaded query image
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 256 * 1024  # a request body: the image plus multipart framing and fields
UPLOAD_CACHE_BYTES = 64 * 1024 * 1024  # uploaded images kept for paging (`image_id`)
TOKEN_COOKIE = "sarsearch_token"
GEOJSON = "application/geo+json"
GENERATION_HEADER = "x-sarsearch-generation"
# first bytes of the image formats a query image may have
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"II*\x00": ".tif", b"MM\x00*": ".tif",
               b"II+\x00": ".tif", b"MM\x00+": ".tif"}
JSON_TYPES = {"string": ("VARCHAR", "TEXT", "UUID", "JSON"), "integer": ("BIGINT", "INTEGER", "SMALLINT", "TINYINT",
              "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT"), "number": ("DOUBLE", "FLOAT", "DECIMAL", "REAL"),
              "boolean": ("BOOLEAN",)}


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


# ---------------------------------------------------------------- token and body size (ASGI middleware)


class Guard:
    """Before any route: the bearer token (when the server has one) and the request body size.

    With a token, every request needs ``Authorization: Bearer T`` or the cookie `TOKEN_COOKIE`; a visit
    to ``/?token=T`` sets the cookie and redirects to the same page without the token in its URL. A body
    larger than `max_body` is refused with 413, by its Content-Length or while it is read.
    """

    def __init__(self, app: Any, token: str | None, max_body: int, loopback_only: bool = False) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback_only and not is_loopback(host_name(headers.get("host", ""))):
            # a page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends its own name
            return await error_response(ApiError(
                403, f"Host {headers.get('host', '')!r} is not a loopback name of this server",
                "open the page at http://127.0.0.1:PORT/ or http://localhost:PORT/, or serve with --token"))(
                scope, receive, send)
        if self.token is not None and not self._authorized(headers):
            response = self._first_visit(scope) or error_response(ApiError(
                401, "missing or wrong token: this server needs its token",
                "send `Authorization: Bearer <token>`, or open /?token=<token> once in the browser"),
                {"www-authenticate": "Bearer"})
            return await response(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await error_response(self._too_large())(scope, receive, send)
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large()
            return message

        return await self.app(scope, counted, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.max_body // (1024 * 1024)} MB",
                        f"send an image of at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB (crop or downscale it)")

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no cookie
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.token.encode())

    def _first_visit(self, scope: dict[str, Any]) -> Response | None:
        """`/?token=T` with the right token: set the cookie and redirect to the page without the token."""
        assert self.token is not None
        if scope["path"] != "/" or scope["method"] != "GET":
            return None
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [value for name, value in pairs if name == "token"]
        if len(given) != 1 or not hmac.compare_digest(given[0].encode(), self.token.encode()):
            return None
        rest = urlencode([(name, value) for name, value in pairs if name != "token"])
        response = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303)
        response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response


# ---------------------------------------------------------------- uploaded query images


class Uploads:
    """Uploaded query images by id (sha256 prefix), kept in memory (LRU, `UPLOAD_CACHE_BYTES`) so that the
    next pages of an image search can name the image instead of sending it again."""

    def __init__(self, max_bytes: int = UPLOAD_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes) -> str:
        image_suffix(data)
        image_id = bytes_sha256(data)[:32]
        with self._lock:
            self._images[image_id] = data
            self._images.move_to_end(image_id)
            while sum(len(d) for d in self._images.values()) > self.max_bytes and len(self._images) > 1:
                self._images.popitem(last=False)
        return image_id

    def get(self, image_id: str) -> bytes:
        with self._lock:
            data = self._images.get(image_id)
        if data is None:
            raise ApiError(400, f"image_id {image_id[:40]!r}: no such uploaded image (the server keeps the latest ones)",
                           "upload the image again (multipart POST /search with the file in `image`)")
        return data


def image_suffix(data: bytes) -> str:
    """The file suffix of an uploaded image by its first bytes; ApiError 400 when it is no PNG, JPEG or TIFF."""
    for magic, suffix in IMAGE_MAGIC.items():
        if data.startswith(magic):
            return suffix
    raise ApiError(400, "image: the upload is not a PNG, JPEG or TIFF image", "upload an image file (GeoTIFF, TIFF, PNG or JPEG)")


@contextmanager
def image_file(data: bytes) -> Iterator[str]:
    """The uploaded image as a temporary file (the engine reads images from files), removed afterwards."""
    handle, path = tempfile.mkstemp(prefix="sarsearch-upload-", suffix=image_suffix(data))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------- the app


def create_app(db: str | Path | None = None, *, token: str | None = None,
               engines_per_generation: int = ENGINES_PER_GENERATION, max_body: int = MAX_BODY_BYTES,
               thumbnail_cache_bytes: int = images.CACHE_BYTES, loopback_only: bool = False) -> FastAPI:
    """The API over the index directory `db` (default ./.sarsearch), opened now (SarclipError if it cannot be).

    `token`: when set, every route needs it (see `Guard`). `loopback_only`: answer only requests whose Host is
    a loopback name or address (`sarsearch serve` without a token). The engines are closed when the app shuts down.
    """
    generations = open_generations(db, engines_per_generation=engines_per_generation)  # several dbs: ids NAME:ID
    thumbnails = images.PngCache(thumbnail_cache_bytes)
    uploads = Uploads()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        generations.close()

    app = FastAPI(title="sarsearch", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search SAR imagery by text, by example image and by metadata: STAC item search plus "
                              "similarity (docs/server.md).")
    app.state.generations = generations
    app.state.thumbnails = thumbnails
    app.state.uploads = uploads
    replacements = {form: "the index" for root in generations.roots for form in (str(root.resolve()), str(root))}

    def library_error(exc: SarclipError | VectorIndexError, extra: dict[str, str] | None = None) -> ApiError:
        return api_error(exc, {**replacements, **(extra or {})})  # type: ignore[arg-type]

    # ------------------------------------------------------------ errors: one line of JSON, never a traceback

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(SarclipError)
    async def _library_error(_: Request, exc: SarclipError) -> JSONResponse:
        return error_response(library_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")) or "request"
        got = first.get("input")
        shown = f" (got {str(got)[:80]!r})" if isinstance(got, (str, int, float)) else ""
        return error_response(ApiError(400, f"{where}: {first.get('msg', 'invalid')}{shown}",
                                       "see /openapi.json for the parameters"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error = ApiError(404, f"no route {request.method} {request.url.path[:200]}", "see /openapi.json for the routes")
        elif exc.status_code == 405:
            error = ApiError(405, f"{request.method} is not allowed on {request.url.path[:200]}", "see /openapi.json")
        else:
            error = ApiError(exc.status_code, str(exc.detail), "see /openapi.json")
        return error_response(error)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details",
                             "fix": "report it with the request that caused it"}, status_code=500)

    # ------------------------------------------------------------ helpers shared by the routes

    def answer(payload: dict[str, Any], snapshot: Snapshot, media_type: str = "application/json") -> JSONResponse:
        return JSONResponse(payload, media_type=media_type, headers={GENERATION_HEADER: snapshot.name})

    def datasets(snapshot: Snapshot, engine: Engine) -> list[str]:
        return snapshot.cached("datasets", lambda: [str(v) for v, _ in engine.catalog.values("dataset")]
                               if "dataset" in engine.catalog.columns() else [])

    def search(body: params.SearchBody, image: bytes | None, next_link: Callable[[str, str | None], dict[str, Any]],
               feedback_only: bool = False) -> JSONResponse:
        offset = params.decode_token(body.token)
        limit = min(body.limit, params.MAX_LIMIT)
        k = min(MAX_K, offset + limit)
        image_id = None
        if image is not None:
            image_id = uploads.add(image)
        elif body.image_id:
            image, image_id = uploads.get(body.image_id), body.image_id
        text = given_text(body.q)
        marks = bool(body.positive or body.negative)
        if feedback_only and not body.positive:
            raise ApiError(400, "feedback needs at least one positive tile id", 'send e.g. {"positive": [12], "negative": [40]}')
        if marks and not body.positive:
            raise ApiError(400, "negative is given without positive", "mark at least one tile positive too")
        if marks and (body.like or image is not None or body.not_ or body.fusion != "blend"):
            raise ApiError(400, "feedback (positive/negative) takes q and filters, not like, image, not or fusion",
                           "search with like/image first, then send positive/negative ids of its results")
        similarity = marks or bool(text or body.like or image is not None)
        if body.not_ and not similarity:
            raise ApiError(400, "not is given without q, like or image", "add what to look for")
        with generations.lease() as snapshot, snapshot.engine() as engine:
            filters = params.build_filters(body, engine.catalog.columns(), lambda: datasets(snapshot, engine))
            matched = None
            if similarity:
                hits = (engine.feedback(body.positive, body.negative, text=text, filters=filters, k=k, dedup=body.dedup)
                        if marks else query(engine, body, text, image, filters, k))
                page, more = hits[offset:offset + limit], len(hits) == k and k < MAX_K
            else:  # metadata only (STAC item search): in tile id order
                ids = engine.filter_ids(filters)
                ids = engine.catalog.tile_ids() if ids is None else ids
                matched = len(ids)
                page, more = items.hits_by_id(engine, ids[offset:offset + limit].tolist()), offset + limit < matched
        features = [items.item(hit, offset + rank, scored=similarity) for rank, hit in enumerate(page, start=1)]
        links = [{"rel": "root", "href": "/", "type": "text/html"}]
        if more:
            links.append(next_link(params.encode_token(offset + limit), image_id))
        payload: dict[str, Any] = {"type": "FeatureCollection", "features": features, "numberReturned": len(features)}
        if matched is not None:
            payload["numberMatched"] = matched
        payload.update({"links": links, "sarsearch:generation": snapshot.name})
        if image_id is not None:
            payload["sarsearch:image_id"] = image_id
        return answer(payload, snapshot, GEOJSON)

    def query(engine: Engine, body: params.SearchBody, text: str | None, image: bytes | None,
              filters: Filters | None, k: int) -> list[Hit]:
        if image is None:
            return engine.query(text, like=body.like, negative_texts=body.not_, filters=filters, k=k, alpha=body.alpha,
                                fusion=body.fusion, dedup=body.dedup)
        with image_file(image) as path:
            try:
                return engine.query(text, [path], like=body.like, negative_texts=body.not_, filters=filters, k=k,
                                    alpha=body.alpha, fusion=body.fusion, dedup=body.dedup)
            except SarclipError as exc:
                raise library_error(exc, {path: "the uploaded image"}) from None

    def get_next(request: Request) -> Callable[[str, str | None], dict[str, Any]]:
        kept = [(name, value) for name, value in request.query_params.multi_items() if name != "token"]

        def link(token: str, _: str | None) -> dict[str, Any]:
            return {"rel": "next", "href": "/search?" + urlencode([*kept, ("token", token)]), "type": GEOJSON,
                    "method": "GET"}
        return link

    def post_next(body: params.SearchBody, path: str = "/search") -> Callable[[str, str | None], dict[str, Any]]:
        def link(token: str, image_id: str | None) -> dict[str, Any]:
            sent = body.model_dump(by_alias=True, exclude_unset=True, exclude={"token"})
            if image_id is not None:
                sent["image_id"] = image_id
            return {"rel": "next", "href": path, "type": GEOJSON, "method": "POST", "body": {**sent, "token": token}}
        return link

    # ------------------------------------------------------------ routes

    @app.get("/healthz", summary="Liveness and the generation served")
    def healthz() -> JSONResponse:
        with generations.lease() as snapshot:
            return answer({"ok": True, "generation": snapshot.name}, snapshot)

    @app.get("/info", summary="What is indexed (as `sarsearch info --json`), without server paths")
    def info() -> JSONResponse:
        with generations.lease() as snapshot:
            def make() -> dict[str, Any]:
                with snapshot.engine() as engine:
                    summary = engine.summary()
                summary.pop("db", None)
                summary.pop("archive_root", None)
                model = dict(summary.get("model") or {})
                if model.get("checkpoint_path"):
                    model["checkpoint_path"] = Path(str(model["checkpoint_path"])).name
                summary["model"] = model
                return summary
            return answer({**snapshot.cached("info", make), "generation": snapshot.name}, snapshot)

    @app.get("/queryables", summary="JSON Schema of the properties a filter may use")
    def queryables() -> JSONResponse:
        with generations.lease() as snapshot:
            def make() -> dict[str, Any]:
                with snapshot.engine() as engine:
                    infos = engine.catalog.column_info()
                properties = {}
                for column in infos:
                    base = column.type.split("(")[0].upper()
                    kind = next((name for name, types in JSON_TYPES.items() if base in types), "string")
                    schema: dict[str, Any] = {"title": column.name, "type": kind, "x-tiles": column.tiles}
                    if base.startswith("TIMESTAMP") or base == "DATE":
                        schema["format"] = "date-time" if base.startswith("TIMESTAMP") else "date"
                    if column.values is not None:
                        schema["enum"] = [value for value, _ in column.values]
                        schema["x-counts"] = {str(value): count for value, count in column.values}
                    if column.minimum is not None:
                        schema["minimum" if kind in ("integer", "number") else "x-minimum"] = column.minimum
                    if column.maximum is not None:
                        schema["maximum" if kind in ("integer", "number") else "x-maximum"] = column.maximum
                    properties[column.name] = schema
                return {"$schema": "https://json-schema.org/draft/2019-09/schema", "$id": "/queryables",
                        "type": "object", "title": "sarsearch queryables",
                        "description": "catalog columns a filter (CQL2) may name; `collection` is `dataset`, `id` the tile id",
                        "properties": properties, "additionalProperties": False}
            return answer(snapshot.cached("queryables", make), snapshot, "application/schema+json")

    @app.get("/search", summary="STAC item search + similarity (GET)", response_class=JSONResponse)
    def get_search(
        request: Request,
        q: Annotated[str | None, Query(description="text query")] = None,
        like: Annotated[str | None, Query(description="tile ids, comma-separated")] = None,
        not_: Annotated[list[str] | None, Query(alias="not", description="texts to push away from (repeatable)")] = None,
        fusion: Annotated[str | None, Query(description="blend or rrf")] = None,
        alpha: Annotated[str | None, Query(description="text weight against examples, 0..1")] = None,
        dedup: Annotated[str | None, Query(description="true: best of overlapping tiles of a scene")] = None,
        positive: Annotated[str | None, Query(description="feedback: relevant tile ids, comma-separated")] = None,
        negative: Annotated[str | None, Query(description="feedback: irrelevant tile ids, comma-separated")] = None,
        image_id: Annotated[str | None, Query(description="an image uploaded earlier")] = None,
        bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat")] = None,
        intersects: Annotated[str | None, Query(description="GeoJSON geometry (JSON)")] = None,
        datetime: Annotated[str | None, Query(description="RFC 3339 instant or interval")] = None,
        limit: Annotated[str | None, Query(description=f"results per page, default {params.DEFAULT_LIMIT}, max {params.MAX_LIMIT}")] = None,
        collections: Annotated[str | None, Query(description="datasets, comma-separated")] = None,
        ids: Annotated[str | None, Query(description="item ids, comma-separated")] = None,
        filter: Annotated[str | None, Query(description="CQL2 text filter")] = None,
        filter_lang: Annotated[str | None, Query(alias="filter-lang", description="cql2-text (default)")] = None,
        token: Annotated[str | None, Query(description="paging token from a next link")] = None,
        label: Annotated[str | None, Query()] = None,
        split: Annotated[str | None, Query()] = None,
        sensor: Annotated[str | None, Query()] = None,
        polarization: Annotated[str | None, Query()] = None,
    ) -> JSONResponse:
        # the parameters above document the route (OpenAPI); parsing reads the query string itself, so GET
        # and POST share one validation (params.SearchBody)
        body = params.from_query(request.query_params.multi_items())
        return search(body, None, get_next(request))

    @app.post("/search", summary="STAC item search + similarity (POST: JSON, or multipart with an image)",
              response_class=JSONResponse, openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": params.SearchBody.model_json_schema(by_alias=True)},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "image": {"type": "string", "format": "binary"},
                      "search": {"type": "string", "description": "the JSON parameters"}}}}}}})
    async def post_search(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        image = None
        if content_type.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=1024 * 1024)
            except ApiError:
                raise
            except Exception as exc:  # noqa: BLE001 - python-multipart / Starlette parse errors
                raise ApiError(400, f"malformed multipart body ({str(exc)[:100]})",
                               "send the image in the form field `image` and the parameters as JSON in `search`") from None
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "multipart search without an `image` file", "send the image in the form field `image`")
            image = await upload.read()
            if len(image) > MAX_UPLOAD_BYTES:
                raise ApiError(413, f"image: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", "crop or downscale it")
            image_suffix(image)
            fields = form.get("search")
            body = params.parse_json_body(fields.encode() if isinstance(fields, str) else b"")
        else:
            body = params.parse_json_body(await request.body())
        return await run_in_threadpool(search, body, image, post_next(body))

    @app.post("/feedback", summary="Relevance feedback: positive and negative tile ids (+ q, filters)",
              response_class=JSONResponse,
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": params.FeedbackBody.model_json_schema(by_alias=True)}}}})
    async def feedback(request: Request) -> JSONResponse:
        body = params.parse_json_body(await request.body(), params.FeedbackBody)
        return await run_in_threadpool(search, body, None, post_next(body, "/feedback"), True)

    def one_hit(engine: Engine, item_id: str) -> Hit:
        found = items.hits_by_id(engine, params.item_ids([item_id], "id"))
        if not found:
            raise ApiError(404, f"no item {item_id!r} in this index", "use the `id` of an item from an earlier result")
        return found[0]

    @app.get("/items/{item_id}", summary="One item (tile) as a STAC Item", response_class=JSONResponse)
    def get_item(item_id: Annotated[str, PathParam(description="tile id")]) -> JSONResponse:
        with generations.lease() as snapshot:
            with snapshot.engine() as engine:
                hit = one_hit(engine, item_id)
            return answer(items.item(hit, 1, scored=False), snapshot, GEOJSON)

    def png_response(snapshot: Snapshot, key: tuple, make: Callable[[], bytes]) -> Response:
        data, cached = thumbnails.get_or_make(key, make)
        return Response(data, media_type="image/png", headers={
            GENERATION_HEADER: snapshot.name, "x-sarsearch-cache": "hit" if cached else "miss",
            "cache-control": "private, max-age=3600"})

    def unreadable(hit: Hit, exc: RasterError) -> ApiError:
        reason = exc.reason.partition(";")[0]
        return ApiError(404, f"tile {hit.id}: its scene file {hit.path} cannot be read ({reason})",
                        "restore the file in the archive, or re-run `sarsearch index` to drop it")

    @app.get("/items/{item_id}/thumbnail.png", summary="The tile's quicklook (PNG, cached)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def thumbnail(item_id: str, size: Annotated[int, Query(ge=images.MIN_SIZE, le=images.MAX_SIZE)] = images.THUMBNAIL_SIZE
                  ) -> Response:
        tile = params.item_ids([item_id], "id")[0]
        with generations.lease() as snapshot:
            def make() -> bytes:  # on a cache miss only: no engine is borrowed for a cached thumbnail
                with snapshot.engine() as engine:
                    hit = one_hit(engine, item_id)
                try:
                    return images.tile_png(hit, size)
                except RasterError as exc:
                    raise unreadable(hit, exc) from None
            return png_response(snapshot, (snapshot.name, "tile", tile, size), make)

    @app.get("/scenes/{scene_id}/quicklook.png", summary="The scene's quicklook (PNG, cached), a tile outlined",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def scene_quicklook(scene_id: str,
                        outline: Annotated[str | None, Query(description="tile id to outline")] = None,
                        size: Annotated[int, Query(ge=images.MIN_SIZE, le=images.MAX_SIZE)] = images.QUICKLOOK_SIZE
                        ) -> Response:
        scene = params.item_ids([scene_id], "scene id")[0]
        with generations.lease() as snapshot:
            with snapshot.engine() as engine:
                tile_ids = engine.scene_tile_ids(scene)
                if not tile_ids:
                    raise ApiError(404, f"no scene {scene_id!r} in this index", "use `sarsearch:scene_id` of an item")
                first = items.hits_by_id(engine, tile_ids[:1])[0]
                marked = one_hit(engine, outline) if outline is not None else None
            if marked is not None and marked.scene_id != scene:
                raise ApiError(400, f"outline: tile {marked.id} is not a tile of scene {scene}",
                               "outline a tile of this scene (its items' `sarsearch:scene_id`)")

            def make() -> bytes:
                try:
                    return images.scene_png(first, size, marked)
                except RasterError as exc:
                    raise unreadable(first, exc) from None
            key = (snapshot.name, "scene", scene, marked.id if marked is not None else None, size)
            return png_response(snapshot, key, make)

    def scene_tile(engine: Engine, scene_id: str) -> Hit:
        scene = params.item_ids([scene_id], "scene id")[0]
        tile_ids = engine.scene_tile_ids(scene)
        if not tile_ids:
            raise ApiError(404, f"no scene {scene_id!r} in this index", "use `sarsearch:scene_id` of an item")
        if not isinstance(engine, Engine):  # several indexes searched as one: no per-index encoder / cache here
            raise ApiError(400, "locate is served for one index at a time", "serve the scene's index alone (one --db)")
        return items.hits_by_id(engine, tile_ids[:1])[0]

    def located(snapshot: Snapshot, scene_id: str, q: str | None) -> tuple[Hit, str, Any]:
        phrase = locating.checked_phrase(q)
        if phrase is None:
            raise ApiError(400, "q: give the phrase to locate (1 to 500 characters, not blank)",
                           "add ?q=ship to the address")
        with snapshot.engine() as engine:
            tile = scene_tile(engine, scene_id)
            try:
                return tile, phrase, locating.locate_scene(engine, tile, phrase)
            except RasterError as exc:
                raise unreadable(tile, exc) from None

    @app.get("/scenes/{scene_id}/locate.png", summary="Where a phrase matches in the scene: heat over its quicklook",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def scene_locate_png(scene_id: str, q: Annotated[str | None, Query(description="the phrase to locate")] = None,
                         size: Annotated[int, Query(ge=images.MIN_SIZE, le=images.MAX_SIZE)] = images.QUICKLOOK_SIZE
                         ) -> Response:
        with generations.lease() as snapshot:
            def make() -> bytes:
                _, _, result = located(snapshot, scene_id, q)
                return locating.overlay_png(result, size)
            return png_response(snapshot, (snapshot.name, "locate", scene_id, q, size), make)

    @app.get("/scenes/{scene_id}/locate.json", summary="Where a phrase matches in the scene: the peaks as GeoJSON boxes")
    def scene_locate_json(scene_id: str, q: Annotated[str | None, Query(description="the phrase to locate")] = None
                          ) -> JSONResponse:
        with generations.lease() as snapshot:
            tile, phrase, result = located(snapshot, scene_id, q)
            return answer(locating.peaks_json(result, tile.scene_id, phrase), snapshot, GEOJSON)

    @app.get("/", summary="The web page", response_class=FileResponse, include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Guard, token=token, max_body=max_body, loopback_only=loopback_only)
    return app


"""`sarsearch serve`: the HTTP API (STAC item search + similarity) and the web page, over one index directory.

    from sarclip_search.server.app import create_app
    app = create_app(".sarsearch")          # an ASGI app (FastAPI); `sarsearch serve` runs it with uvicorn

The routes only translate (stac-fastapi style): they parse and validate a request (`params`, `cql`), call
the query `Engine` of the committed generation (`engines`), and serialize its hits as STAC items
(`items`, which reuses `query.export`) or PNGs (`images`). Nothing here writes to the index; the server
follows `sarsearch index` runs by re-reading CURRENT at most once a second. Core layer: imports query/,
store/, model/ and ingest/ only (never training/, never torch when the index holds its ONNX encoders).
"""

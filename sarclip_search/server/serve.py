"""Run the API with uvicorn: `sarsearch serve` calls `serve`.

Binding anything but a loopback address needs a token (the index is then reachable from other machines).
The socket is bound here first, so a busy port or a wrong address is one InputError rather than a uvicorn
log line. Ctrl-C (SIGINT) or SIGTERM stops uvicorn gracefully: running requests finish, the engines close.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from sarclip_search.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); any other name or address is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name or address of an HTTP Host header, without its port ("[::1]:8765" -> "::1")."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def check_binding(host: str, token: str | None) -> None:
    """InputError when `host` is not loopback and no (non-blank) token protects it."""
    if token is not None and not token.strip():
        raise InputError("--token is empty; give a secret (e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if not is_loopback(host) and token is None:
        raise InputError(f"--host {host} is reachable from other machines; add --token SECRET (or set $SARSEARCH_TOKEN), "
                         f"or serve on --host {DEFAULT_HOST}")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; InputError when it cannot be had (port in use, unknown address)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: not a TCP port; give 1-65535 (default {DEFAULT_PORT})")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        # with its protocol (IPPROTO_TCP), so that asyncio sets TCP_NODELAY on the connections it accepts: a proto
        # of 0 leaves Nagle on, and every keep-alive response waits ~40 ms for the client's delayed ACK
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror or exc}); "
                         f"give an address such as {DEFAULT_HOST}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                         "choose another --port, or stop what uses it") from None
    sock.set_inheritable(True)
    return sock


def serve(db: str | Path | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, *,
          access_log: bool = False, on_ready: Callable[[str, str], None] | None = None) -> None:
    """Serve the index directory `db` until Ctrl-C. `on_ready(url, generation)` is called once listening.

    InputError for a refused binding (see `check_binding`, `bind`); what `Engine.open` raises when there is
    no index to serve.
    """
    import uvicorn

    from sarclip_search.ingest.raster import georeferencing_warnings_ignored
    from sarclip_search.server.app import create_app

    check_binding(host, token)
    # opens the index first: a missing index is an error before binding; without a token only loopback Hosts
    app = create_app(db, token=token, loopback_only=token is None)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(url, app.state.generations.current_name)
    try:
        with georeferencing_warnings_ignored():  # requests read rasters in several threads
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, after its graceful shutdown
        pass
    finally:
        sock.close()
        app.state.generations.close()

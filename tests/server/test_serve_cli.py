"""`sarsearch serve`: refused bindings are one-line errors (exit 1); a real server answers over HTTP, needs its
token, stops cleanly on Ctrl-C, and never imports torch when the index has its ONNX encoders."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from helpers import SHIP_PNG, assert_user_error, run


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_a_non_loopback_bind_without_a_token_is_refused(indexed_db, host, monkeypatch):
    monkeypatch.delenv("SARSEARCH_TOKEN", raising=False)
    assert_user_error(run("serve", "--db", indexed_db[0], "--host", host), f"--host {host}", "--token")


def test_a_blank_token_is_refused(indexed_db):
    assert_user_error(run("serve", "--db", indexed_db[0], "--host", "0.0.0.0", "--token", " "), "--token")


def test_serving_no_index_is_refused(tmp_path):
    assert_user_error(run("serve", "--db", tmp_path / "none"), "no index", "sarsearch index")


def test_a_busy_port_is_refused(indexed_db):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_user_error(run("serve", "--db", indexed_db[0], "--port", port), f"--port {port}", "another --port")


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_answers_needs_its_token_and_stops_on_ctrl_c(indexed_db):
    db, _, _ = indexed_db
    env = {**os.environ, "SARSEARCH_TOKEN": "tok-123", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, "-m", "sarclip_search", "serve", "--db", str(db), "--port", "0"],
                               stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    try:
        # "serving DB (gen-...) at http://127.0.0.1:PORT/?token=…  (Ctrl-C stops)", after any warning a library prints
        line = ""
        for _ in range(50):
            line = process.stderr.readline()
            if "serving" in line or not line:
                break
        assert "serving" in line and "tok-123" not in line, line
        url = line.split(" at ")[1].split("?")[0].split()[0]
        assert _get(url + "healthz")[0] == 401
        status, body = _get(url + "search?q=ship&limit=2", "tok-123")
        assert status == 200 and json.loads(body)["numberReturned"] == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "stopped" in rest and "Traceback" not in rest, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_server_imports_no_torch(indexed_db):
    db, archive, _ = indexed_db
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from sarclip_search.server.app import create_app\n"
        f"client = TestClient(create_app({str(db)!r}))\n"
        "assert client.get('/search', params={'q': 'ship', 'limit': 3}).status_code == 200\n"
        f"image = open({str(archive / SHIP_PNG)!r}, 'rb').read()\n"
        "assert client.post('/search', files={'image': ('a.png', image, 'image/png')}).status_code == 200\n"
        "assert client.get('/items/1/thumbnail.png').status_code == 200\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'open_clip', 'transformers'))\n"
        "assert not heavy, heavy[:5]\n"
        "assert not [m for m in sys.modules if m.startswith(('sarclip_search.training', 'sarclip_search.cli'))]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(("host", "status"), [("127.0.0.1:8765", 200), ("localhost:8765", 200), ("[::1]:8765", 200),
                                              ("evil.example:8765", 403), ("192.168.1.5", 403)])
def test_without_a_token_only_loopback_host_names_are_answered(indexed_db, host, status):
    """DNS rebinding: another site's page re-pointed at 127.0.0.1 sends its own name as Host and is refused."""
    from fastapi.testclient import TestClient

    from sarclip_search.server.app import create_app

    db, _, _ = indexed_db
    with TestClient(create_app(db, loopback_only=True)) as client:
        response = client.get("/healthz", headers={"host": host})
    assert response.status_code == status, response.text
    if status == 403:
        body = response.json()
        assert set(body) == {"error", "fix"} and "Host" in body["error"] and "\n" not in body["error"]

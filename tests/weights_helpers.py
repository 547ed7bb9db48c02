"""Helpers for the weights tests: a local HTTP server, a clean cache, timm keys.

The server on 127.0.0.1 stands in for every remote host; no test touches
the internet.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import reference_path
from rexnet_plugin.weights import download


class FileServer:
    """Serves ``files[path] = bytes``; ``truncate`` paths send half the bytes
    with the full Content-Length, then close. Counts hits per path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.hits: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                server.hits[path] += 1
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "File not found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if path in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, path: str, data: bytes | Path) -> str:
        self.files[path] = data.read_bytes() if isinstance(data, Path) else data
        return self.base + path

    def reset(self):
        self.files.clear()
        self.truncate.clear()
        self.hits.clear()


@pytest.fixture(scope="session")
def _server():
    server = FileServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture
def server(_server):
    _server.reset()
    return _server


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Any request to a host other than 127.0.0.1 fails the test: no test may
    depend on the internet, even by mistake."""
    import urllib.request
    real_urlopen = urllib.request.urlopen

    def urlopen(request, *args, **kwargs):
        url = getattr(request, "full_url", request)
        assert url.startswith("http://127.0.0.1:"), f"a test tried to reach {url}"
        return real_urlopen(request, *args, **kwargs)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; no mirror unless a test sets one."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(download.CACHE_ENV, str(folder))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    return folder


def cache_files(folder: Path) -> set[str]:
    """Every file in the cache, hidden temp files included."""
    return {p.name for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def closed_port() -> int:
    """A local port nothing listens on (connection refused at once)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def official_to_timm(state: dict) -> dict:
    """Official V1 names -> timm names, by the table in shared/reference
    (made from timm 1.0.31's rexnet_100; the other V1 widths use the same keys)."""
    table = json.loads(reference_path("timm_rexnet_100_keys.json").read_text())["mapping"]
    timm = {}
    for timm_key, official_key in table.items():
        value = state[official_key]
        if timm_key == "head.fc.weight":
            value = value.reshape(value.shape[:2])
        timm[timm_key] = value
        if timm_key.endswith(".running_var"):  # timm files carry the counters too
            timm[timm_key.replace("running_var", "num_batches_tracked")] = np.array(7, np.int64)
    return timm


def state_of(model) -> dict:
    return {k: v.numpy() for k, v in model.state_dict().items()}

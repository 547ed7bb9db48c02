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
    """Serves ``files[path] = bytes``. Per path, a test can also set:

    ``truncate``: send half the bytes with the full Content-Length, then close;
    ``headers[path]``: extra response headers (checksums, Content-Disposition);
    ``redirects[path] = (target path or URL, headers)``: answer 302 to the target;
    ``no_length``: send no Content-Length (the body ends when the connection closes);
    ``trickle[path] = (bytes, seconds)``: send that many bytes every that many seconds;
    ``stall[path] = n``: send n bytes, then hang until ``release()`` (at most 60 s).

    Counts hits per path.
    """

    STALL_LIMIT_SECONDS = 60

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.headers: dict[str, dict] = {}
        self.redirects: dict[str, tuple[str, dict]] = {}
        self.trickle: dict[str, tuple[int, float]] = {}
        self.stall: dict[str, int] = {}
        self.no_length: set[str] = set()
        self.released = threading.Event()
        self.hits: Counter = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                server.hits[path] += 1
                if path in server.redirects:
                    target, headers = server.redirects[path]
                    self.send_response(302)
                    self.send_header("Location", target if "://" in target
                                     else server.base + target)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "File not found")
                    return
                self.send_response(200)
                if path not in server.no_length:
                    self.send_header("Content-Length", str(len(body)))
                for name, value in server.headers.get(path, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self._send_body(path, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as some tests expect

            def _send_body(self, path, body):
                if path in server.trickle:
                    step, seconds = server.trickle[path]
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start:start + step])
                        self.wfile.flush()
                        if server.released.wait(seconds):
                            return
                elif path in server.stall:
                    self.wfile.write(body[: server.stall[path]])
                    self.wfile.flush()
                    server.released.wait(server.STALL_LIMIT_SECONDS)
                else:
                    self.wfile.write(body[: len(body) // 2] if path in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, path: str, data: bytes | Path, headers: dict | None = None) -> str:
        self.files[path] = data.read_bytes() if isinstance(data, Path) else data
        if headers:
            self.headers[path] = headers
        return self.base + path

    def release(self):
        """End every trickling or stalled response."""
        self.released.set()

    def reset(self):
        self.release()
        for table in (self.files, self.truncate, self.headers, self.redirects, self.trickle,
                      self.stall, self.no_length, self.hits):
            table.clear()
        self.released = threading.Event()


@pytest.fixture(scope="session")
def _server():
    server = FileServer()
    yield server
    server.release()
    server.httpd.shutdown()


@pytest.fixture
def server(_server):
    _server.reset()
    yield _server
    _server.release()  # no handler thread outlives its test


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Any request to a host other than 127.0.0.1 fails the test: no test may
    depend on the internet, even by mistake (redirects included)."""
    import urllib.request
    real_open = urllib.request.OpenerDirector.open

    def open_local(self, request, *args, **kwargs):
        url = getattr(request, "full_url", request)
        assert url.startswith("http://127.0.0.1:"), f"a test tried to reach {url}"
        return real_open(self, request, *args, **kwargs)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", open_local)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; no mirror unless a test sets one."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(download.CACHE_ENV, str(folder))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    return folder


def cache_files(folder: Path) -> set[str]:
    """Every file in the cache, hidden temp files included; not the manifest of
    first downloads (tests/test_security.py checks it)."""
    if not folder.exists():
        return set()
    return {p.name for p in folder.rglob("*")
            if p.is_file() and p.name != download.MANIFEST_NAME}


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

"""Verified downloads from a local HTTP server serving the real MNIST-subset files."""

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import IDX_FILES as FILES, MNIST_SUBSET as SUBSET

from forgetless.data import atomic_write_bytes, atomic_write_text, default_cache_dir, fetch, read_idx
from forgetless.errors import DataError


class Server:
    """Serves `routes` (URL path -> bytes) on 127.0.0.1 and counts requests per path."""

    def __init__(self):
        self.routes, self.hits = {}, {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def running_server():
    s = Server()
    for name in FILES:
        s.routes[f"/good/{name}"] = (SUBSET / name).read_bytes()
        s.routes[f"/bad/{name}"] = (SUBSET / name).read_bytes()[:-100]
    yield s
    s.close()


@pytest.fixture
def server(running_server):
    running_server.hits.clear()
    return running_server


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("FORGETLESS_MIRROR", raising=False)


def sha256(name):
    return hashlib.sha256((SUBSET / name).read_bytes()).hexdigest()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_download_verifies_and_leaves_nothing_else(server, tmp_path):
    name = "train-images-idx3-ubyte.gz"
    path = fetch(name, [f"{server.url}/good/{name}"], sha256(name), tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / name
    assert path.read_bytes() == (SUBSET / name).read_bytes()
    assert read_idx(path).shape == (8500, 28, 28)
    assert sorted(p.name for p in path.parent.iterdir()) == [name]


def test_second_call_does_not_download_again(server, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    for _ in range(3):
        fetch(name, [f"{server.url}/good/{name}"], sha256(name), tmp_path, progress=False)
    assert server.hits == {f"/good/{name}": 1}


def test_a_damaged_local_copy_is_replaced(server, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    (tmp_path / name).write_bytes(b"not the file")
    fetch(name, [f"{server.url}/good/{name}"], sha256(name), tmp_path, progress=False)
    assert (tmp_path / name).read_bytes() == (SUBSET / name).read_bytes()
    assert server.hits == {f"/good/{name}": 1}


def test_truncated_download_is_a_checksum_error_and_leaves_nothing(server, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="no mirror served the expected file") as info:
        fetch(name, [f"{server.url}/bad/{name}"], sha256(name), tmp_path, progress=False)
    assert name in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_next_mirror_is_used_after_a_bad_one(server, tmp_path):
    name = "t10k-images-idx3-ubyte.gz"
    urls = [
        f"{closed_port_url()}/{name}",
        f"{server.url}/missing/{name}",
        f"{server.url}/bad/{name}",
        f"{server.url}/good/{name}",
    ]
    path = fetch(name, urls, sha256(name), tmp_path, progress=False)
    assert path.read_bytes() == (SUBSET / name).read_bytes()
    assert server.hits == {f"/missing/{name}": 1, f"/bad/{name}": 1, f"/good/{name}": 1}
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_forgetless_mirror_is_tried_first(server, tmp_path, monkeypatch):
    name = "train-labels-idx1-ubyte.gz"
    monkeypatch.setenv("FORGETLESS_MIRROR", f"{server.url}/good/")
    fetch(name, [f"{server.url}/bad/{name}"], sha256(name), tmp_path, progress=False)
    assert server.hits == {f"/good/{name}": 1}


def test_unreachable_mirrors_give_one_line_error(tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match=f"could not download {name}") as info:
        fetch(name, [f"{closed_port_url()}/{name}"], "0" * 64, tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "forgetless"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home/.cache/forgetless"


def test_atomic_writes(tmp_path):
    path = tmp_path / "results" / "run.json"
    atomic_write_text(path, '{"acc": 0.9}')
    assert path.read_text() == '{"acc": 0.9}'
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]

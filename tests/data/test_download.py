"""Tests for mnist_dask.data.download and the IDX URL source, against a real HTTP server on 127.0.0.1.

The server runs in a thread of the test process, serves files from a folder (with HEAD and
Range support), logs every request, and can be told to answer the next GETs of a path with an
error status. A real ``python -m http.server`` (no range requests) checks what users run.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mnist_dask.data import download
from mnist_dask.data.sources import Source, parse_source
from mnist_dask.errors import UserError


class FileServer:
    """A threaded HTTP server for one folder, with a request log and scripted failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.failures: dict[str, list[int]] = {}  # path -> statuses for its next GETs
        self.always_fail: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                with server._lock:
                    server.requests.append((self.command, self.path))
                    status = None
                    if body and self.path in server.always_fail:
                        status = server.always_fail[self.path]
                    elif body and server.failures.get(self.path):
                        status = server.failures[self.path].pop(0)
                if status is not None:
                    return self._send(status, b"server error\n", body)
                file = server.root / self.path.lstrip("/")
                if not file.is_file():
                    return self._send(404, b"not found\n", body)
                data = file.read_bytes()
                spec = self.headers.get("Range")
                if spec and spec.startswith("bytes="):
                    first, _, last = spec[len("bytes=") :].partition("-")
                    start = int(first)
                    end = min(int(last), len(data) - 1) if last else len(data) - 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                    data = data[start : end + 1]
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _send(self, status: int, data: bytes, body: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def gets(self, path: str) -> int:
        """How many GET requests the server received for ``path``."""
        return sum(1 for method, p in self.requests if method == "GET" and p == path)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh download cache; $MNIST_DASK_CACHE points at it so the real cache is never used."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MNIST_DASK_CACHE", str(folder))
    return folder


def _serve(root: Path) -> Iterator[FileServer]:
    server = FileServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def server(tmp_path) -> Iterator[FileServer]:
    root = tmp_path / "www"
    root.mkdir()
    yield from _serve(root)


@pytest.fixture(scope="module")
def mnist_server(mnist_dir, tmp_path_factory) -> Iterator[FileServer]:
    """The four real MNIST files under /mnist/; /bad/ and /bad2/ hold garbage under the same names."""
    root = tmp_path_factory.mktemp("www")
    for folder in ("mnist", "bad", "bad2"):
        (root / folder).mkdir()
    for path in mnist_dir.glob("*.gz"):
        (root / "mnist" / path.name).symlink_to(path)
        (root / "bad" / path.name).write_bytes(b"not the file you want")
        (root / "bad2" / path.name).write_bytes(b"not this one either")
    yield from _serve(root)


@pytest.fixture(scope="module")
def plain_http_server(mnist_dir, tmp_path_factory) -> Iterator[str]:
    """``python -m http.server`` (no HTTP range requests) in a subprocess, serving copies of the real MNIST
    files: /gz/ the four .gz files, /plain/ the two test files uncompressed only. Yields its base URL."""
    root = tmp_path_factory.mktemp("plain-www")
    (root / "gz").mkdir()
    (root / "plain").mkdir()
    for path in mnist_dir.glob("*.gz"):
        (root / "gz" / path.name).write_bytes(path.read_bytes())
        if path.name.startswith("t10k"):
            (root / "plain" / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = server.stdout.readline() if server.stdout else ""  # "Serving HTTP on 127.0.0.1 port 43211 (...)"
        port = int(banner.split(" port ")[1].split()[0])
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


PAYLOAD = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SUM = download.Checksum(PAYLOAD_MD5)


# -- cache location ---------------------------------------------------------------------
def test_cache_dir_is_taken_from_mnist_dask_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DASK_CACHE", str(tmp_path / "c"))
    assert download.cache_dir() == tmp_path / "c"


def test_cache_dir_defaults_to_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DASK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert download.cache_dir() == tmp_path / "mnist-dask"


def test_file_md5_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD * 5)  # several 1 MiB blocks
    assert download.file_md5(path) == hashlib.md5(PAYLOAD * 5).hexdigest()


# -- fetch ------------------------------------------------------------------------------
def test_good_file_is_cached_and_a_second_fetch_does_not_hit_the_server(server, cache):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    first = download.fetch(server.url + "data.bin", PAYLOAD_SUM, backoff=0)
    assert first == cache / "data.bin"
    assert first.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == ["data.bin"]
    seen = len(server.requests)
    assert server.gets("/data.bin") >= 1

    second = download.fetch(server.url + "data.bin", PAYLOAD_SUM, backoff=0)
    assert second == first and second.read_bytes() == PAYLOAD
    assert len(server.requests) == seen  # served from the cache


def test_explicit_cache_argument_overrides_the_environment(server, cache, tmp_path):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    target = download.fetch(server.url + "data.bin", PAYLOAD_SUM, cache=tmp_path / "other", backoff=0)
    assert target == tmp_path / "other" / "data.bin" and target.read_bytes() == PAYLOAD
    assert not cache.exists()


def test_cached_file_with_a_stale_checksum_is_downloaded_again(server, cache):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    cache.mkdir()
    (cache / "data.bin").write_bytes(b"an old, corrupt copy")
    target = download.fetch(server.url + "data.bin", PAYLOAD_SUM, backoff=0)
    assert target.read_bytes() == PAYLOAD
    assert server.gets("/data.bin") >= 1


def test_checksum_mismatch_is_refused_and_leaves_nothing_in_the_cache(server, cache):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    wrong = "0123456789abcdef0123456789abcdef"
    with pytest.raises(UserError) as exc:
        download.fetch(server.url + "data.bin", download.Checksum(wrong), backoff=0)
    message = str(exc.value)
    assert "\n" not in message
    assert server.url + "data.bin" in message and "checksum mismatch" in message
    assert PAYLOAD_MD5 in message and wrong in message
    assert list(cache.iterdir()) == []  # no data.bin, no data.bin.part
    assert server.gets("/data.bin") == 1  # a checksum mismatch is not retried


def test_server_error_then_success_is_retried(server, cache):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    server.failures["/data.bin"] = [500]
    target = download.fetch(server.url + "data.bin", PAYLOAD_SUM, attempts=3, backoff=0)
    assert target.read_bytes() == PAYLOAD
    assert server.gets("/data.bin") == 2
    assert [p.name for p in cache.iterdir()] == ["data.bin"]


@pytest.mark.parametrize("attempts", [1, 3])
def test_server_always_failing_gives_up_after_the_given_attempts(server, cache, attempts):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    server.always_fail["/data.bin"] = 500
    with pytest.raises(UserError) as exc:
        download.fetch(server.url + "data.bin", PAYLOAD_SUM, attempts=attempts, backoff=0)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{server.url}data.bin: download failed after {attempts} attempts")
    assert "500" in message
    assert server.gets("/data.bin") == attempts
    assert list(cache.iterdir()) == []


def test_a_client_error_status_is_not_retried(server, cache):
    (server.root / "data.bin").write_bytes(PAYLOAD)
    server.always_fail["/data.bin"] = 403
    with pytest.raises(UserError) as exc:
        download.fetch(server.url + "data.bin", PAYLOAD_SUM, attempts=3, backoff=0)
    message = str(exc.value)
    assert message.startswith(f"{server.url}data.bin: download failed (") and "403" in message
    assert "attempts" not in message and "\n" not in message
    assert server.gets("/data.bin") == 1  # the same answer would come again
    assert list(cache.iterdir()) == []


def test_missing_file_on_the_server_is_a_user_error_and_not_retried(server, cache):
    with pytest.raises(UserError) as exc:
        download.fetch(server.url + "absent.gz", None, attempts=2, backoff=0)
    assert str(exc.value) == f"{server.url}absent.gz: not found (the server answered 404)"
    assert server.gets("/absent.gz") == 1
    assert not (cache / "absent.gz").exists()


def test_unreachable_host_is_a_user_error(cache):
    with pytest.raises(UserError) as exc:
        download.fetch("http://127.0.0.1:1/mnist/x.gz", None, attempts=2, backoff=0)
    assert "http://127.0.0.1:1/mnist/x.gz: download failed after 2 attempts" in str(exc.value)


# -- the IDX URL source end to end ---------------------------------------------------------
def test_idx_url_source_downloads_the_canonical_test_files(mnist_server, cache, mnist):
    source = parse_source(f"idx:{mnist_server.url}mnist")
    assert source == Source("idx", (mnist_server.url + "mnist",))
    images, labels = source.load_split("test")
    np.testing.assert_array_equal(images, mnist["test_images"])
    np.testing.assert_array_equal(labels, mnist["test_labels"])
    cached = sorted(p.name for p in cache.iterdir())
    assert "t10k-images-idx3-ubyte.gz" in cached and "t10k-labels-idx1-ubyte.gz" in cached
    assert not any(name.endswith(".part") for name in cached)
    canonical = download.MNIST_CHECKSUMS["t10k-images-idx3-ubyte.gz"]
    assert download.file_md5(cache / "t10k-images-idx3-ubyte.gz") == canonical.file_md5

    seen = len(mnist_server.requests)
    images_again, _ = source.load_split("test")  # from the cache
    np.testing.assert_array_equal(images_again, mnist["test_images"])
    assert len(mnist_server.requests) == seen


def test_idx_url_source_accepts_recompressed_train_images_by_their_content(mnist_server, cache, mnist):
    """The local train-images .gz was re-compressed: its .gz MD5 is not the canonical one, its content is."""
    canonical = download.MNIST_CHECKSUMS["train-images-idx3-ubyte.gz"]
    served = mnist_server.root / "mnist" / "train-images-idx3-ubyte.gz"
    assert download.file_md5(served) != canonical.file_md5
    assert download.content_md5(served) == canonical.content_md5
    images, labels = Source("idx", (mnist_server.url + "mnist/",)).load_split("train")
    np.testing.assert_array_equal(images, mnist["train_images"])
    np.testing.assert_array_equal(labels, mnist["train_labels"])
    assert download.content_md5(cache / "train-images-idx3-ubyte.gz") == canonical.content_md5


def test_idx_url_source_refuses_other_content_and_keeps_nothing(mnist_server, cache, mnist):
    """Real IDX bytes with one pixel changed: valid gzip and IDX, but not the canonical content."""
    import gzip

    altered = mnist["test_images"].copy()
    altered[0, 14, 14] ^= 1
    folder = mnist_server.root / "altered"
    folder.mkdir(exist_ok=True)
    header = b"\x00\x00\x08\x03" + (10_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + altered.tobytes()))
    (folder / "t10k-labels-idx1-ubyte.gz").symlink_to(mnist_server.root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UserError) as exc:
        Source("idx", (mnist_server.url + "altered/",)).load_split("test")
    message = str(exc.value)
    assert "\n" not in message
    assert "t10k-images-idx3-ubyte.gz: checksum mismatch (content md5" in message
    assert download.MNIST_CHECKSUMS["t10k-images-idx3-ubyte.gz"].content_md5 in message  # what was expected
    assert hashlib.md5(header + altered.tobytes()).hexdigest() in message  # what the server sent
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()
    assert not (cache / "t10k-images-idx3-ubyte.gz.part").exists()


def test_content_md5_of_a_plain_file_is_its_md5_and_of_gzip_its_uncompressed_md5(tmp_path):
    import gzip

    plain, packed = tmp_path / "plain.bin", tmp_path / "packed.gz"
    plain.write_bytes(PAYLOAD)
    packed.write_bytes(gzip.compress(PAYLOAD, compresslevel=1))
    assert download.content_md5(plain) == PAYLOAD_MD5 == download.content_md5(packed)
    assert download.file_md5(packed) != PAYLOAD_MD5


def test_idx_url_source_tries_the_next_mirror_when_one_fails(mnist_server, cache, mnist):
    bad, good = mnist_server.url + "bad/", mnist_server.url + "mnist/"
    images, labels = Source("idx", (bad, good)).load_split("test")
    np.testing.assert_array_equal(labels, mnist["test_labels"])
    np.testing.assert_array_equal(images, mnist["test_images"])
    assert mnist_server.gets("/bad/t10k-images-idx3-ubyte.gz") == 1
    assert mnist_server.gets("/mnist/t10k-images-idx3-ubyte.gz") >= 1


def test_idx_url_source_names_every_failed_mirror(mnist_server, cache):
    first, second = mnist_server.url + "bad/", mnist_server.url + "bad2/"
    with pytest.raises(UserError) as exc:
        Source("idx", (first, second)).load_split("test")
    message = str(exc.value)
    assert "\n" not in message
    assert f"{first}t10k-images-idx3-ubyte.gz: checksum mismatch" in message
    assert f"{second}t10k-images-idx3-ubyte.gz: checksum mismatch" in message
    assert list(cache.iterdir()) == []


# -- a plain `python -m http.server` (no range requests) -------------------------------------
def test_ingest_from_a_plain_http_server_through_the_cli(plain_http_server, tmp_path, mnist):
    """What a user types: the default path (own LocalCluster), a server that does not do range requests."""
    from mnist_dask.data.store import Store

    env = {**os.environ, "MNIST_DASK_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "mnist_dask", "ingest", "--source", f"idx:{plain_http_server}gz",
         "--store", str(tmp_path / "mnist.zarr"), "--workers", "2"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train 60,000, test 10,000 images" in done.stdout
    X, y = Store(str(tmp_path / "mnist.zarr")).read_xy("raw", "test")
    np.testing.assert_array_equal(X.compute().reshape(-1, 28, 28), mnist["test_images"])
    np.testing.assert_array_equal(y.compute(), mnist["test_labels"])


def test_idx_url_source_takes_the_uncompressed_file_when_there_is_no_gz(plain_http_server, cache, mnist):
    images, labels = Source("idx", (plain_http_server + "plain",)).load_split("test")
    np.testing.assert_array_equal(images, mnist["test_images"])
    np.testing.assert_array_equal(labels, mnist["test_labels"])
    assert sorted(p.name for p in cache.iterdir()) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_idx_url_source_with_neither_file_names_both_in_one_line(plain_http_server, cache):
    with pytest.raises(UserError) as exc:
        Source("idx", (plain_http_server + "plain",)).load_split("train")
    expected = f"{plain_http_server}plain/train-images-idx3-ubyte[.gz]: not found (the server answered 404)"
    assert str(exc.value) == expected
    assert list(cache.iterdir()) == []

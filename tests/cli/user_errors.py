"""The user-error matrix of ``mnist-dask``: every case a user (or an attacker of the CLI) can cause.

Each case is one real ``python -m mnist_dask ...`` subprocess on the default path (no
``--scheduler``: the command starts its own LocalCluster when it gets that far), checked for
its exit status, its whole stderr (one line naming the thing, no traceback, no Dask log line)
and the state of the store afterwards. The cases live here, apart from the test modules, so
the same table can be run against another checkout to compare (see ``python user_errors.py``).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import socketserver
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from support import PROGRESS_LINE, SmallMnist, moto_server

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"  # beside the checkout, as conftest finds it
JOB = str(REPO / "jobs" / "knn_baseline.toml")
CLEAN_ENV = ("DASK_SCHEDULER_ADDRESS", "MNIST_DASK_SOURCE", "MNIST_DASK_STORE", "AWS_ACCESS_KEY_ID")
UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once
DASK_LOG_LINE = re.compile(r"^(distributed|bokeh|tornado|asyncio)\.|\s-\s(distributed|bokeh|tornado)[.\s]")


# -- servers that are not Dask schedulers ---------------------------------------------------
class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers every request with 404 (an HTTP server where a scheduler or a mirror was expected)."""

    def do_GET(self) -> None:
        self.send_error(404)

    def do_HEAD(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


class _Banner(socketserver.BaseRequestHandler):
    """Sends an SSH-style banner on connect and then waits (a service that talks first)."""

    def handle(self) -> None:
        self.request.sendall(b"SSH-2.0-OpenSSH_9.6 not-a-dask-scheduler\r\n")
        with contextlib.suppress(OSError):
            self.request.settimeout(60)
            while self.request.recv(4096):
                pass


class _Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def serving(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """A server on a free 127.0.0.1 port in a thread; yields the port."""
    server = (
        http.server.ThreadingHTTPServer if issubclass(handler, http.server.BaseHTTPRequestHandler) else _Threaded
    )(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# -- filesystems: read-only, full ------------------------------------------------------------
def mount_tmpfs(path: Path, size: str, *, read_only: bool = False) -> str | None:
    """Mount a small tmpfs at ``path``; None on success, else why it cannot be done here."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the filesystem holding ``folder`` to the last byte."""
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    with contextlib.suppress(OSError), open(folder / "filler2", "wb") as f:
        while True:
            f.write(b"\0")
            f.flush()


# -- a PNG header of any size ---------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG with a valid signature and IHDR claiming ``width`` x ``height`` (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- the workspace every case runs in ---------------------------------------------------------
class Workspace:
    """Inputs shared by the cases: small IDX/CSV data, one complete small store, run folders, servers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.small = SmallMnist()
        self.idx = self.small.write_idx(root / "idx")
        self.csv = self.small.write_csv(root / "csv", header=True)
        self.cache = root / "cache"
        self.store = root / "small.zarr"
        self.file = root / "a-file.txt"
        self.file.write_text("not a store\n")
        (root / "huge.png").write_bytes(png_header(20_000, 20_000))  # beyond Pillow's own limit
        (root / "large.png").write_bytes(png_header(10_000, 10_000))  # where Pillow only warns
        self.digit = root / "one.png"  # a drawn "1": an image classify reads
        Image.fromarray(np.pad(np.zeros((30, 4), np.uint8), ((5, 5), (18, 18)), constant_values=255)).save(self.digit)
        self.mounts: list[Path] = []
        self.no_mount: str | None = None
        self.http_port = 0
        self.banner_port = 0
        self.s3 = ""  # a moto S3 server's URL, with one bucket "study"
        self.case = ""  # the id of the case being run
        self._stack = contextlib.ExitStack()

    def start(self) -> Workspace:
        """Ingest the small store (through the CLI's default path) and start the servers."""
        done = self.cli("ingest", "--source", f"idx:{self.idx}", "--store", self.store, "--chunk-size", "16")
        assert done.returncode == 0, done.stderr
        self.http_port = self._stack.enter_context(serving(_NotFound))
        self.banner_port = self._stack.enter_context(serving(_Banner))
        self.s3 = self._stack.enter_context(moto_server())
        self.read_only = self.root / "read-only"
        self.full = self.root / "full"
        self.tiny = self.root / "tiny"
        self.no_mount = mount_tmpfs(self.read_only, "1m", read_only=True)
        if self.no_mount is None:
            self.mounts.append(self.read_only)
            for path, size in ((self.full, "256k"), (self.tiny, "2m")):
                self.no_mount = self.no_mount or mount_tmpfs(path, size)
                self.mounts.append(path)
            fill(self.full)
        return self

    def close(self) -> None:
        for path in self.mounts:
            unmount(path)
        self._stack.close()

    def cli(
        self, *args: object, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``python -m mnist_dask ARGS`` in a clean environment (own cache, no inherited settings)."""
        clean = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV and not k.startswith("AWS_")}
        clean.update({"MNIST_DASK_CACHE": str(self.cache), **(env or {})})
        return subprocess.run(
            [sys.executable, "-m", "mnist_dask", *map(str, args)],
            cwd=self.root,
            env=clean,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def real(self) -> Path:
        """A store with real MNIST ingested (made on first use)."""
        target = self.root / "real.zarr"
        if not target.exists():
            done = self.cli("ingest", "--source", f"idx:{MNIST_DIR}", "--store", target, "--workers", "1")
            assert done.returncode == 0, done.stderr
        return target

    def copy(self, name: str) -> Path:
        """A private copy (file times kept) of the complete small store."""
        target = self.root / "copies" / name / "mnist.zarr"
        if not target.exists():
            shutil.copytree(self.store, target)
        return target

    def with_stage(self, name: str, *transform: object) -> Path:
        """A private copy of the small store with one ``mnist-dask transform ...`` run on it (made on first use)."""
        target = self.root / "copies" / name / "mnist.zarr"
        if not target.exists():
            shutil.copytree(self.store, target)
            done = self.cli("transform", *transform, "--store", target, "--workers", "1")
            assert done.returncode == 0, done.stderr
        return target

    def run_folder(self, name: str, status: str | None = None, result: str | None = None) -> Path:
        folder = self.root / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        if status is not None:
            (folder / "status.json").write_text(status)
        if result is not None:
            (folder / "result.json").write_text(result)
        return folder


# -- the cases -------------------------------------------------------------------------------
Args = Callable[[Workspace], list[object]]
#: a k-NN run's result.json naming a store (not there) with other images than the workspace's
ANOTHER_STORES_RUN = '{"job": "x", "store": "/a/b.zarr", "inputs": {"made": "up"}, "model": {"n_neighbors": 1}}'


@dataclass(frozen=True)
class Case:
    """One command a user may type, and what must come of it.

    ``names``: fragments the error line must hold; ``absent``: fragments it must not hold
    (a misleading message); ``store``: which store must be left how ("untouched" copy,
    "no-store" at the new path, "incomplete" and refused).
    """

    id: str
    args: Args
    names: Callable[[Workspace], list[str]]
    exit: int = 2
    env: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    store: tuple[str, Callable[[Workspace], Path]] | None = None
    needs: str = ""  # "mount": needs the tmpfs mounts
    timeout: float = 120
    mid_work: bool = False  # fails while a stage runs: our progress lines may precede the error line
    progress: tuple[str, ...] = ()  # fragments the progress lines before the error line must hold


def _new(ws: Workspace) -> Path:
    """The store path a case creates (or must not create): one per case."""
    return ws.root / "new" / ws.case / "mnist.zarr"


def _ingest(*extra: object) -> Args:
    workers = [] if "--workers" in extra else ["--workers", "1"]
    return lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", _new(ws), *workers, *extra]


def _remote(*extra: object) -> Args:
    """``ingest`` as sent to an existing scheduler: no local cluster's shape (--workers would be refused)."""
    return lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", _new(ws), *extra]


def _source(make: Callable[[Workspace], str], *extra: object) -> Args:
    return lambda ws: ["ingest", "--source", make(ws), "--store", _new(ws), "--workers", "1", *extra]


def _on_copy(name: str) -> Callable[[Workspace], Path]:
    return lambda ws: ws.copy(name)


def _names(*fragments: str) -> Callable[[Workspace], list[str]]:
    return lambda ws: list(fragments)


NO_STORE = ("no-store", _new)


def _notes(ws: Workspace) -> Path:
    """A folder of the user's own files: not a store."""
    folder = ws.root / "notes"
    if not folder.exists():
        folder.mkdir()
        (folder / "notes.txt").write_text("not a store\n")
    return folder


def _untouched(name: str) -> tuple[str, Callable[[Workspace], Path]]:
    return ("untouched", _on_copy(name))


OPTION_CASES = [
    Case("workers-zero", _ingest("--workers", "0"), _names("--workers", "0"), store=NO_STORE),
    Case("workers-text", _ingest("--workers", "many"), _names("--workers", "many"), store=NO_STORE),
    Case("threads-zero", _ingest("--threads-per-worker", "0"), _names("--threads-per-worker"), store=NO_STORE),
    Case("chunk-size-zero", _ingest("--chunk-size", "0"), _names("--chunk-size"), store=NO_STORE),
    Case("memory-limit-garbage", _ingest("--memory-limit", "lots"), _names("--memory-limit", "lots"), store=NO_STORE),
    Case(
        "memory-limit-1KB",
        _ingest("--memory-limit", "1KB"),
        _names("--memory-limit", "1KB"),
        store=NO_STORE,
        timeout=90,
    ),
    Case("connect-timeout-negative", _ingest("--connect-timeout", "-1"), _names("--connect-timeout", "-1")),
    Case("connect-timeout-nan", _ingest("--connect-timeout", "nan"), _names("--connect-timeout", "nan")),
    Case("storage-option-no-equals", _ingest("--storage-option", "anon"), _names("--storage-option", "anon")),
    Case(
        "storage-option-on-local-path",
        _ingest("--storage-option", "anon=true"),
        _names("--storage-option", "anon"),
        store=NO_STORE,
    ),
    Case("unknown-option", _ingest("--bogus"), _names("--bogus")),
    Case("unknown-command", lambda ws: ["frobnicate"], _names("frobnicate")),
    Case("run-without-job", lambda ws: ["run"], _names("JOB")),
    Case("job-file-missing", lambda ws: ["run", ws.root / "nope.toml"], _names("nope.toml")),
    Case("job-file-is-a-folder", lambda ws: ["run", ws.root / "idx"], lambda ws: [str(ws.root / "idx")]),
    Case(
        "tls-key-missing",
        lambda ws: (
            ["ingest", "--scheduler", "tls://127.0.0.1:1"]
            + ["--tls-ca-file", ws.file, "--tls-cert", ws.file, "--tls-key", ws.root / "missing.pem"]
        ),
        _names("--tls-key", "missing.pem"),
    ),
    Case(
        "rotate-degrees-400",
        lambda ws: ["transform", "rotate", "--degrees", "400", "--store", ws.copy("rotate"), "--workers", "1"],
        _names("degrees", "400"),
        absent=("augment",),
        store=_untouched("rotate"),
    ),
    Case(
        "shift-shape-unknown",
        lambda ws: ["transform", "shift", "--shape", "hexagon", "--store", ws.copy("shift"), "--workers", "1"],
        _names("--shape", "hexagon"),
        store=_untouched("shift"),
    ),
    Case(
        "downscale-factor-zero",
        lambda ws: ["transform", "downscale", "--factor", "0", "--store", ws.copy("down"), "--workers", "1"],
        _names("--factor", "0"),
        store=_untouched("down"),
    ),
    Case(
        "blur-sigma-text",
        lambda ws: ["transform", "blur", "--sigma", "wide", "--store", ws.copy("blur"), "--workers", "1"],
        _names("--sigma", "wide"),
        store=_untouched("blur"),
    ),
    *[
        Case(  # refused after click's own checks (by the data, or nan): named as typed, not by the job file's key
            f"{name}-{option}-{value}",
            lambda ws, name=name, option=option, value=value: [
                *["transform", name, f"--{option}", value, "--store", ws.copy(f"param-{name}"), "--workers", "1"]
            ],
            _names(f"transform {name}: --{option} must", *extra),
            absent=(f": {option.replace('-', '_')} ", f": {option.replace('-', '_')}="),  # the job file's key
            store=_untouched(f"param-{name}"),
        )
        for name, option, value, extra in (
            ("pca", "n-components", "700", ["between 1 and 40 (the training rows it is fitted on), got 700"]),
            ("sample", "train", "41", ["lie in [0, 40] (the input's train rows), got 41"]),
            ("varthresh", "threshold", "1e9", ["below the largest pixel variance on train", "got 1e+09"]),
            ("blur", "sigma", "nan", ["finite number"]),
        )
    ],
    Case("transform-unknown", lambda ws: ["transform", "frobnicate"], _names("frobnicate")),
    Case(
        "transform-input-not-a-stage",
        lambda ws: ["transform", "deskew", "--input", "../etc", "--store", ws.copy("input"), "--workers", "1"],
        _names("--input", "../etc"),
        store=_untouched("input"),
    ),
    Case(
        "transform-input-missing",
        lambda ws: [
            "transform",
            "deskew",
            "--input",
            "derived/nothing",
            "--store",
            ws.copy("input2"),
            "--workers",
            "1",
        ],
        _names("derived/nothing"),
        store=_untouched("input2"),
    ),
    Case(
        "transform-before-ingest",
        lambda ws: ["transform", "deskew", "--store", _new(ws), "--workers", "1"],
        lambda ws: ["stage raw is missing", f"run 'mnist-dask ingest --store {_new(ws)}' first"],
        store=NO_STORE,
    ),
    Case("workers-too-many", _ingest("--workers", "100000"), _names("--workers", "100000"), store=NO_STORE),
    Case(
        "store-in-memory",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", "memory://mnist.zarr", "--workers", "1"],
        _names("--store", "memory://mnist.zarr", "in-memory", "workers"),
    ),
    Case("store-empty-text", lambda ws: ["info", "--store", ""], _names("--store", "empty")),
    Case("classify-without-run", lambda ws: ["classify", ws.file], _names("--run")),
    Case("csv-source-one-file", _source(lambda ws: "csv:only.csv"), _names("--source", "csv:only.csv"), store=NO_STORE),
]


def _too_many_neighbours(ws: Workspace) -> Path:
    """A k-NN job asking for more neighbours than any store here has training rows."""
    job = ws.root / "too-many-neighbours.toml"
    job.write_text("experiment = 'knn'\n[params.model]\nn_neighbors = 100000\n")
    return job


def _bad_csv_line(ws: Workspace) -> str:
    """The training CSV (with a header) with a non-integer pixel on file line 5."""
    lines = ws.csv[0].read_text().splitlines()
    cells = lines[4].split(",")
    cells[100] = "4.5"
    lines[4] = ",".join(cells)
    bad = ws.root / "bad-line5.csv"
    bad.write_text("\n".join(lines) + "\n")
    return f"csv:{bad},{ws.csv[1]}"


ENVIRONMENT_CASES = [
    Case(
        "store-is-a-file",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", ws.file, "--workers", "1"],
        lambda ws: [str(ws.file)],
    ),
    Case(
        "store-parent-is-a-file",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", ws.file / "s.zarr", "--workers", "1"],
        lambda ws: [str(ws.file)],
    ),
    Case(  # info writes nothing: no advice to choose a new or empty folder
        "info-store-is-a-file",
        lambda ws: ["info", ws.file],
        lambda ws: [str(ws.file), "not a Zarr store folder", "a store made by 'mnist-dask ingest'"],
        absent=("new or empty",),
    ),
    *[
        Case(  # commands that only use a store: the folder is not one, and no advice about writing into it
            f"{command}-on-a-folder-of-other-files",
            lambda ws, args=args: [*args, _notes(ws)],
            lambda ws: [f"{_notes(ws)}: is a folder that is not empty and holds no mnist-dask store", "made by"],
            absent=("new or empty", "writes only"),
            store=("untouched", _notes),
        )
        for command, args in (
            ("info", ["info"]),
            ("verify", ["verify", "--workers", "1"]),
            ("drop", ["drop", "raw", "--store"]),
            ("transform", ["transform", "deskew", "--workers", "1", "--store"]),
        )
    ],
    Case(
        "store-on-read-only-fs",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", ws.read_only / "s.zarr", "--workers", "1"],
        lambda ws: [str(ws.read_only / "s.zarr"), "read-only"],
        needs="mount",
    ),
    Case(
        "store-disk-full",
        lambda ws: ["ingest", "--source", f"idx:{MNIST_DIR}", "--store", ws.tiny / "s.zarr", "--workers", "1"],
        lambda ws: [str(ws.tiny / "s.zarr"), "no space left"],
        store=("incomplete", lambda ws: ws.tiny / "s.zarr"),
        needs="mount",
        timeout=180,
        mid_work=True,
        progress=("write-raw: warning: 52.40 MiB before compression, ", " free on the disk of "),
    ),
    Case(  # relative to the case's folder, where a-file.txt is a file: the cache must be a folder
        "cache-is-a-file",
        _ingest("--source", f"idx:{UNREACHABLE}/"),
        _names("MNIST_DASK_CACHE=a-file.txt", "must be a folder"),
        env={"MNIST_DASK_CACHE": "a-file.txt"},
        store=NO_STORE,
    ),
    Case(
        "cache-on-read-only-fs",
        _ingest("--source", f"idx:{UNREACHABLE}/"),
        _names("MNIST_DASK_CACHE=read-only", "not writable"),
        env={"MNIST_DASK_CACHE": "read-only"},
        store=NO_STORE,
        needs="mount",
    ),
    Case(
        "run-dir-on-read-only-fs",
        lambda ws: ["run", JOB, "--store", ws.copy("ro-run"), "--run-dir", ws.read_only / "run", "--workers", "1"],
        lambda ws: [str(ws.read_only / "run"), "read-only"],
        store=_untouched("ro-run"),
        needs="mount",
    ),
    Case(
        "run-dir-disk-full",
        lambda ws: ["run", JOB, "--store", ws.copy("full-run"), "--run-dir", ws.full / "run", "--workers", "1"],
        lambda ws: [str(ws.full / "run"), "no space left"],
        store=_untouched("full-run"),
        needs="mount",
    ),
    Case(
        "run-dir-is-a-file",
        lambda ws: ["run", JOB, "--store", ws.copy("file-run"), "--run-dir", ws.file, "--workers", "1"],
        lambda ws: [str(ws.file)],
        store=_untouched("file-run"),
    ),
    Case(  # a run replaces result.json, report.html, ... in its folder: never in a folder of the user's files
        "run-dir-holds-the-users-files",
        lambda ws: ["run", JOB, "--store", ws.copy("users-files-run"), "--run-dir", ws.root, "--workers", "1"],
        lambda ws: [str(ws.root), "holds other files", "--run-dir"],
        store=_untouched("users-files-run"),
    ),
    Case(  # a study writes study.json, index.html and figures.md into its folder
        "study-dir-holds-the-users-files",
        lambda ws: ["study", JOB, "--store", ws.copy("users-files-study"), "--study-dir", ws.root, "--workers", "1"],
        lambda ws: [str(ws.root), "holds other files", "--study-dir"],
        store=_untouched("users-files-study"),
    ),
    Case(  # a folder in a store would be taken for a node of it missing its zarr.json ('ingest again')
        "run-dir-inside-a-store",
        lambda ws: ["run", JOB, "--store", ws.copy("in-store-run"), "--run-dir", ws.copy("in-store-run") / "myrun"],
        lambda ws: ["--run-dir", str(ws.copy("in-store-run") / "myrun"), "lies inside the Zarr store"],
        store=_untouched("in-store-run"),
    ),
    Case(
        "study-dir-inside-a-store",
        lambda ws: ["study", JOB, "--store", ws.copy("in-store-study"), "--study-dir", ws.copy("in-store-study") / "x"],
        lambda ws: ["--study-dir", str(ws.copy("in-store-study") / "x"), "lies inside the Zarr store"],
        store=_untouched("in-store-study"),
    ),
    Case(
        "runs-dir-inside-a-store",
        lambda ws: ["runs", "--runs-dir", ws.store / "raw"],
        lambda ws: ["--runs-dir", str(ws.store / "raw"), "lies inside the Zarr store"],
    ),
    Case(  # a study writes its study.json and index.html over a run's folder
        "study-dir-holds-a-run",
        lambda ws: [
            *["study", JOB, "--store", ws.copy("run-as-study"), "--workers", "1", "--study-dir"],
            ws.run_folder("a-run", status='{"run_id": "a-run", "job": "knn_baseline", "state": "finished"}'),
        ],
        lambda ws: [str(ws.root / "runs" / "a-run"), "holds a run", "--study-dir"],
        store=_untouched("run-as-study"),
    ),
    Case(  # a run writes its status.json over a submitted study's
        "run-dir-holds-a-study",
        lambda ws: [
            *["run", JOB, "--store", ws.copy("study-as-run"), "--workers", "1", "--run-dir"],
            ws.run_folder("a-study", status='{"run_id": "a-study", "job": "study", "state": "finished"}'),
        ],
        lambda ws: [str(ws.root / "runs" / "a-study"), "holds a study", "--run-dir"],
        store=_untouched("study-as-run"),
    ),
    Case("runs-dir-missing", lambda ws: ["runs", "--runs-dir", "/nonexistent"], _names("/nonexistent")),
    Case("runs-dir-is-a-file", lambda ws: ["runs", "--runs-dir", ws.file], lambda ws: [str(ws.file)]),
    Case(
        "status-json-is-a-list",
        lambda ws: ["status", ws.run_folder("list-status", status="[]")],
        lambda ws: [str(ws.root / "runs" / "list-status" / "status.json")],
    ),
    Case(
        "status-json-without-run-id",
        lambda ws: ["status", ws.run_folder("no-id-status", status='{"state": 5}')],
        lambda ws: [str(ws.root / "runs" / "no-id-status" / "status.json"), "run_id"],
    ),
    Case(
        "status-json-not-json",
        lambda ws: ["status", ws.run_folder("garbled-status", status="{not json")],
        lambda ws: [str(ws.root / "runs" / "garbled-status" / "status.json")],
    ),
    Case(
        "result-json-is-a-list-report",
        lambda ws: ["report", ws.run_folder("list-result", result="[]")],
        lambda ws: [str(ws.root / "runs" / "list-result" / "result.json")],
    ),
    Case(
        "result-json-is-a-list-classify",
        lambda ws: ["classify", ws.file, "--run", ws.run_folder("list-result", result="[]")],
        lambda ws: [str(ws.root / "runs" / "list-result" / "result.json")],
    ),
    Case(  # another store's digits would be drawn as the run's
        "report-with-another-runs-store",
        lambda ws: [
            "report",
            ws.run_folder("on-another-store", result='{"job": "x", "store": "/a/b.zarr", "inputs": {"made": "up"}}'),
            "--store",
            ws.store,
        ],
        lambda ws: [f"--store: {ws.store}: does not hold the images this run was made from", "/a/b.zarr"],
    ),
    Case(  # the run's training set would be another store's images
        "classify-with-another-runs-store",
        lambda ws: [
            "classify",
            ws.digit,
            "--run",
            ws.run_folder("classify-on-another-store", result=ANOTHER_STORES_RUN),
            "--store",
            ws.store,
        ],
        lambda ws: [f"--store: {ws.store}: does not hold the images this run was made from", "/a/b.zarr"],
    ),
    Case(  # the run's own store removed (or moved), no --store: say where to look
        "classify-with-its-store-gone",
        lambda ws: [
            "classify",
            ws.digit,
            "--run",
            ws.run_folder(
                "classify-store-gone", result=ANOTHER_STORES_RUN.replace("/a/b.zarr", str(ws.root / "gone.zarr"))
            ),
        ],
        lambda ws: [f"{ws.root / 'gone.zarr'}: the run's store", "is gone", "pass --store"],
        absent=("ingest",),
    ),
    Case(
        "report-on-a-file",
        lambda ws: ["report", ws.file],
        lambda ws: ["RUN", str(ws.file)],
    ),
    Case(
        "classify-a-folder",
        lambda ws: ["classify", ws.root / "idx", "--run", ws.run_folder("classify-run", result="{}")],
        lambda ws: ["IMAGE", str(ws.root / "idx")],
    ),
    Case(
        "info-on-an-empty-folder",
        lambda ws: ["info", ws.run_folder("empty")],
        lambda ws: [str(ws.root / "runs" / "empty")],
    ),
    Case(
        "job-file-not-toml",
        lambda ws: ["run", ws.file, "--store", _new(ws), "--workers", "1"],
        lambda ws: [str(ws.file), "TOML"],
        store=NO_STORE,
    ),
    Case(
        "store-unknown-protocol",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", "foo://bucket/s.zarr", "--workers", "1"],
        _names("foo://bucket/s.zarr", "foo"),
    ),
    Case(
        "store-backend-missing",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", "gs://bucket/s.zarr", "--workers", "1"],
        _names("gs://bucket/s.zarr", "gcsfs"),
    ),
    Case(
        "source-folder-missing",
        _source(lambda ws: "idx:/nonexistent/mnist"),
        _names("/nonexistent/mnist"),
        store=NO_STORE,
    ),
    Case(
        "source-csv-files-missing",
        _source(lambda ws: f"csv:{ws.root / 'no-train.csv'},{ws.root / 'no-test.csv'}"),
        lambda ws: ["--source", str(ws.root / "no-train.csv"), "no such file"],
        store=NO_STORE,
    ),
    Case(
        "run-source-folder-missing",
        lambda ws: (
            ["run", JOB, "--source", "idx:/nonexistent/mnist", "--store", _new(ws), "--workers", "1"]
            + ["--run-dir", ws.root / "runs" / "no-source"]
        ),
        _names("/nonexistent/mnist"),
        store=NO_STORE,
    ),
]

CONNECTION_CASES = [
    Case(
        "scheduler-is-an-http-server",
        lambda ws: [*_remote()(ws), "--scheduler", f"tcp://127.0.0.1:{ws.http_port}", "--connect-timeout", "2"],
        lambda ws: [f"127.0.0.1:{ws.http_port}"],
        store=NO_STORE,
        timeout=60,
    ),
    Case(
        "scheduler-sends-a-banner",
        lambda ws: [*_remote()(ws), "--scheduler", f"tcp://127.0.0.1:{ws.banner_port}", "--connect-timeout", "2"],
        lambda ws: [f"127.0.0.1:{ws.banner_port}"],
        absent=("EiB", "allocate"),
        store=NO_STORE,
        timeout=60,
    ),
    Case(
        "scheduler-refused",
        lambda ws: [*_remote()(ws), "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "2"],
        _names("tcp://127.0.0.1:1"),
        store=NO_STORE,
        timeout=60,
    ),
    Case(
        "scheduler-unknown-scheme",
        lambda ws: [*_remote()(ws), "--scheduler", "foo://127.0.0.1:1"],
        _names("foo://127.0.0.1:1", "foo"),
        absent=("within",),
        store=NO_STORE,
    ),
    Case(
        "scheduler-port-not-a-number",
        lambda ws: [*_remote()(ws), "--scheduler", "tcp://127.0.0.1:port"],
        _names("tcp://127.0.0.1:port"),
        absent=("within",),
        store=NO_STORE,
    ),
    Case(
        "scheduler-from-environment",
        _remote("--connect-timeout", "2"),
        _names("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1"),
        env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:1"},
        store=NO_STORE,
        timeout=60,
    ),
    Case(
        "local-workers-with-a-scheduler",
        lambda ws: [*_remote()(ws), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
        _names("--workers: sizes the local cluster only", "--scheduler tcp://127.0.0.1:1"),
        absent=("within",),  # refused before any connection
        store=NO_STORE,
    ),
    Case(
        "memory-limit-with-a-scheduler-from-environment",
        lambda ws: ["run", JOB, "--store", _new(ws), "--memory-limit", "2GB"],
        _names("--memory-limit: sizes the local cluster only", "DASK_SCHEDULER_ADDRESS"),
        env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:1"},
        absent=("within",),
        store=NO_STORE,
    ),
    Case(
        "download-not-found",
        lambda ws: [*_source(lambda w: f"idx:http://127.0.0.1:{w.http_port}/mnist/")(ws)],
        lambda ws: [f"http://127.0.0.1:{ws.http_port}/mnist/", "404"],
        absent=("FileNotFoundError",),
        store=NO_STORE,
        timeout=90,
    ),
]

MESSAGE_CASES = [
    Case(
        "csv-error-names-the-file-line",
        _source(_bad_csv_line),
        lambda ws: [str(ws.root / "bad-line5.csv"), "line 5"],
        store=NO_STORE,
    ),
    Case(
        "other-chunk-size",
        lambda ws: ["ingest", "--source", f"idx:{ws.idx}", "--store", ws.copy("chunks"), "--workers", "1"],
        _names("--chunk-size", "16", "5000"),
        absent=("other inputs",),
        store=_untouched("chunks"),
    ),
    Case(  # run has no --chunk-size or --force: the remedy is to give no --source, or an ingest command
        "run-source-other-chunk-size",
        lambda ws: ["run", JOB, "--store", ws.copy("run-chunks"), "--source", f"idx:{ws.idx}", "--workers", "1"],
        lambda ws: ["chunks of 16", "give no --source", f"mnist-dask ingest --store {ws.copy('run-chunks')} --source"],
        absent=("--chunk-size", "use --force", "pass"),
        store=_untouched("run-chunks"),
        mid_work=True,
    ),
    Case(  # the job's stage is taken by the user's own transform (another --chunk-size): run has no --force
        "run-stage-with-other-parameters",
        lambda ws: ["run", REPO / "jobs" / "knn_augmented.toml", "--store", _shifted(ws), "--workers", "1"],
        lambda ws: [
            f"'derived/shift5x' exists with chunks of 7 rows (asked for 5000); "
            f"drop it to compute it again: mnist-dask drop --store {_shifted(ws)} derived/shift5x"
        ],
        absent=("--force", "other parameters or inputs"),
        store=("untouched", lambda ws: _shifted(ws)),
        mid_work=True,
    ),
    Case(  # only the chunking differs: say so, and that --chunk-size 7 uses the stage as it is
        "transform-stage-with-other-chunk-size",
        lambda ws: ["transform", "shift", "--store", _shifted(ws), "--workers", "1"],
        lambda ws: [
            f"{_shifted(ws)}: 'derived/shift5x' exists with chunks of 7 rows (asked for 5000); "
            "pass --chunk-size 7 to use it, or --force to replace it"
        ],
        absent=("other parameters or inputs",),
        store=("untouched", lambda ws: _shifted(ws)),
        mid_work=True,
    ),
    Case(  # its input was rewritten (--force, other chunks) after it was computed: say so
        "transform-stage-after-its-input-was-rewritten",
        lambda ws: ["transform", "deskew", "--input", "derived/shift5x", "--store", _reshifted(ws), "--workers", "1"],
        lambda ws: [
            "'derived/shift5x+deskew' exists, computed from an earlier 'derived/shift5x' (rewritten since); "
            "use --force to replace it"
        ],
        absent=("other parameters or inputs",),
        store=("untouched", lambda ws: _reshifted(ws)),
        mid_work=True,
    ),
    Case(
        "source-from-environment",
        lambda ws: ["ingest", "--store", _new(ws), "--workers", "1"],
        _names("MNIST_DASK_SOURCE", "hdf5:mnist.h5"),
        env={"MNIST_DASK_SOURCE": "hdf5:mnist.h5"},
        store=NO_STORE,
    ),
    Case(
        "source-folder-from-environment",
        lambda ws: ["ingest", "--store", _new(ws), "--workers", "1"],
        _names("MNIST_DASK_SOURCE", "/nonexistent/mnist"),
        env={"MNIST_DASK_SOURCE": "idx:/nonexistent/mnist"},
        store=NO_STORE,
    ),
    Case(  # the default source with no way to openml.org: a proxy on a closed port makes the fetch fail for real,
        # online or not; scikit-learn's retry warnings must not come before the one line, which points to idx:DIR
        "openml-unreachable",
        lambda ws: ["ingest", "--store", _new(ws), "--workers", "1"],
        _names("openml:mnist_784", "could not fetch", "--source idx:DIR"),
        env={"https_proxy": UNREACHABLE, "HTTPS_PROXY": UNREACHABLE, "no_proxy": "", "NO_PROXY": ""},
        store=NO_STORE,
    ),
    Case(
        "classify-huge-png",
        lambda ws: ["classify", ws.root / "huge.png", "--run", ws.run_folder("classify-run", result="{}")],
        lambda ws: [str(ws.root / "huge.png"), "too large"],
        absent=("Pillow can read",),
    ),
    Case(
        "classify-large-png",
        lambda ws: ["classify", ws.root / "large.png", "--run", ws.run_folder("classify-run", result="{}")],
        lambda ws: [str(ws.root / "large.png"), "too large"],
        absent=("Warning",),
    ),
    Case(
        "verify-missing-store",
        lambda ws: ["verify", ws.root / "missing.zarr", "--workers", "1"],
        lambda ws: [str(ws.root / "missing.zarr")],
    ),
    Case(
        "drop-on-a-missing-store",
        lambda ws: ["drop", "raw", "--store", _new(ws)],
        lambda ws: [f"{_new(ws)}: no Zarr store here"],
        store=NO_STORE,
    ),
    Case(
        "info-store-argument-and-another-store",
        lambda ws: ["info", ws.store, "--store", ws.root / "other.zarr"],
        lambda ws: [f"STORE {ws.store} and --store {ws.root / 'other.zarr'} name two stores"],
    ),
    Case(
        "info-on-a-runs-predictions",
        lambda ws: ["info", _predictions(ws)],
        lambda ws: [f"{_predictions(ws)}: holds the test-set predictions of the run in {_predictions(ws).parent}"],
        absent=("choose a new or empty --store", "did not create"),
    ),
    Case(
        "info-on-the-predictions-of-a-run-in-progress",
        lambda ws: ["info", _predictions(ws, pending=True)],
        lambda ws: [
            f"{_predictions(ws, pending=True)}: holds the test-set predictions of the run in progress (or cut short) "
            f"in {_predictions(ws, pending=True).parent.parent}"
        ],
        absent=("choose a new or empty --store", "did not create"),
    ),
    Case("status-unknown-run", lambda ws: ["status", "no-such-run", "--runs-dir", ws.root], _names("no-such-run")),
    Case(
        "submit-a-job-the-stores-rows-rule-out",  # told before connecting: no scheduler answers at this address
        lambda ws: ["submit", _too_many_neighbours(ws), "--store", ws.store, "--scheduler", "tcp://127.0.0.1:9"],
        lambda ws: [f"{_too_many_neighbours(ws)}: params.model.n_neighbors = 100000: more neighbours than the"],
        absent=("no Dask scheduler",),
    ),
    Case(
        "submit-without-scheduler",
        lambda ws: ["submit", JOB, "--store", _new(ws)],
        _names("--scheduler"),
        store=NO_STORE,
    ),
]


def _predictions(ws: Workspace, pending: bool = False) -> Path:
    """A run folder's ``predictions.zarr`` as ``mnist-dask run`` leaves it (a plain Zarr group of arrays); ``pending``:
    as a run in progress writes it, among its pending outputs."""
    import zarr

    from mnist_dask.jobs.records import PENDING_OUTPUTS

    run = ws.run_folder("predicted", result="{}")
    path = (run / PENDING_OUTPUTS if pending else run) / "predictions.zarr"
    if not path.exists():
        zarr.open_group(path, mode="w").create_array("predicted", shape=(4,), dtype="uint8")
    return path


def _shifted(ws: Workspace) -> Path:
    """The small store with ``derived/shift5x`` in chunks of 7 rows (a job's step uses 5000)."""
    return ws.with_stage("shifted", "shift", "--chunk-size", "7")


def _reshifted(ws: Workspace) -> Path:
    """The small store with ``derived/shift5x+deskew`` computed from a ``derived/shift5x`` rewritten since."""
    target = ws.with_stage("reshifted", "shift", "--chunk-size", "7")
    if not (target / "derived" / "shift5x+deskew").exists():
        for args in (["deskew", "--input", "derived/shift5x"], ["shift", "--chunk-size", "9", "--force"]):
            done = ws.cli("transform", *args, "--store", target, "--workers", "1")
            assert done.returncode == 0, done.stderr
    return target


def _s3(ws: Workspace, *options: str, bucket: str = "study") -> list[object]:
    return ["--store", f"s3://{bucket}/mnist.zarr", *[a for o in options for a in ("--storage-option", o)]]


S3_CASES = [
    Case(
        "s3-without-credentials",
        lambda ws: ["info", *_s3(ws, f"endpoint_url={ws.s3}")],
        _names("s3://study/mnist.zarr", "credentials"),
        env={"AWS_EC2_METADATA_DISABLED": "true"},
    ),
    Case(  # the STORE argument takes --storage-option as --store does (it named the default local store)
        "s3-store-argument-with-storage-option",
        lambda ws: ["info", "s3://study/mnist.zarr", "--storage-option", f"endpoint_url={ws.s3}"],
        _names("s3://study/mnist.zarr", "credentials"),
        env={"AWS_EC2_METADATA_DISABLED": "true"},
        absent=("storage/mnist.zarr",),
    ),
    Case(
        "s3-unreachable-endpoint",
        lambda ws: ["info", *_s3(ws, "endpoint_url=http://127.0.0.1:1", "key=k", "secret=s")],
        _names("s3://study/mnist.zarr", "127.0.0.1:1"),
        # botocore's own setting: one attempt instead of five with backoff (18 s), same error path and message
        env={"AWS_MAX_ATTEMPTS": "1"},
        timeout=90,
    ),
    Case(
        "s3-ingest-into-missing-bucket",
        lambda ws: [
            *_ingest()(ws)[:3],
            *_s3(ws, f"endpoint_url={ws.s3}", "key=k", "secret=s", bucket="no-such-bucket"),
            "--workers",
            "1",
        ],
        _names("s3://no-such-bucket/mnist.zarr", "bucket"),
        absent=("run 'mnist-dask ingest' first",),
    ),
]

#: Cases on real MNIST that take longer (tests/integration runs them).
SLOW_CASES = [
    Case(
        "memory-limit-too-small-for-the-work",
        lambda ws: (
            ["transform", "pca", "--chunk-size", "60000", "--store", ws.real(), "--workers", "1"]
            + ["--memory-limit", "300MB"]
        ),
        _names("--memory-limit 300MB", "out of memory", "--memory-limit 600MB"),
        absent=("--workers",),  # one worker with its own limit: fewer workers cannot help
        store=("untouched", lambda ws: ws.real()),  # the PCA is fitted before its stage is begun
        timeout=300,
        mid_work=True,
    ),
]

CASES = S3_CASES + OPTION_CASES + ENVIRONMENT_CASES + CONNECTION_CASES + MESSAGE_CASES


# -- what every case must show -----------------------------------------------------------------


def snapshot(store: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a store: modification time (ns) and content."""
    return {
        str(p.relative_to(store)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def before(case: Case, ws: Workspace) -> dict[str, tuple[int, bytes]] | None:
    """What must stay as it is: a snapshot of the store an ``untouched`` case works on."""
    if case.store is None or case.store[0] != "untouched":
        return None
    return snapshot(case.store[1](ws))


def check(case: Case, ws: Workspace, done: subprocess.CompletedProcess[str], snap: dict | None) -> str:
    """Assert the case's outcome: exit status, the whole stderr, stdout, the store afterwards. Returns the line."""
    shown = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == case.exit, shown
    assert "Traceback" not in done.stderr + done.stdout, shown
    lines = done.stderr.splitlines()
    assert lines, shown
    assert not [line for line in lines if DASK_LOG_LINE.search(line)], shown
    *progress, line = lines
    if case.mid_work:
        assert all(PROGRESS_LINE.match(p) for p in progress), shown
        assert all(fragment in "\n".join(progress) for fragment in case.progress), shown
    else:
        assert not progress, shown  # the whole stderr is the one line
    assert line.startswith("mnist-dask: error: "), shown
    for fragment in case.names(ws):
        assert fragment in line, f"{fragment!r} not in: {line}"
    for fragment in case.absent:
        assert fragment not in line, f"misleading {fragment!r} in: {line}"
    assert done.stdout == "", shown
    _check_store(case, ws, snap)
    return line


def _check_store(case: Case, ws: Workspace, snap: dict | None) -> None:
    from mnist_dask.data.store import Store
    from mnist_dask.errors import UserError

    if case.store is None:
        return
    state, where = case.store[0], case.store[1](ws)
    if state == "no-store":
        assert not where.exists(), f"{where} was created"
    elif state == "untouched":
        assert snapshot(where) == snap, f"{where} changed"
    else:  # incomplete: the raw stage begun, never marked complete, and refused by readers
        assert state == "incomplete", state
        attrs = Store(str(where)).stage_attrs("raw")
        assert attrs is not None and attrs.get("complete") is False, attrs
        try:
            Store(str(where)).read("raw/train/images")
        except UserError as exc:
            assert "incomplete" in str(exc)
        else:
            raise AssertionError(f"{where}: an incomplete raw stage was read")


# -- the table, for comparing checkouts --------------------------------------------------------
def _table(ids: list[str]) -> None:
    """Run the cases (all, or those named) and print: case, exit status, stderr lines, seconds, first line."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp)).start()
        try:
            print("| case | exit | stderr lines | s | stderr (first line, cut) |")
            print("| --- | --- | --- | --- | --- |")
            for case in CASES + SLOW_CASES:
                if ids and case.id not in ids:
                    continue
                if case.needs == "mount" and ws.no_mount:
                    print(f"| {case.id} | skipped: {ws.no_mount} | | | |")
                    continue
                started = time.monotonic()
                ws.case = case.id
                try:
                    done = ws.cli(*case.args(ws), env=case.env, timeout=case.timeout)
                    code, lines = str(done.returncode), done.stderr.splitlines()
                except subprocess.TimeoutExpired:
                    code, lines = f"hang (killed after {case.timeout:g} s)", []
                first = (lines[0] if lines else "").replace("|", "\\|")[:110]
                print(f"| {case.id} | {code} | {len(lines)} | {time.monotonic() - started:.1f} | {first} |", flush=True)
        finally:
            ws.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _table(sys.argv[1:])

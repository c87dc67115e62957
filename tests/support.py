"""Test helpers shared by the suite: small generated MNIST look-alikes, real Dask processes, free ports,
report.html parsed into its sections."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import re
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# -- small generated inputs (IDX and CSV files written byte by byte) ------------------------
# A progress line a command may print on stderr before its one error line: the dashboard notice,
# a computing stage starting, done or warning, or a job's ``[name] ...`` log line.
PROGRESS_LINE = re.compile(
    r"^(Dask: .*; dashboard http\S+|[\w.+/-]+: (started|done in \d+\.\d s|warning: .+)|\[[\w.-]+\] .+)$"
)

IDX_STEMS = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}


class SmallMnist:
    """A tiny MNIST look-alike (40 train / 20 test images) and writers for its IDX and CSV files."""

    def __init__(self, seed: int = 7, n_train: int = 40, n_test: int = 20) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = {
            "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
            "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
        }
        # every pixel value 0 and 255 and every digit occur, so the CSV round trip is meaningful
        self.arrays["train_images"][0, 0, :2] = (0, 255)
        self.arrays["train_labels"][:10] = np.arange(10)

    @staticmethod
    def images_bytes(
        images: np.ndarray, *, magic: int = 0x803, dims: tuple[int, ...] | None = None, gz: bool = False
    ) -> bytes:
        dims = images.shape if dims is None else dims
        raw = struct.pack(f">I{len(dims)}I", magic, *dims) + np.ascontiguousarray(images, np.uint8).tobytes()
        return gzip.compress(raw) if gz else raw

    @staticmethod
    def labels_bytes(labels: np.ndarray, *, magic: int = 0x801, n: int | None = None, gz: bool = False) -> bytes:
        raw = struct.pack(">II", magic, len(labels) if n is None else n) + np.asarray(labels, np.uint8).tobytes()
        return gzip.compress(raw) if gz else raw

    @staticmethod
    def csv_text(images: np.ndarray, labels: np.ndarray, *, header: bool = False) -> str:
        lines = ["label," + ",".join(f"{r + 1}x{c + 1}" for r in range(28) for c in range(28))] if header else []
        lines += [f"{label}," + ",".join(map(str, image.reshape(-1).tolist())) for image, label in zip(images, labels)]
        return "\n".join(lines) + "\n"

    def write_idx(
        self, folder: Path, *, gz: bool = True, overrides: dict[str, bytes] | None = None, omit: tuple[str, ...] = ()
    ) -> Path:
        """Write the four IDX files (``<stem>.gz`` or plain ``<stem>``); ``overrides`` replaces a file's bytes."""
        return write_idx_files(folder, self.arrays, gz=gz, overrides=overrides, omit=omit)

    def write_csv(self, folder: Path, *, header: bool = False) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for split in ("train", "test"):
            path = folder / f"{split}.csv"
            path.write_text(
                self.csv_text(self.arrays[f"{split}_images"], self.arrays[f"{split}_labels"], header=header)
            )
            paths.append(path)
        return paths[0], paths[1]


def write_idx_files(
    folder: Path,
    arrays: dict[str, np.ndarray],
    *,
    gz: bool = True,
    overrides: dict[str, bytes] | None = None,
    omit: tuple[str, ...] = (),
) -> Path:
    """Write ``arrays`` (train_images, train_labels, test_images, test_labels) as the four IDX files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_STEMS.items():
        if key in omit:
            continue
        split, what = key.split("-")
        array = arrays[f"{split}_{what}"]
        write = SmallMnist.images_bytes if what == "images" else SmallMnist.labels_bytes
        data = overrides[key] if overrides and key in overrides else write(array, gz=gz)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(data)
    return folder


#: a k-NN job small enough for a cluster test: 30 training and 10 test rows of the store, k=3
TINY_KNN_JOB = (
    "experiment = 'knn'\n[params]\nsteps = [{ transform = 'sample', train = 30, test = 10, seed = 3 }]\n"
    "[params.model]\nn_neighbors = 3\n"
)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker --nworkers N`` (with nannies) on 127.0.0.1."""

    def __init__(
        self,
        n_workers: int = 2,
        memory_limit: str = "4GB",
        cwd: Path | None = None,
        worker_prefix: tuple[str, ...] = (),
        worker_env: dict[str, str] | None = None,
    ):
        """``cwd``: the folder the processes start in (where they resolve relative paths); ``worker_prefix``:
        a command the workers' command is handed to (``unshare ...`` for a disk of their own); ``worker_env``:
        variables set for the workers only. ``n_workers`` 0: a scheduler alone."""
        import os
        import subprocess
        import sys

        dask = str(Path(sys.executable).with_name("dask"))
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler = subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                self.address.rsplit(":", 1)[1],
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
        )
        self.workers = (
            None
            if n_workers == 0
            else subprocess.Popen(
                [
                    *worker_prefix,
                    dask,
                    "worker",
                    self.address,
                    "--nworkers",
                    str(n_workers),
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    memory_limit,
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, **(worker_env or {})},
            )
        )
        if n_workers:
            self.wait_for_workers(n_workers)
        else:
            self.wait_for_scheduler()

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        import time

        from distributed import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(n, timeout=timeout)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_for_scheduler(self, timeout: float = 60) -> None:
        """Block until the scheduler accepts a client."""
        import time

        from distributed import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(self.address, timeout="5s"):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def worker_pids(self) -> dict[str, int]:
        import os

        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            return client.run(os.getpid)

    def close(self) -> None:
        for process in (self.workers, self.scheduler):
            if process is None:
                continue
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()


def printed_follow_command(stderr: str) -> list[str]:
    """The command ``submit`` printed to follow the run, as a user would paste it (``mnist-dask`` run as a module)."""
    line = next(line for line in stderr.splitlines() if "follow it with " in line)
    words = shlex.split(line.split("follow it with ", 1)[1])
    if " " in words[0]:  # the whole command quoted
        words = shlex.split(words[0])
    assert words[0] == "mnist-dask", line
    return [sys.executable, "-m", "mnist_dask", *words[1:]]


# -- report.html, parsed ---------------------------------------------------------------------
class ReportPage:
    """A report.html parsed into its sections by title: tables (header, rows, highlighted row), figures (decoded
    PNGs), preformatted texts, notes of displays left out, list items and captions.

    Parsing checks the page is self-contained: no script, no link, every source an embedded PNG that decodes
    and is not blank.
    """

    def __init__(self, page: str) -> None:
        assert "<script" not in page.lower(), "a script in the report"
        assert not re.search(r"\bhref\s*=", page), "a link in the report"
        sources = re.findall(r"""\bsrc\s*=\s*["']?([^"'\s>]*)""", page)
        assert all(src.startswith("data:image/png;base64,") for src in sources), "a source outside the page"
        self.titles: list[str] = []
        self.tables: dict[str, dict[str, Any]] = {}
        self.images: dict[str, Image.Image] = {}
        self.texts: dict[str, str] = {}
        self.left_out: dict[str, str] = {}
        self.items: dict[str, list[str]] = {}
        self.captions: dict[str, str] = {}
        for body in re.findall(r"<section>(.*?)</section>", page, flags=re.S):
            self._add(_SectionParser(body))
        assert self.titles, "no sections"
        assert len(set(self.titles)) == len(self.titles), f"repeated section titles: {self.titles}"

    def _add(self, section: _SectionParser) -> None:
        title = section.texts.get("h2", "")
        self.titles.append(title)
        if section.rows:
            rows = section.rows[1:] if section.header else section.rows
            marked = [i for i, (cls, _) in enumerate(rows) if cls == "highlight"]
            self.tables[title] = {
                "header": section.rows[0][1] if section.header else [],
                "rows": [cells for _, cells in rows],
                "highlight": marked[0] if marked else None,
            }
        if section.image is not None:
            self.images[title] = decoded_png(section.image, title)
        if "pre" in section.texts:
            self.texts[title] = section.texts["pre"]
        if section.items:
            self.items[title] = section.items
        for cls, text in section.paragraphs:
            (self.left_out if cls == "note" else self.captions)[title] = text

    def column(self, title: str, heading: str) -> dict[str, str]:
        """First cell -> the cell under ``heading``, for every row of the table ``title``."""
        table = self.tables[title]
        at = table["header"].index(heading)
        return {row[0]: row[at] for row in table["rows"]}

    def facts(self, title: str) -> dict[str, str]:
        """A two-column table as {first cell: second cell}."""
        return {row[0]: row[1] for row in self.tables[title]["rows"]}


def decoded_png(src: str, title: str = "") -> Image.Image:
    """An embedded PNG decoded with Pillow, checked to be a real picture (over 50x50, not blank)."""
    assert src.startswith("data:image/png;base64,"), f"{title}: {src[:40]}"
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    image.load()
    assert image.format == "PNG" and image.size[0] > 50 and image.size[1] > 50, title
    assert np.asarray(image.convert("L")).std() > 5, f"{title}: a blank figure"
    return image


class _SectionParser(HTMLParser):
    """One <section>'s parts: texts by tag (h2, pre), table rows with their class, img src, list items, paragraphs."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.texts: dict[str, str] = {}
        self.rows: list[tuple[str, list[str]]] = []
        self.header = False
        self.image: str | None = None
        self.items: list[str] = []
        self.paragraphs: list[tuple[str, str]] = []
        self.feed(body)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.image = values.get("src") or ""
            return
        self.open.append(tag)
        if tag == "tr":
            self.rows.append((values.get("class") or "", []))
        elif tag in ("td", "th"):
            self.header = self.header or (tag == "th" and len(self.rows) == 1)
            self.rows[-1][1].append("")
        elif tag == "li":
            self.items.append("")
        elif tag == "p":
            self.paragraphs.append((values.get("class") or "", ""))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        where = self.open[-1] if self.open else ""
        if where in ("td", "th"):
            self.rows[-1][1][-1] += data
        elif where == "li":
            self.items[-1] += data
        elif where == "p":
            cls, text = self.paragraphs[-1]
            self.paragraphs[-1] = (cls, text + data)
        elif where in ("h2", "pre"):
            self.texts[where] = self.texts.get(where, "") + data


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port with one empty bucket, ``study``; yields its URL."""
    import s3fs  # only the S3 tests need it

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                s3fs.S3FileSystem(key="k", secret="s", endpoint_url=url, skip_instance_cache=True).mkdir("study")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)

"""Benchmark: what checking every chunk against its recorded MD5 costs a read of real MNIST.

Ingests real MNIST into a temporary store, then reads ``raw/train/images`` (60,000 images,
47 MB in 12 chunks) and its labels, each way several times, and prints one table:
- unchecked: ``dask.array.from_zarr`` (what reads were before);
- checked: ``Store.read`` (each task reads one chunk and hashes it before handing it out);
on a LocalCluster of worker processes and in this process (threads), median of the repeats.

    python benchmarks/verified_reads.py [--data ../shared/data/mnist] [--workers 2] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from mnist_dask.data.store import Store

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from mnist_dask.data.ingest import ingest
    from mnist_dask.data.sources import Source

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        store = Store(str(Path(tmp) / "mnist.zarr"))
        ingest(Source("idx", (args.data,)), store, client)
        rows = []
        for path in ("raw/train/images", "raw/train/labels"):
            assert np.array_equal(da.from_zarr(store.url, component=path).compute(), store.read(path).compute())
            for where, scheduler in ((f"cluster ({args.workers} worker processes)", client), ("this process", None)):
                plain = _median(_reader(store.url, path, scheduler, checked=None), args.repeats)
                verified = _median(_reader(store.url, path, scheduler, checked=store), args.repeats)
                rows.append((path, where, plain, verified))
    print(f"\nReading real MNIST with and without chunk checksums (median of {args.repeats})\n")
    print("| array | where | unchecked s | checked s | checked / unchecked | overhead s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for path, where, plain, verified in rows:
        print(f"| {path} | {where} | {plain:.3f} | {verified:.3f} | {verified / plain:.2f} | {verified - plain:+.3f} |")


def _reader(url: str, path: str, client: Client | None, checked: Store | None) -> Callable[[], object]:
    """Read ``path`` in full: through ``Store.read`` (checked) or plain ``from_zarr``, on the cluster or threads."""

    def read() -> object:
        array = checked.read(path) if checked is not None else da.from_zarr(url, component=path)
        return client.compute(array, sync=True) if client is not None else dask.compute(array, scheduler="threads")

    return read


def _median(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``action`` over ``repeats`` runs, after one warm-up."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()

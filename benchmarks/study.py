"""Benchmark: the whole study (``mnist-dask study``) from a fresh store, per job, with 2 and with 1 local workers.

Each worker count runs the study once, as a user does (``mnist-dask study --workers N``), on
its own fresh store in a temporary folder, and reads the per-job wall times and floors from
``study.json``. A job's floor is what it could not beat on those workers: its longest cluster
task, or all its task seconds spread over the workers, whichever is larger. Prints one table:
each job's wall time and floor on 2 workers, how close it is to the floor, its time on 1
worker and the speed-up; then the totals and the peak RSS of the largest process.

    python benchmarks/study.py [--workers 2 1] [--exclude knn_augmented25] [JOB ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", help="job files (default: every job in jobs/)")
    parser.add_argument("--source", default=f"idx:{REPO.parent / 'shared' / 'data' / 'mnist'}")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--exclude", action="append", default=["knn_augmented25"], help="when no JOB is named")
    parser.add_argument("--keep", help="folder to keep the stores and study folders in (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mnist-dask-study-"))
    studies = {}
    for workers in args.workers:
        studies[workers] = _study(root / f"workers{workers}", workers, args.jobs, args.source, args.exclude)
    _table(studies)


def _study(folder: Path, workers: int, jobs: list[str], source: str, exclude: list[str]) -> dict:
    """Run ``mnist-dask study`` on a fresh store with ``workers`` local workers; its study.json and costs."""
    command = [
        sys.executable,
        "-m",
        "mnist_dask",
        "study",
        *jobs,
        "--store",
        str(folder / "mnist.zarr"),
        "--source",
        source,
        "--workers",
        str(workers),
        "--study-dir",
        str(folder / "study"),
        *(option for name in ([] if jobs else exclude) for option in ("--exclude", name)),  # named jobs: just those
    ]
    load = Path("/proc/loadavg").read_text().split()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(
        f"{workers} worker(s): exit {done.returncode} in {seconds:.0f} s (load average at start {load})",
        file=sys.stderr,
    )
    if done.returncode not in (0, 1):
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    study = json.loads((folder / "study" / "study.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {**study, "command_seconds": seconds, "peak_rss_mb": peak}


def _table(studies: dict[int, dict]) -> None:
    """The per-job table (the most workers first), then totals."""
    counts = sorted(studies, reverse=True)
    most = studies[counts[0]]
    other = {c: {j["job"]: j for j in studies[c]["jobs"]} for c in counts[1:]}
    heading = f"| job | wall, {counts[0]} workers (s) | floor (s) | wall / floor |"
    heading += "".join(f" wall, {c} worker(s) (s) | speed-up {c} -> {counts[0]} |" for c in counts[1:])
    print(heading)
    print("| --- |" + " ---: |" * (3 + 2 * len(counts[1:])))
    for job in most["jobs"]:
        floor = job.get("floor_seconds")
        line = f"| {job['job']} | {job['seconds']:.1f} | {'' if floor is None else f'{floor:.1f}'} | "
        line += f"{job['seconds'] / floor:.2f} |" if floor else " |"
        for c in counts[1:]:
            slow = other[c].get(job["job"])
            line += f" {slow['seconds']:.1f} | {slow['seconds'] / job['seconds']:.2f}x |" if slow else " | |"
        print(line)
    total = (
        f"| **whole study** | {most['seconds']:.0f} | {sum(j.get('floor_seconds') or 0 for j in most['jobs']):.0f} | |"
    )
    for c in counts[1:]:
        total += f" {studies[c]['seconds']:.0f} | {studies[c]['seconds'] / most['seconds']:.2f}x |"
    print(total)
    met = most["ledger"]["exact"] + most["ledger"]["within print precision"]
    print(
        f"\nfigures as published: {met} of {len(most['figures'])}; peak RSS of the largest process: "
        + ", ".join(f"{c} workers {studies[c]['peak_rss_mb']:.0f} MB" for c in counts)
    )


if __name__ == "__main__":
    main()

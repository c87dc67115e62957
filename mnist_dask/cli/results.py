"""``report`` (rebuild a run's report.html) and ``classify`` (your own digit images, with a run's model)."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_dask.cli.options import StoreChoice, command, runs_root_of, store_options
from mnist_dask.cli.types import LocalFolder

RUN_FOLDER = LocalFolder()


def run_folder(ref: Path, store: StoreChoice) -> Path:
    """RUN as the user gave it: a run folder, else a run id or job name under the store's runs folder (as
    ``status`` takes it)."""
    from mnist_dask.jobs.records import find_run_dir

    return ref if ref.is_dir() else find_run_dir(str(ref), runs_root_of(store, None))


@command("report")
@click.argument("run_dir", metavar="RUN", type=RUN_FOLDER)
@store_options
def report(run_dir: Path, store: StoreChoice) -> None:
    """Rebuild a run's report.html from its result.json.

    RUN: the run's folder, or its run id (as status takes it). The run's own store is used; --store names it
    where it has moved (a store holding other images than the run's is refused).
    """
    from mnist_dask.jobs.records import read_result

    run_dir = run_folder(run_dir, store)
    result = read_result(run_dir)  # exit 2 before any work when there is no result
    # heavy: imported when the work starts
    from mnist_dask.jobs.run_store import store_of_run
    from mnist_dask.report.render import write_report

    chosen = store.open(may_create=False)  # --store, else the default store: drawn from only as a last resort
    drawn_from = store_of_run(result, run_dir, chosen if store.given else None) or chosen
    click.echo(str(write_report(result, run_dir, drawn_from)))


@command("classify")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--run", "run_dir", required=True, metavar="RUN", type=RUN_FOLDER, help="a finished run's folder or run id"
)
@store_options
def classify(images: tuple[str, ...], run_dir: Path, store: StoreChoice) -> None:
    """Predict the digit of your own image files with a run's model.

    IMAGE: PNG, BMP, JPEG, ... files. The run's own store is used; --store names it where it has moved (a store
    holding other images than the run's is refused).
    """
    from mnist_dask.jobs.records import read_result

    run_dir = run_folder(run_dir, store)
    read_result(run_dir)  # exit 2 before the heavy imports when there is no result (classify_files reads it again)
    # heavy: imported when the work starts
    from mnist_dask.jobs.classify import classify_files

    for path, digit, probability in classify_files(
        list(images), run_dir, store.open(may_create=False) if store.given else None
    ):
        click.echo(f"{path}: {digit} (probability {probability:.2f})")

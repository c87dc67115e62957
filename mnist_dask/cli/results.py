"""``report`` (rebuild a run's report.html) and ``classify`` (your own digit images, with a run's model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mnist_dask.cli.options import StoreChoice, command, store_options
from mnist_dask.cli.types import LocalFolder

RUN_FOLDER = LocalFolder(exists=True)


@command("report")
@click.argument("run_dir", metavar="RUN", type=RUN_FOLDER)
@store_options
def report(run_dir: Path, store: StoreChoice) -> None:
    """Rebuild a run's report.html from its result.json.

    RUN: the run's folder. The run's own store is used; --store names it where it has moved (a store holding
    other images than the run's is refused).
    """
    from mnist_dask.data.store import Store
    from mnist_dask.jobs.records import read_result
    from mnist_dask.report.render import write_report

    result = read_result(run_dir)  # exit 2 before any work when there is no result
    own = Store(result["store"]) if isinstance(result.get("store"), str) else None
    if store.given and own is not None and store.url != own.url:
        _refuse_other_inputs(store, result, run_dir)
    click.echo(str(write_report(result, run_dir, store.open() if store.given or own is None else own)))


def _refuse_other_inputs(store: StoreChoice, result: dict[str, Any], run_dir: Path) -> None:
    """A --store other than the run's own must hold the images the run was made from (a moved or copied store):
    another store's digits would be drawn as the run's."""
    held = (store.open().stage_attrs("raw") or {}).get("fingerprint")
    if result.get("inputs") is None or held != result["inputs"]:
        raise click.BadParameter(
            f"{store.url}: does not hold the images this run was made from ({Path(run_dir) / 'result.json'} names "
            f"the store {result['store']}); leave --store out to use the run's own store, or name a copy of it",
            param_hint="--store",
        )


@command("classify")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "run_dir", required=True, metavar="RUN_DIR", type=RUN_FOLDER, help="a finished run's folder")
@store_options
def classify(images: tuple[str, ...], run_dir: Path, store: StoreChoice) -> None:
    """Predict the digit of your own image files with a run's model.

    IMAGE: PNG, BMP, JPEG, ... files. The run's own store is used unless --store is given.
    """
    from mnist_dask.jobs.classify import classify_files

    for path, digit, probability in classify_files(list(images), run_dir, store.open() if store.given else None):
        click.echo(f"{path}: {digit} (probability {probability:.2f})")

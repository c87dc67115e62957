"""``ingest``, ``info`` and ``verify``: put MNIST into a store, say what a store holds, check its chunks."""

from __future__ import annotations

import json

import click

from mnist_dask.cli.formatting import rows
from mnist_dask.cli.options import (
    ClusterChoice,
    SourceChoice,
    StoreChoice,
    cluster_options,
    command,
    source_option,
    store_options,
)
from mnist_dask.cli.types import StoreLocation
from mnist_dask.data.defaults import DEFAULT_CHUNK
from mnist_dask.errors import UserError


@command("ingest")
@store_options
@source_option
@cluster_options()
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK,
    show_default=True,
    help="images per Zarr chunk along the first axis",
)
@click.option(
    "--force",
    is_flag=True,
    help="rewrite the raw images even if they are up to date; derived stages made from other images are dropped",
)
def ingest(
    store: StoreChoice, source: SourceChoice | None, cluster: ClusterChoice, chunk_size: int, force: bool
) -> None:
    """Read MNIST from a source into the Zarr store."""
    from mnist_dask.data.raw_stage import already_ingested
    from mnist_dask.data.sources import parse_source

    chosen = source.source if source else parse_source(None)
    target = store.open()
    if cluster.local:  # the workers run here: what they will read, and the store, can be checked here
        if source:
            source.check_here()
        if not force and (counts := already_ingested(chosen, target, chunk_size)) is not None:
            click.echo(_up_to_date(target, counts))  # no cluster started: the store alone says so
            return
    from mnist_dask.cluster import connect
    from mnist_dask.data.ingest import ingest as ingest_source

    with connect(cluster.options()) as client:
        outcome = ingest_source(chosen, target, client, chunk_size=chunk_size, force=force, ingest_command=True)
    if outcome.action == "skipped":
        click.echo(_up_to_date(target, outcome.rows))
    else:
        dropped = (
            f"; dropped {len(outcome.dropped)} derived stage{'' if len(outcome.dropped) == 1 else 's'} "
            "made from the images it replaced"
            if outcome.dropped
            else ""
        )
        click.echo(f"{target}: ingested {chosen} ({rows(outcome.rows)} images){dropped}")


def _up_to_date(store: object, counts: dict[str, int]) -> str:
    """What ingest says when the store already holds exactly this ingest."""
    return f"{store}: already ingested from these inputs ({rows(counts)} images); nothing to do (--force rewrites)"


@command("info")
@store_options
@click.argument("store_path", required=False, metavar="STORE", type=StoreLocation())
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def info(store: StoreChoice, as_json: bool) -> None:
    """Show what a store holds: stages, completion, provenance, arrays.

    STORE: store path or URL (same as --store)."""
    from mnist_dask.data.info import describe, format_description

    _refuse_run_predictions(store.url)
    description = describe(store.open(may_create=False))
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))


def _refuse_run_predictions(url: str) -> None:
    """Say that a run's ``predictions.zarr`` is what it is (not an MNIST store), rather than refuse it as
    another tool's store with advice about writing."""
    from mnist_dask.jobs.records import PENDING_OUTPUTS, PREDICTIONS, RESULT_FILE, STATUS_FILE
    from mnist_dask.locations import local_path

    path = local_path(url)
    if path is None or path.name != PREDICTIONS:
        return
    run, whose = path.parent, "the run in"
    if run.name == PENDING_OUTPUTS:  # a run in progress writes there (mnist_dask.jobs.driver)
        run, whose = run.parent, "the run in progress (or cut short) in"
    if (run / STATUS_FILE).is_file() or (run / RESULT_FILE).is_file():
        raise UserError(
            f"{url}: holds the test-set predictions of {whose} {run}, not an MNIST store; "
            f"see 'mnist-dask status {run}' and its {RESULT_FILE}"
        )


@command("verify")
@store_options
@cluster_options()
@click.argument("store_path", required=False, metavar="STORE", type=StoreLocation())
def verify(store: StoreChoice, cluster: ClusterChoice) -> None:
    """Recompute the chunk checksums a store recorded and name corrupted chunks.

    STORE: store path or URL (same as --store). Exit status 2 when a chunk does not match."""
    from mnist_dask.cluster import connect
    from mnist_dask.data.verify import verify_store

    target = store.open(may_create=False)
    if not target.exists():
        raise UserError(f"{target}: no Zarr store here")
    with connect(cluster.options()) as client:
        checked, problems = verify_store(target, client)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        raise UserError(f"{target}: {len(problems)} problem(s) found in {checked} chunks checked (listed above)")
    click.echo(f"{target}: all {checked} chunks match their recorded checksums")


@command("drop")
@store_options
@click.argument("stage", metavar="STAGE")
@click.option("--dependents", is_flag=True, help="also drop the stages computed from it")
def drop(store: StoreChoice, stage: str, dependents: bool) -> None:
    """Delete a stage from the store (e.g. one left incomplete or damaged), to compute it again.

    STAGE: raw or derived/<name> (see 'mnist-dask info')."""
    target = store.open(may_create=False)
    for dropped in target.drop_stage(stage, dependents=dependents):
        click.echo(f"{target}: dropped {dropped}")

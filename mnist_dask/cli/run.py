"""``run`` (drive a job from here) and ``submit`` (hand the job's driver to the cluster and return)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnist_dask.cli import options
from mnist_dask.cli.formatting import follow_command, headline
from mnist_dask.cli.options import ClusterChoice, SourceChoice, StoreChoice
from mnist_dask.cli.types import LocalFolder
from mnist_dask.errors import UserError

JOB = click.argument("job", metavar="JOB", type=click.Path(exists=True, dir_okay=False))
RUN_DIR = LocalFolder()


@options.command("run")
@JOB
@options.store_options
@options.source_option
@options.cluster_options()
@click.option(
    "--run-dir",
    type=RUN_DIR,
    help=f"folder for the run's outputs  {options.store_folder_default('runs', '<job name>')}",
)
def run(
    job: str, store: StoreChoice, source: SourceChoice | None, cluster: ClusterChoice, run_dir: Path | None
) -> None:
    """Run a job file here (ingest, transforms, search, predict, evaluate).

    JOB: a job file, e.g. jobs/knn_baseline.toml."""
    from mnist_dask.jobs.records import check_folder_kind, check_own_folder, runs_root
    from mnist_dask.jobs.spec import load_job

    spec = load_job(job)
    if source and cluster.local:
        source.check_here()
    folder = run_dir or runs_root(store.url) / spec.name
    check_folder_kind(folder, "--run-dir", "run")
    check_own_folder(folder, "--run-dir")
    # heavy: imported when the work starts
    from mnist_dask.cluster import announce_dashboard, connect
    from mnist_dask.jobs.driver import check_job_fits, run_job

    if source is None:  # the store's rows are those the run uses: check the job against them before anything starts
        check_job_fits(spec, store.open())
    options.writes_to(folder)
    folder.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails here, before a cluster starts

    with connect(cluster.options()) as client:

        def log(line: str) -> None:
            announce_dashboard(client)
            print(f"[{spec.name}] {line}", file=sys.stderr, flush=True)

        result = run_job(spec, store.open(), client, folder, source=source.source if source else None, log=log)
    click.echo(f"{spec.name}: {headline(result)}; results in {folder}/result.json")


@options.command("submit")
@JOB
@options.store_options
@options.source_option
@options.cluster_options(local=False)
@click.option(
    "--run-dir",
    type=RUN_DIR,
    help="folder for the run's outputs, on a filesystem the workers share  "
    + options.store_folder_default("runs", "<run id>"),
)
def submit(
    job: str, store: StoreChoice, source: SourceChoice | None, cluster: ClusterChoice, run_dir: Path | None
) -> None:
    """Start a job on a Dask cluster and return at once with its run id.

    JOB: a job file. The run id is the last line on stdout."""
    from mnist_dask.jobs.records import check_folder_kind, check_own_folder, new_run_id, runs_root
    from mnist_dask.jobs.spec import load_job

    spec = load_job(job)
    if cluster.local:
        raise UserError(
            "submit needs a running cluster: pass --scheduler ADDRESS (or set DASK_SCHEDULER_ADDRESS); "
            "to run here, use 'mnist-dask run'"
        )
    folder = run_dir or runs_root(store.url) / new_run_id(spec.name)
    check_folder_kind(folder, "--run-dir", "run")
    check_own_folder(folder, "--run-dir")
    # heavy: imported when the work starts
    from mnist_dask.cluster import connect
    from mnist_dask.jobs.driver import check_job_fits
    from mnist_dask.jobs.submit import submit_job

    if source is None:  # as for run: what the store's rows rule out is told here, not later on the cluster
        check_job_fits(spec, store.open())
    with connect(cluster.options(quiet=True)) as client:
        run_id = submit_job(spec, store.open(), client, folder, source=source.source if source else None)
    click.echo(f"submitted {spec.name} as {run_id}: follow it with {follow_command(folder)}", err=True)
    click.echo(run_id)

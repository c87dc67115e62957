"""``study``: every job (or the ones named) on one cluster and one store, then one ledger of every published figure."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnist_dask.cli import options
from mnist_dask.cli.formatting import follow_command
from mnist_dask.cli.options import ClusterChoice, SourceChoice, StoreChoice
from mnist_dask.cli.types import LocalFolder
from mnist_dask.errors import UserError

JOBS_FOLDER = Path("jobs")


@options.command("study")
@click.argument("jobs", nargs=-1, metavar="[JOB]...", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@options.store_options
@options.source_option
@options.cluster_options()
@click.option("--exclude", multiple=True, metavar="NAME", help="leave out this job (by name; repeatable)")
@click.option("--force", is_flag=True, help="run jobs again even when their run folder holds a finished run of them")
@click.option(
    "--study-dir",
    type=LocalFolder(),
    help="folder for study.json, index.html and figures.md  "
    + options.store_folder_default("study")
    + "; with --submit, runs/<run id> the same way",
)
@click.option("--submit", is_flag=True, help="hand the whole study to the cluster (--scheduler) and return at once")
def study(
    jobs: tuple[Path, ...],
    store: StoreChoice,
    source: SourceChoice | None,
    cluster: ClusterChoice,
    exclude: tuple[str, ...],
    force: bool,
    study_dir: Path | None,
    submit: bool,
) -> None:
    """Run the whole study: every job in jobs/ (or the JOB files named), then the ledger of published figures.

    Jobs share one cluster and one store, in order (the k-NN jobs first); a job that fails is reported and the
    others go on (exit status 1 at the end). A job whose run folder holds a finished run of the same job file
    on the same store is skipped unless --force. Writes study.json, a self-contained index.html and figures.md."""
    from mnist_dask.cluster import announce_dashboard, connect
    from mnist_dask.jobs.ledger import reproduced
    from mnist_dask.jobs.records import check_folder_kind, check_own_folder, new_run_id, runs_root, study_root
    from mnist_dask.jobs.study import STUDY_FILE, counted, failed_jobs, run_study, study_jobs

    paths = list(jobs) or sorted(JOBS_FOLDER.glob("*.toml"))
    if not paths:
        raise UserError(f"{JOBS_FOLDER.absolute()}: no job files here; name the job files to run")
    items = [item for item in study_jobs(paths, runs_root(store.url)) if item.job.name not in exclude]
    unknown = sorted(set(exclude) - {p.stem for p in paths} - {item.job.name for item in items})
    if unknown:
        raise UserError(f"--exclude {unknown[0]}: no such job among the study's")
    if submit:
        if cluster.local:
            raise UserError("study --submit needs a running cluster: pass --scheduler ADDRESS")
        from mnist_dask.jobs.submit import submit_study

        folder = study_dir or runs_root(store.url) / new_run_id("study")
        check_folder_kind(folder, "--study-dir", "study")
        check_own_folder(folder, "--study-dir", STUDY_FILE)
        with connect(cluster.options(quiet=True)) as client:
            run_id = submit_study(items, store.open(), client, folder, force=force)
        click.echo(
            f"submitted the study ({counted(len(items), 'job')}) as {run_id}: follow it with {follow_command(folder)}",
            err=True,
        )
        click.echo(run_id)
        return
    folder = study_dir or study_root(store.url)
    check_folder_kind(folder, "--study-dir", "study")
    check_own_folder(folder, "--study-dir", STUDY_FILE)
    options.writes_to(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with connect(cluster.options()) as client:

        def log(line: str) -> None:
            announce_dashboard(client)
            print(line, file=sys.stderr, flush=True)

        record = run_study(
            items, store.open(), client, folder, source=source.source if source else None, force=force, log=log
        )
    met = reproduced(record["ledger"])
    click.echo(
        f"study: {met} of {len(record['figures'])} published figures reproduced; {counted(len(items), 'job')} in "
        f"{record['seconds']:.0f} s; {folder}/index.html"
    )
    failure = failed_jobs(record, folder)
    if failure is not None:
        raise failure

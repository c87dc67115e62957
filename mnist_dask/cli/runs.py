"""``status`` (one run) and ``runs`` (every run): from run folders, and from the scheduler with --scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mnist_dask.cli.errors import EXIT_INTERNAL
from mnist_dask.cli.formatting import describe_run, runs_table
from mnist_dask.cli.options import (
    ClusterChoice,
    StoreChoice,
    cluster_options,
    command,
    runs_dir_option,
    runs_root_of,
    store_options,
)

ENDED_BADLY = ("failed", "lost")  # states for which ``status`` exits 1


@command("status")
@click.argument("run", metavar="RUN")
@store_options
@runs_dir_option
@cluster_options(local=False)
@click.option("--json", "as_json", is_flag=True, help="print the run's record as JSON")
def status(run: str, store: StoreChoice, runs_dir: Path | None, cluster: ClusterChoice, as_json: bool) -> None:
    """Show a run's state, stage and progress (or its error).

    RUN: a run id (under --runs-dir, else the store's own runs folder) or a run folder.

    Exit status 0 for a finished, queued or running run, 1 for a failed or lost one (also with --json), so that a
    script can wait on a run and tell how it ended; 2 for a user error (no such run, an unreadable record).
    """
    from mnist_dask.jobs.records import find_run_dir, read_status, scheduler_record, with_state

    record, progress = None, None
    if not cluster.local:
        from mnist_dask.cluster import connect  # heavy: imported only to ask a scheduler

        with connect(cluster.options(quiet=True, needs_workers=False)) as client:
            record, progress = scheduler_record(client, run)
    from_scheduler = record is not None
    if record is None:
        record = with_state(read_status(find_run_dir(run, runs_root_of(store, runs_dir))))
    if as_json:
        click.echo(json.dumps({**record, **({"progress": progress} if progress else {})}, indent=2))
    else:
        click.echo(describe_run(record, progress, from_scheduler=from_scheduler))
    if record["state"] in ENDED_BADLY:
        raise click.exceptions.Exit(EXIT_INTERNAL)


@command("runs")
@store_options
@runs_dir_option
@cluster_options(local=False)
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
def runs(store: StoreChoice, runs_dir: Path | None, cluster: ClusterChoice, as_json: bool) -> None:
    """List the store's runs (from its own runs folder, or --runs-dir; and from the scheduler with --scheduler).

    A run folder whose status.json cannot be read is listed as 'unreadable', with the reason.
    """
    from mnist_dask.jobs.records import list_runs, scheduler_runs, with_scheduler_state, with_state

    root = runs_root_of(store, runs_dir)
    found = list_runs(root) if runs_dir is not None or root.is_dir() else []  # no default folder yet: no runs
    records = {record["run_id"]: with_state(record) for record in found}
    if not cluster.local:
        from mnist_dask.cluster import connect  # heavy: imported only to ask a scheduler

        with connect(cluster.options(quiet=True, needs_workers=False)) as client:
            for run_id, record in scheduler_runs(client).items():
                records[run_id] = with_scheduler_state(client, record)
    ordered = sorted(records.values(), key=lambda r: str(r.get("submitted") or r.get("started") or ""))
    if as_json:
        click.echo(json.dumps(ordered, indent=2))
    elif not ordered:
        click.echo(f"no runs under {root}")
    else:
        click.echo(runs_table(ordered))

"""The ``mnist-dask`` command: parse options, call the library, print results.

One contract for every subcommand: the same option names, ``--help`` on each, exit
status 0 on success, 2 on a user error (one line on stderr, no traceback), 1 on an
internal failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from mnist_dask import __version__
from mnist_dask.errors import ClusterLostError, UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:  # Dask's own chatter (port fallbacks, graph sizes) is not the user's business
        import distributed  # noqa: F401  (it configures its loggers on import: ours must come after)

        chatty = ("distributed", "bokeh", "tornado", "asyncio")  # failures reach the user as our one line
        for name in [*chatty, *(n for n in logging.root.manager.loggerDict if n.startswith(chatty))]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"distributed(\..*)?$")
    try:
        return args.handler(args) or EXIT_OK
    except UserError as exc:
        print(f"mnist-dask: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except ClusterLostError as exc:
        print(f"mnist-dask: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("mnist-dask: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not bad input: the traceback helps whoever fixes it
        traceback.print_exc()
        print("mnist-dask: internal error (the traceback above is a bug report)", file=sys.stderr)
        return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="mnist-dask",
        description="The MNIST classification study as Dask batch jobs over Zarr stores.",
        epilog="Run 'mnist-dask COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mnist-dask {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = _subcommand(
        commands,
        "ingest",
        "read MNIST from a source into the Zarr store",
        _cmd_ingest,
        _store_options(),
        _source_options(),
        _cluster_options(),
    )
    ingest.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=5000,
        help="images per Zarr chunk along the first axis (default 5000)",
    )
    ingest.add_argument("--force", action="store_true", help="rewrite the store even if it is up to date")

    transform = commands.add_parser(
        "transform",
        help="compute a derived dataset (shift, downscale, ...)",
        description="compute a derived dataset as a resumable stage",
    )
    kinds = transform.add_subparsers(dest="transform", required=True, metavar="NAME")
    for spec in _transforms().values():
        sub = _subcommand(kinds, spec.name, spec.help, _cmd_transform, _store_options(), _cluster_options())
        sub.add_argument(
            "--input", default="raw", metavar="STAGE", help="dataset to transform: raw (default) or derived/<name>"
        )
        sub.add_argument("--force", action="store_true", help="recompute even if the result is up to date")
        for key, default in spec.defaults.items():
            sub.add_argument(
                f"--{key.replace('_', '-')}",
                dest=f"param_{key}",
                default=default,
                type=_boolean if isinstance(default, bool) else type(default),
                help=f"(default {default})",
            )

    run = _subcommand(
        commands,
        "run",
        "run a job file (ingest, transforms, search, predict, evaluate)",
        _cmd_run,
        _store_options(),
        _source_options(),
        _cluster_options(),
    )
    run.add_argument("job", metavar="JOB", help="job file, e.g. jobs/knn_baseline.toml")
    run.add_argument(
        "--run-dir",
        default=None,
        help="folder for the run's outputs (default runs/<job name> beside a local store: storage/runs/<job name>)",
    )

    submit = _subcommand(
        commands,
        "submit",
        "start a job on a Dask cluster and return at once with its run id",
        _cmd_submit,
        _store_options(),
        _source_options(),
        _cluster_options(local=False),
    )
    submit.add_argument("job", metavar="JOB", help="job file, e.g. jobs/knn_baseline.toml")
    submit.add_argument(
        "--run-dir",
        default=None,
        help="folder for the run's outputs, on a filesystem the workers share "
        "(default runs/<run id> beside a local store: storage/runs/<run id>)",
    )

    status = _subcommand(
        commands,
        "status",
        "show a run's state, stage and progress (or its error)",
        _cmd_status,
        _runs_options(),
        _cluster_options(local=False),
    )
    status.add_argument("run", metavar="RUN", help="run id (under --runs-dir) or run folder")
    status.add_argument("--json", action="store_true", help="print the run's record as JSON")

    runs = _subcommand(
        commands,
        "runs",
        "list runs (from --runs-dir, and from the scheduler with --scheduler)",
        _cmd_runs,
        _runs_options(),
        _cluster_options(local=False),
    )
    runs.add_argument("--json", action="store_true", help="print the records as JSON")

    _subcommand(
        commands,
        "verify",
        "recompute the chunk checksums a store recorded and name corrupted chunks",
        _cmd_verify,
        _store_options(),
        _cluster_options(),
    ).add_argument("store_path", nargs="?", metavar="STORE", help="store path or URL (same as --store)")

    report = _subcommand(
        commands, "report", "rebuild a run's report.html from its result.json", _cmd_report, _store_options()
    )
    report.add_argument("run_dir", metavar="RUN", help="the run's folder (holding result.json)")

    classify = _subcommand(
        commands,
        "classify",
        "predict the digit of your own image files with a run's model",
        _cmd_classify,
        _store_options(),
    )
    classify.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, BMP, JPEG, ... files")
    classify.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run's folder")

    info = _subcommand(commands, "info", "show what a store holds", _cmd_info, _store_options())
    info.add_argument("store_path", nargs="?", metavar="STORE", help="store path or URL (same as --store)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    drop = _subcommand(commands, "drop", "delete a stage from the store", _cmd_drop, _store_options())
    drop.add_argument("stage", metavar="STAGE", help="raw or derived/<name> (see 'mnist-dask info')")
    drop.add_argument("--dependents", action="store_true", help="also drop the stages computed from it")
    return parser


# -- subcommands -----------------------------------------------------------------------
def _cmd_ingest(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import connect
    from mnist_dask.data.ingest import ingest
    from mnist_dask.data.sources import parse_source

    source, store = parse_source(args.source), _store(args)
    with connect(_cluster(args)) as client:
        outcome = ingest(source, store, client, chunk_size=args.chunk_size, force=args.force)
    rows = ", ".join(f"{split} {n:,}" for split, n in outcome.rows.items())
    if outcome.action == "skipped":
        print(f"{store}: already ingested from these inputs ({rows} images); nothing to do (--force rewrites)")
    else:
        print(f"{store}: ingested {source} ({rows} images)")
    return EXIT_OK


def _cmd_transform(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import connect
    from mnist_dask.transforms.registry import run_transform

    store = _store(args)
    params = {key.removeprefix("param_"): value for key, value in vars(args).items() if key.startswith("param_")}
    with connect(_cluster(args)) as client:
        outcome = run_transform(store, client, args.transform, params, input_stage=args.input, force=args.force)
    if outcome.action == "skipped":
        print(f"{store}: {outcome.stage} is up to date; nothing to do (--force recomputes)")
    else:
        print(f"{store}: wrote {outcome.stage}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import connect
    from mnist_dask.data.sources import parse_source
    from mnist_dask.jobs.driver import run_job
    from mnist_dask.jobs.records import runs_root
    from mnist_dask.jobs.spec import load_job

    job = load_job(args.job)
    source = parse_source(args.source) if args.source or os.environ.get("MNIST_DASK_SOURCE") else None
    store = _store(args)
    run_dir = Path(args.run_dir) if args.run_dir else runs_root(store.url) / job.name
    with connect(_cluster(args)) as client:
        result = run_job(
            job, store, client, run_dir, source=source, log=lambda line: print(f"[{job.name}] {line}", file=sys.stderr)
        )
    print(f"{job.name}: {_headline(result)}; results in {run_dir}/result.json")
    return EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import connect, scheduler_address
    from mnist_dask.data.sources import parse_source
    from mnist_dask.jobs.records import new_run_id, runs_root
    from mnist_dask.jobs.spec import load_job
    from mnist_dask.jobs.submit import submit_job

    job = load_job(args.job)
    source = parse_source(args.source) if args.source or os.environ.get("MNIST_DASK_SOURCE") else None
    store = _store(args)
    if not scheduler_address(args.scheduler):
        raise UserError(
            "submit needs a running cluster: pass --scheduler ADDRESS (or set DASK_SCHEDULER_ADDRESS); "
            "to run here, use 'mnist-dask run'"
        )
    run_dir = Path(args.run_dir) if args.run_dir else runs_root(store.url) / new_run_id(job.name)
    with connect(_cluster(args, quiet=True)) as client:
        run_id = submit_job(job, store, client, run_dir, source=source)
    print(
        f"submitted {job.name}: follow it with 'mnist-dask status {run_id}' (outputs in {run_dir.absolute()})",
        file=sys.stderr,
    )
    print(run_id)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import scheduler_address
    from mnist_dask.jobs.records import find_run_dir, read_status

    record, client_info = None, {}
    if scheduler_address(args.scheduler):
        record, client_info = _from_scheduler(args, args.run)
    if record is None:
        record = read_status(find_run_dir(args.run, _runs_dir(args)))
        record = {**record, "state": _state_of(record, client_info)}
    if args.json:
        print(json.dumps({**record, **client_info}, indent=2))
    else:
        print(_describe_run(record, client_info.get("progress")))
    return EXIT_OK


def _cmd_runs(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import scheduler_address
    from mnist_dask.jobs.records import list_runs

    records = {r["run_id"]: {**r, "state": _state_of(r, {})} for r in list_runs(_runs_dir(args))}
    if scheduler_address(args.scheduler):
        from mnist_dask.cluster import connect
        from mnist_dask.jobs.records import scheduler_runs

        with connect(_cluster(args, quiet=True)) as client:
            for run_id, record in scheduler_runs(client).items():
                alive = _driver_alive(client, record)
                records[run_id] = {**record, "state": _state_of(record, {"driver_alive": alive})}
    ordered = sorted(records.values(), key=lambda r: r.get("submitted") or r.get("started") or "")
    if args.json:
        print(json.dumps(ordered, indent=2))
        return EXIT_OK
    if not ordered:
        print(f"no runs under {_runs_dir(args)}")
        return EXIT_OK
    print(f"{'RUN':44s} {'STATE':9s} {'STARTED':19s} {'STAGE / RESULT'}")
    for record in ordered:
        started = (record.get("started") or record.get("submitted") or "")[:19].replace("T", " ")
        print(f"{record['run_id']:44s} {record['state']:9s} {started:19s} {_outcome(record)}")
    return EXIT_OK


def _from_scheduler(args: argparse.Namespace, run_id: str) -> tuple[dict | None, dict]:
    """A submitted run's record, driver liveness and stage progress, from the scheduler."""
    from mnist_dask.cluster import connect
    from mnist_dask.jobs.records import scheduler_runs, stage_progress

    with connect(_cluster(args, quiet=True)) as client:
        record = scheduler_runs(client).get(Path(run_id).name)
        if record is None:
            return None, {}
        info = {"driver_alive": _driver_alive(client, record), "progress": stage_progress(client, record["run_id"])}
    return {**record, "state": _state_of(record, info)}, info


def _driver_alive(client, record: dict) -> bool | None:
    """Whether the scheduler still holds a submitted run's driver (None: not a submitted run)."""
    from mnist_dask.jobs.records import driver_alive

    return driver_alive(client, record["driver_key"]) if record.get("driver_key") else None


def _state_of(record: dict, info: dict) -> str:
    """The record's state, 'lost' when its driver is known to be gone."""
    from mnist_dask.jobs.records import liveness

    state = liveness(record)
    if state in ("queued", "running") and info.get("driver_alive") is False:
        return "lost"
    return state


def _describe_run(record: dict, progress: dict | None) -> str:
    """Several lines about one run for a person."""
    lines = [f"run {record['run_id']} (job {record['job']}): {record['state']}"]
    for key in ("submitted", "started", "finished"):
        if record.get(key):
            lines.append(f"  {key}: {record[key]}")
    if record["state"] in ("queued", "running") and record.get("stage"):
        detail = ""
        if progress and progress.get("total"):
            where = "" if progress.get("stage") in (None, record["stage"]) else f" of {progress['stage']}"
            detail = f" ({progress['done']}/{progress['total']} tasks done{where})"
        lines.append(f"  stage: {record['stage']}{detail}")
    if record.get("stages"):
        lines.append("  stages: " + ", ".join(f"{name} {took:.1f} s" for name, took in record["stages"].items()))
    if record["state"] == "failed":
        lines.append(f"  error: {record.get('error')}")
    if record["state"] == "lost":
        lines.append(
            "  the run's driver is gone (its process or worker died); completed stages are kept in the "
            "store: run or submit the job again to resume"
        )
    if record["state"] == "finished" and record.get("test_accuracy") is not None:
        lines.append(f"  test accuracy: {record['test_accuracy']:.4f}")
    if record.get("run_dir"):
        lines.append(f"  folder: {record['run_dir']}")
    if record.get("log"):
        lines.append(f"  last log line: {record['log'][-1]}")
    return "\n".join(lines)


def _outcome(record: dict) -> str:
    """One short cell: the stage in flight, the accuracy, or the error."""
    if record["state"] == "failed":
        return f"error: {record.get('error', '')}"[:80]
    if record["state"] == "finished":
        accuracy = record.get("test_accuracy")
        return f"test accuracy {accuracy:.4f}" if accuracy is not None else "done"
    return record.get("stage") or ""


def _headline(result: dict) -> str:
    """One line summarising a run: its test accuracy (and model) when it has one."""
    metrics = result.get("metrics", {})
    if "test_accuracy" not in metrics:
        return "done"
    model = result.get("model", {})
    described = f" (model {model['n_neighbors']}-NN {model['weights']})" if "n_neighbors" in model else ""
    return f"test accuracy {metrics['test_accuracy']:.4f}{described}"


def _transforms():
    from mnist_dask.transforms.registry import TRANSFORMS

    return TRANSFORMS


def _cmd_verify(args: argparse.Namespace) -> int:
    from mnist_dask.cluster import connect
    from mnist_dask.data.verify import verify_store

    store = _store(args, url=args.store_path)
    if not store.exists():
        raise UserError(f"{store}: no Zarr store here")
    with connect(_cluster(args)) as client:
        checked, problems = verify_store(store, client)
    for problem in problems:
        print(problem)
    if problems:
        raise UserError(f"{store}: {len(problems)} problem(s) found in {checked} chunks checked (listed above)")
    print(f"{store}: all {checked} chunks match their recorded checksums")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from mnist_dask.data.info import describe, format_description

    store = _store(args, url=args.store_path)
    description = describe(store)
    print(json.dumps(description, indent=2) if args.json else format_description(description))
    return EXIT_OK


def _cmd_drop(args: argparse.Namespace) -> int:
    store = _store(args)
    for stage in store.drop_stage(args.stage, dependents=args.dependents):
        print(f"{store}: dropped {stage}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from mnist_dask.jobs.records import read_result
    from mnist_dask.report.render import write_report

    result = read_result(Path(args.run_dir))  # exit 2 before any work when there is no result
    from mnist_dask.data.store import DEFAULT_STORE

    given = args.store != os.environ.get("MNIST_DASK_STORE", DEFAULT_STORE)  # else: the run's own store
    store = _store(args) if given or "store" not in result else None
    print(write_report(result, Path(args.run_dir), store))
    return EXIT_OK


def _cmd_classify(args: argparse.Namespace) -> int:
    from mnist_dask.data.store import DEFAULT_STORE
    from mnist_dask.jobs.classify import classify_files

    given = args.store != os.environ.get("MNIST_DASK_STORE", DEFAULT_STORE)  # else: the run's own store
    for path, digit, probability in classify_files(args.images, args.run, _store(args) if given else None):
        print(f"{path}: {digit} (probability {probability:.2f})")
    return EXIT_OK


# -- shared options --------------------------------------------------------------------
def _store_options() -> argparse.ArgumentParser:
    from mnist_dask.data.store import DEFAULT_STORE

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("store")
    group.add_argument(
        "--store",
        default=os.environ.get("MNIST_DASK_STORE", DEFAULT_STORE),
        help=f"Zarr store path or fsspec URL (default $MNIST_DASK_STORE or {DEFAULT_STORE})",
    )
    group.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option for the store, e.g. endpoint_url=... (repeatable)",
    )
    return parent


def _source_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--source",
        default=None,
        help="openml | idx[:DIR_OR_URL] | csv:TRAIN,TEST (default $MNIST_DASK_SOURCE or openml)",
    )
    return parent


def _runs_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[_store_options()])
    parent.add_argument(
        "--runs-dir",
        default=None,
        help="folder holding the run folders (default runs/ beside a local --store: storage/runs)",
    )
    return parent


def _runs_dir(args: argparse.Namespace) -> Path:
    from mnist_dask.jobs.records import runs_root

    return Path(args.runs_dir) if args.runs_dir else runs_root(_store(args).url)


def _cluster_options(local: bool = True) -> argparse.ArgumentParser:
    """--scheduler and its connection options; with local, the shape of a local cluster too."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("cluster")
    group.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="existing Dask scheduler (default $DASK_SCHEDULER_ADDRESS / dask.config"
        + ("; else a local cluster is started)" if local else ")"),
    )
    if local:
        group.add_argument(
            "--workers",
            type=_positive_int,
            default=None,
            help="worker processes of the local cluster (default: one per core)",
        )
        group.add_argument(
            "--threads-per-worker", type=_positive_int, default=1, help="threads per local worker (default 1)"
        )
        group.add_argument(
            "--memory-limit", default="auto", help="memory limit per local worker, e.g. 3GB (default auto)"
        )
    group.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up reaching --scheduler after this long (default 10)",
    )
    group.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate for a tls:// scheduler")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for a tls:// scheduler")
    group.add_argument("--tls-key", metavar="PEM", help="client private key for a tls:// scheduler")
    return parent


def _subcommand(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
    *parents: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text, parents=list(parents))
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dask's own log messages")
    parser.set_defaults(handler=handler)
    return parser


def _store(args: argparse.Namespace, url: str | None = None):
    from mnist_dask.data.store import Store

    options = {}
    for item in args.storage_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--storage-option {item}: expected KEY=VALUE")
        options[key] = value
    return Store(url or args.store, options)


def _cluster(args: argparse.Namespace, quiet: bool = False):
    from mnist_dask.cluster import ClusterOptions

    local = {
        name: getattr(args, name) for name in ("workers", "threads_per_worker", "memory_limit") if hasattr(args, name)
    }  # commands that only reach an existing scheduler have none
    return ClusterOptions(
        scheduler=args.scheduler,
        connect_timeout=args.connect_timeout,
        quiet=quiet,
        verbose=args.verbose,
        tls_ca_file=args.tls_ca_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        **local,
    )


def _boolean(text: str) -> bool:
    """true/false, yes/no, 1/0 (``bool('False')`` would be True)."""
    value = text.strip().lower()
    if value not in ("true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"{text} is not true or false")
    return value in ("true", "yes", "1")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value

"""Options shared by the commands, as decorators: the store, the source, the cluster, the runs folder.

Each decorator declares its click options (types and ranges included) and hands the command one
small object instead of loose values (:class:`StoreChoice`, :class:`SourceChoice`,
:class:`ClusterChoice`). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from mnist_dask.cli.errors import Circumstances
from mnist_dask.cli.types import KeyValue, LocalFolder, MemorySize, Seconds, SourceText, StoreLocation
from mnist_dask.cluster_options import ClusterOptions
from mnist_dask.data.defaults import CACHE_ENV, DEFAULT_STORE, SOURCE_ENV, STORE_ENV
from mnist_dask.locations import FILE_SCHEME, local_path

if TYPE_CHECKING:
    from mnist_dask.data.sources import Source
    from mnist_dask.data.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def command(name: str) -> Callable[[F], click.Command]:
    """A subcommand with ``-v/--verbose`` (Dask's own log messages, and a bug's traceback on stderr).

    Its help is the function's docstring; the first line is the summary ``mnist-dask --help`` lists.
    """

    def decorate(function: F) -> click.Command:
        """Make ``function`` the command."""
        help = inspect.getdoc(function) or ""
        verbose = click.option(
            "-v",
            "--verbose",
            is_flag=True,
            expose_value=False,
            callback=_remember_verbose,
            help="show Dask's own log messages (and a bug's traceback)",
        )
        summary = help.splitlines()[0].removesuffix(".") if help else None
        return click.command(name, help=help, short_help=summary)(verbose(function))

    return decorate


def _remember_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Keep ``--verbose`` where the error handler and the cluster options find it."""
    if value:
        Circumstances.of(ctx).verbose = True


def verbose() -> bool:
    """Whether ``--verbose`` was given to the command being run."""
    return Circumstances.of().verbose


def writes_to(path: str | Path) -> None:
    """Tell the error handler that the command writes to a local ``path`` (to name it when a disk fills)."""
    Circumstances.of().writes.append(str(path))


# -- the store ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreChoice:
    """The store the user chose: its location, fsspec options, and whether ``--store`` was typed."""

    url: str
    storage_options: dict[str, str] = field(default_factory=dict)
    given: bool = False  # --store on the command line (not the default, not $MNIST_DASK_STORE)

    def check(self) -> None:
        """Refuse fsspec options for a local path (the local filesystem takes none)."""
        if self.storage_options and local_path(self.url) is not None:
            raise click.BadParameter(
                f"{', '.join(self.storage_options)}: fsspec options apply to a store URL (s3://...), "
                f"not to the local path {self.url}",
                param_hint="--storage-option",
            )

    def open(self, may_create: bool = True) -> Store:
        """The library's Store for this choice; ``may_create``: the command may make the store (see Store)."""
        from mnist_dask.data.store import Store

        return Store(self.url, dict(self.storage_options), may_create)


def store_options(function: F) -> F:
    """``--store`` and ``--storage-option``, handed to the command as ``store: StoreChoice``."""

    @functools.wraps(function)
    def with_store(*args: Any, store: str, storage_options: tuple[tuple[str, str], ...], **kwargs: Any) -> Any:
        """Call the command with the StoreChoice (and tell the error handler about the store).

        A command's STORE argument (``store_path``: info, verify) names the store as --store does; both
        given must agree."""
        given = click.get_current_context().get_parameter_source("store") is ParameterSource.COMMANDLINE
        argument = kwargs.pop("store_path", None)
        if argument is not None:
            if given and not _same_location(argument, store):
                raise click.UsageError(f"STORE {argument} and --store {store} name two stores; give one of them")
            store, given = argument, True
        choice = StoreChoice(store, dict(storage_options), given)
        choice.check()
        Circumstances.of().store = choice.url
        if local_path(choice.url) is not None:
            writes_to(choice.url.removeprefix(FILE_SCHEME))  # as typed, for the disk-full line
        return function(*args, store=choice, **kwargs)

    with_store = click.option(
        "--storage-option",
        "storage_options",
        type=KeyValue(),
        multiple=True,
        help="fsspec option for a store URL, e.g. endpoint_url=... (repeatable)",
    )(with_store)
    with_store = click.option(
        "--store",
        type=StoreLocation(),
        envvar=STORE_ENV,
        default=DEFAULT_STORE,
        show_default=True,
        show_envvar=True,
        help="Zarr store path or fsspec URL",
    )(with_store)
    return with_store  # type: ignore[return-value]


def _same_location(a: str, b: str) -> bool:
    """Whether two store locations as typed are one: the same text, or the same local folder."""
    here, there = local_path(a), local_path(b)
    return a == b or (here is not None and there is not None and here.resolve() == there.resolve())


# -- the source ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceChoice:
    """A parsed ``--source`` (or $MNIST_DASK_SOURCE) and the name to blame when it is unusable."""

    source: Source
    origin: str  # "--source" or "MNIST_DASK_SOURCE"

    def check_here(self) -> None:
        """Refuse a local folder or file that does not exist (checked only where the workers run, i.e. here)."""
        kind, locations = self.source.kind, self.source.locations
        for location in locations:
            path = local_path(location)
            if path is None:
                continue
            if kind == "idx" and not path.is_dir():
                what = "not a folder" if path.exists() else "no such folder"
            elif kind == "csv" and not path.is_file():
                what = "a folder, not a CSV file" if path.is_dir() else "no such file"
            else:
                continue
            raise click.BadParameter(f"{path}: {what}", param_hint=self.origin)


def source_option(function: F) -> F:
    """``--source`` (default $MNIST_DASK_SOURCE), handed to the command as ``source: SourceChoice | None``."""

    @functools.wraps(function)
    def with_source(*args: Any, source: Source | None, **kwargs: Any) -> Any:
        """Call the command with the SourceChoice, naming the variable when the value came from it."""
        ctx = click.get_current_context()
        from_env = ctx.get_parameter_source("source") is ParameterSource.ENVIRONMENT
        choice = SourceChoice(source, SOURCE_ENV if from_env else "--source") if source is not None else None
        return function(*args, source=choice, **kwargs)

    return click.option(  # type: ignore[return-value]
        "--source",
        type=SourceText(),
        envvar=SOURCE_ENV,
        show_envvar=True,
        help=f"openml | idx[:DIR_OR_URL] | csv:TRAIN,TEST (default openml); downloads are kept in ${CACHE_ENV} "
        "(default ~/.cache/mnist-dask)",
    )(with_source)


# -- the cluster ---------------------------------------------------------------------------------
ClusterChoice = ClusterOptions  # what the cluster options hand to a command


_LOCAL_OPTIONS = ("workers", "threads_per_worker", "memory_limit")
MAX_LOCAL = 4 * (os.cpu_count() or 1)  # local worker processes (or threads each): more only thrashes the machine


def cluster_options(local: bool = True) -> Callable[[F], F]:
    """``--scheduler`` and its connection options; with ``local``, the shape of a local cluster too.

    Handed to the command as ``cluster: ClusterChoice``.
    """
    pem = click.Path(exists=True, dir_okay=False)
    options = [
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="existing Dask scheduler (default $DASK_SCHEDULER_ADDRESS / dask config"
            + ("; else a local cluster is started)" if local else ")"),
        ),
        click.option(
            "--connect-timeout",
            type=Seconds(),
            default=10.0,
            show_default=True,
            help="give up reaching --scheduler (and waiting for its first worker) after this many seconds",
        ),
        click.option("--tls-ca-file", type=pem, metavar="PEM", help="CA certificate for a tls:// scheduler"),
        click.option("--tls-cert", type=pem, metavar="PEM", help="client certificate for a tls:// scheduler"),
        click.option("--tls-key", type=pem, metavar="PEM", help="client private key for a tls:// scheduler"),
    ]
    if local:
        options[1:1] = [
            click.option(
                "--workers",
                type=click.IntRange(min=1, max=MAX_LOCAL),
                help="worker processes of the local cluster  [default: one per core]",
            ),
            click.option(
                "--threads-per-worker",
                type=click.IntRange(min=1, max=MAX_LOCAL),
                default=1,
                show_default=True,
                help="threads per local worker",
            ),
            click.option(
                "--memory-limit",
                type=MemorySize(),
                default="auto",
                show_default=True,
                help="memory limit per local worker, e.g. 3GB",
            ),
        ]

    def decorate(function: F) -> F:
        """Add the options to ``function`` and gather them into ``cluster``."""

        @functools.wraps(function)
        def with_cluster(*args: Any, **kwargs: Any) -> Any:
            """Call the command with the ClusterChoice gathered from its options."""
            names = ("scheduler", "connect_timeout", "tls_ca_file", "tls_cert", "tls_key")
            chosen = {name: kwargs.pop(name) for name in (*names, *(_LOCAL_OPTIONS if local else ()))}
            cluster = ClusterChoice(**chosen, verbose=verbose())
            if local:
                _refuse_local_shape_with_a_scheduler(cluster)
            return function(*args, cluster=cluster, **kwargs)

        for option in reversed(options):
            with_cluster = option(with_cluster)
        return with_cluster  # type: ignore[return-value]

    return decorate


def _refuse_local_shape_with_a_scheduler(cluster: ClusterOptions) -> None:
    """--workers, --threads-per-worker and --memory-limit shape the local cluster: with an existing scheduler
    they would be silently ignored, so giving both is a usage error (the user expects a cluster of that shape)."""
    ctx = click.get_current_context()
    given = [name for name in _LOCAL_OPTIONS if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if not given or cluster.local:  # in this order: cluster.local reads dask's config (imports dask)
        return
    import dask.config

    where = (
        f"--scheduler {cluster.scheduler}"
        if cluster.scheduler
        else "the scheduler of DASK_SCHEDULER_ADDRESS"
        if os.environ.get("DASK_SCHEDULER_ADDRESS")
        else f"the scheduler of dask config 'scheduler-address' ({dask.config.get('scheduler-address')})"
    )
    option = "--" + given[0].replace("_", "-")
    raise click.BadParameter(
        f"sizes the local cluster only; {where} runs on its own workers (leave {option} out)", param_hint=option
    )


# -- run folders ---------------------------------------------------------------------------------
def runs_dir_option(function: F) -> F:
    """``--runs-dir`` (an existing folder), handed to the command as ``runs_dir: Path | None``."""
    return click.option(
        "--runs-dir",
        type=LocalFolder(exists=True),
        help=f"folder holding the run folders  {store_folder_default('runs')}",
    )(function)


def store_folder_default(kind: str, inside: str = "") -> str:
    """The ``[default: ...]`` of an option whose folder is the store's own: ``records.store_outputs``'s rule in words
    (``kind`` is runs or study; ``inside``, a folder under it), then the default store's."""
    name, beside = Path(DEFAULT_STORE).name, Path(DEFAULT_STORE).parent
    below = f"/{inside}"
    return (
        f"[default: {kind}{below} beside a store named {name}, {kind}-NAME{below} beside any other NAME.zarr "
        f"(under {beside}/ for a URL): {beside / kind}{below}]"
    )


def runs_root_of(store: StoreChoice, runs_dir: Path | None) -> Path:
    """The folder of run folders: ``--runs-dir``, else the store's own (``runs/`` beside the default store)."""
    from mnist_dask.jobs.records import runs_root

    return runs_dir if runs_dir is not None else runs_root(store.url)

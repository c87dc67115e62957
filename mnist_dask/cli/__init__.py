"""The ``mnist-dask`` command (also ``dask mnist``): a click group of thin command modules over the library.

Exit status 0 on success, 2 on a user error, 1 on a lost cluster or a bug, each failure one
line on stderr (see :mod:`mnist_dask.cli.errors`); ``status`` also exits 1 for a failed or lost run.
Importing this package imports click and nothing heavy: ``--version`` and ``--help`` answer without loading dask.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from mnist_dask import __version__
from mnist_dask.cli import data, results, run, runs, study, transform
from mnist_dask.cli.errors import EXIT_OK, EXIT_USER, OneLineErrors
from mnist_dask.lean_imports import skip_sparse_arrays

PROG = "mnist-dask"


@click.group(
    "mnist",
    cls=OneLineErrors,
    short_help="The MNIST classification study as Dask batch jobs",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Run 'mnist-dask COMMAND --help' for a command's options.",
)
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """The MNIST classification study as Dask batch jobs over Zarr stores."""
    skip_sparse_arrays()  # every command, 'dask mnist' included: dask.array loads a second faster


for _command in (
    data.ingest,
    transform.transform,
    run.run,
    run.submit,
    study.study,
    runs.status,
    runs.runs,
    data.verify,
    data.drop,
    results.report,
    results.classify,
    data.info,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m mnist_dask``; returns the exit status."""
    try:
        status = cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare 'mnist-dask': the help, as click shows it
        exc.show()
        return EXIT_USER
    except click.exceptions.Abort:
        click.echo("mnist-dask: interrupted", err=True)
        return 130
    return status if isinstance(status, int) else EXIT_OK

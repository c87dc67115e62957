"""``transform NAME``: one subcommand per transform of the registry, its options generated from the
transform's parameters (summaries, defaults, help text and ranges from transforms.parameters).

The registry loads dask, so it is imported only when a transform runs: ``--help`` and a refused option
answer without it. A refused parameter value is named by the option the user typed (``--n-components``),
not by its key in job files.
"""

from __future__ import annotations

from typing import Any

import click

from mnist_dask.cli.options import ClusterChoice, StoreChoice, cluster_options, command, store_options
from mnist_dask.transforms.parameters import DEFAULTS, PARAMETERS, SUMMARIES, Param, ParameterError

_PREFIX = "param_"  # transform parameters' names in the callback's keyword arguments


class TransformGroup(click.Group):
    """The transform subcommands, built from the parameter tables on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The registry's transforms, in its order."""
        return list(DEFAULTS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command of one transform, or None for an unknown name (click reports it)."""
        return transform_command(cmd_name) if cmd_name in DEFAULTS else None


@click.group("transform", cls=TransformGroup, short_help="Compute a derived dataset (shift, downscale, ...)")
def transform() -> None:
    """Compute a derived dataset (shift, downscale, ...) as a resumable stage of the store."""


def transform_command(name: str) -> click.Command:
    """The ``transform NAME`` command of one registry entry (described by the light tables of its parameters)."""

    def run(store: StoreChoice, cluster: ClusterChoice, input_stage: str, force: bool, **values: Any) -> None:
        # its docstring (the command's help) is the transform's, set below
        # heavy: imported when the work starts
        from mnist_dask.cluster import connect
        from mnist_dask.transforms.registry import run_transform

        params = {key.removeprefix(_PREFIX): value for key, value in values.items()}
        target = store.open(may_create=False)  # transforms only add stages to a store that ingest made
        try:
            with connect(cluster.options()) as client:
                outcome = run_transform(
                    target, client, name, params, input_stage=input_stage, force=force, transform_command=True
                )
        except ParameterError as exc:  # named by the job file's key: the user typed the option
            raise exc.for_option() from None
        if outcome.action == "skipped":
            click.echo(f"{target}: {outcome.stage} is up to date; nothing to do (--force recomputes)")
        else:
            click.echo(f"{target}: wrote {outcome.stage}")

    summary = SUMMARIES[name]
    run.__doc__ = summary[:1].upper() + summary[1:] + "."
    for key, default in reversed(DEFAULTS[name].items()):
        run = parameter_option(key, default, PARAMETERS.get(name, {}).get(key, Param("")))(run)
    run = click.option("--force", is_flag=True, help="recompute even if the result is up to date")(run)
    run = click.option(
        "--input",
        "input_stage",
        default="raw",
        show_default=True,
        metavar="STAGE",
        help="dataset to transform: raw or derived/<name>",
    )(run)
    return command(name)(cluster_options()(store_options(run)))


def parameter_option(key: str, default: Any, param: Param) -> Any:
    """``--<key>`` with the type, range and help text of one transform parameter."""
    return click.option(
        f"--{key.replace('_', '-')}",
        _PREFIX + key,
        type=parameter_type(default, param),
        default=default,
        show_default=True,
        help=param.help,
    )


def parameter_type(default: Any, param: Param) -> click.ParamType:
    """The click type of a parameter: from its default's type, narrowed by its range or choices."""
    if isinstance(default, bool):
        return click.BOOL
    if isinstance(default, int):
        low, high = (None if bound is None else int(bound) for bound in (param.min, param.max))
        return click.IntRange(low, high) if param.min is not None or param.max is not None else click.INT
    if isinstance(default, float):
        ranged = param.min is not None or param.max is not None
        return click.FloatRange(param.min, param.max, min_open=param.min_open) if ranged else click.FLOAT
    return click.Choice(param.choices) if param.choices else click.STRING

"""How every failure reaches the user: one line on stderr, ``mnist-dask: error: <what>: <problem>``.

Exit status 2 for what the user can fix (bad options, bad input, an unusable path or
filesystem, an unreachable scheduler), 1 for a lost cluster or a bug. A bug's traceback
goes to a file named in its one line (and to stderr with ``--verbose``). Click's own usage
errors are rewritten into the same one line; ``--help`` stays click's help.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from mnist_dask.errors import ClusterLostError, JobsFailed, Terminated, UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
PREFIX = "mnist-dask: error: "
CIRCUMSTANCES = "mnist_dask.circumstances"
FULL_BELOW = 4 * 2**20  # free bytes under which a filesystem counts as the full one

#: OS errors that are about the user's paths or machine, not a bug: named by path, exit 2.
ENVIRONMENT_ERRNOS = {
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.EMFILE,
    errno.ENFILE,
}


class OneLineErrors(click.Group):
    """A click group whose commands (and sub-groups) fail in one line with the exit statuses above.

    Both entry points go through it: the ``mnist-dask`` script and ``dask mnist``.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Parse the group's own options; a usage error here is one line too."""
        with one_line_errors({}):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Parse and run the subcommand; whatever fails in it becomes its one line and exit status."""
        from mnist_dask.cli.pipes import tolerate_closed_output

        tolerate_closed_output()  # `mnist-dask run ... | head` must not fail the run
        with one_line_errors(ctx.meta):
            return super().invoke(ctx)


@dataclass
class Circumstances:
    """What the running command told about itself, to name the right thing when an error names nothing."""

    verbose: bool = False
    store: str | None = None  # the store it works on
    writes: list[str] = field(default_factory=list)  # local paths it writes to (store, run folder)

    @classmethod
    def of(cls, ctx: click.Context | None = None) -> Circumstances:
        """The circumstances of the command being run (kept in the root context)."""
        root = (ctx or click.get_current_context()).find_root()
        return root.meta.setdefault(CIRCUMSTANCES, cls())


@contextlib.contextmanager
def one_line_errors(meta: dict[str, Any]) -> Iterator[None]:
    """Turn any failure inside into its one line on stderr and ``click.exceptions.Exit(status)``."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.exceptions.NoArgsIsHelpError):
        raise
    except click.ClickException as exc:
        _fail(usage_line(exc), EXIT_USER)
    except UserError as exc:
        _fail(_first_line(exc), EXIT_USER)
    except (ClusterLostError, JobsFailed) as exc:
        _fail(_first_line(exc), EXIT_INTERNAL)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"mnist-dask: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        raise click.exceptions.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
    except Exception as exc:
        known = meta.get(CIRCUMSTANCES) or Circumstances()
        line = environment_line(exc, known) if isinstance(exc, OSError) else None
        line = line or remote_line(exc, known.store)
        if line is None:
            _fail(internal_line(exc, known.verbose), EXIT_INTERNAL)
        _fail(str(line), EXIT_USER)


def usage_line(exc: click.ClickException) -> str:
    """A click usage error as ``<option or argument>: <problem>``."""
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        kind = exc.param_type or ("argument" if isinstance(exc.param, click.Argument) else "option")
        return f"{parameter_name(exc.param, exc.ctx)}: missing {kind}"
    if isinstance(exc, click.BadParameter):
        name = exc.param_hint if isinstance(exc.param_hint, str) else None
        if name is None and exc.param is not None:
            name = parameter_name(exc.param, exc.ctx)
        return f"{name}: {_sentence(exc.message)}" if name else _sentence(exc.message)
    if isinstance(exc, click.NoSuchOption):
        hint = f"; did you mean {', '.join(sorted(exc.possibilities))}?" if exc.possibilities else ""
        return f"{exc.option_name}: no such option{hint}"
    if isinstance(exc, click.BadOptionUsage):
        return f"{exc.option_name}: {_sentence(exc.message)}"
    return _sentence(exc.format_message() if not isinstance(exc, click.UsageError) else exc.message)


def parameter_name(param: click.Parameter, ctx: click.Context | None) -> str:
    """How the user gave a parameter: its environment variable, its long option, or its metavar."""
    if ctx is not None and param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        envvar = param.envvar if isinstance(param.envvar, str) else None
        if envvar:
            return envvar
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def environment_line(exc: OSError, known: Circumstances) -> str | None:
    """``<path>: <problem>`` for an OS error about the user's paths or machine, else None.

    A worker's failed write carries no file name: the path is then the one of the command's
    writable paths whose filesystem shows the problem (full, read-only), else its store.
    """
    if exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    problem = _sentence(exc.strerror or type(exc).__name__)
    path = exc.filename if exc.filename is not None else _culprit(exc.errno, known)
    return f"{path}: {problem}" if path is not None else problem


def remote_line(exc: BaseException, store: str | None) -> str | None:
    """``<store>: <problem>`` for an object store's credential or connection failure, else None.

    Matched by class name along the exception chain, so botocore (an optional dependency) is not imported.
    """
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    for error in chain:
        problem = _REMOTE_PROBLEMS.get(type(error).__name__)
        if problem is not None:
            where = store or "the store"
            return f"{where}: {problem} ({_first_line(error)[:160]})"
    return None


_REMOTE_PROBLEMS = {
    "NoCredentialsError": "no credentials for the object store; pass --storage-option key=... "
    "--storage-option secret=..., or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "PartialCredentialsError": "incomplete credentials for the object store",
    "EndpointConnectionError": "cannot reach the object store's endpoint",
    "ConnectTimeoutError": "the object store's endpoint did not answer in time",
    "ReadTimeoutError": "the object store's endpoint did not answer in time",
    "ClientConnectorError": "cannot reach the server",
}


def _culprit(code: int | None, known: Circumstances) -> str | None:
    """Which of the command's writable local paths lies on a full (or read-only) filesystem."""
    for path in known.writes:
        existing = Path(path).expanduser()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            stats = os.statvfs(existing)
        except OSError:
            continue
        if code in (errno.ENOSPC, errno.EDQUOT) and stats.f_bavail * stats.f_frsize < FULL_BELOW:
            return path
        if code == errno.EROFS and stats.f_flag & os.ST_RDONLY:
            return path
    return known.store


def internal_line(exc: BaseException, verbose: bool = False) -> str:
    """One line for a bug: the exception, and the file its traceback was written to."""
    text = "".join(traceback.format_exception(exc))
    if verbose:
        print(text, file=sys.stderr, end="")
    where = ""
    with contextlib.suppress(OSError):
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"mnist-dask-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".traceback", delete=False
        ) as f:
            f.write(text)
        where = f"; traceback in {f.name}"
    return f"internal error: {type(exc).__name__}: {_first_line(exc)[:200]} (a bug{where})"


def _fail(line: str, status: int) -> None:
    """Print the one line and leave with ``status``."""
    click.echo(PREFIX + line, err=True)
    raise click.exceptions.Exit(status)


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sentence(message: str) -> str:
    """Click's messages as a clause: first letter small (unless an acronym), no final period."""
    message = message.strip().splitlines()[0] if message.strip() else ""
    if len(message) > 1 and message[0].isupper() and not message[1].isupper():
        message = message[0].lower() + message[1:]
    return message.removesuffix(".")

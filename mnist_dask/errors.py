"""Errors a user can cause and fix; the CLI turns them into one line and exit status 2."""


class UserError(Exception):
    """Bad input: a missing or malformed file, an unknown option, an unreachable scheduler.

    The message is one line that names the file (or thing) and the problem.
    """


class ClusterLostError(Exception):
    """The Dask scheduler went away mid-command: not bad input, not a bug; exit status 1, one line."""


class JobsFailed(Exception):
    """Some jobs of a study failed (each recorded with its error) while the others ran: exit status 1, one line."""


class Terminated(KeyboardInterrupt):
    """The command was sent SIGTERM (``kill PID``): ended as Ctrl-C ends it, recorded as terminated."""


def unreadable(path: object, exc: OSError, what: str = "file") -> UserError:
    """The one-line error for a file that could not be read: missing, a folder, or why not."""
    if isinstance(exc, FileNotFoundError):
        return UserError(f"{path}: no such {what}")
    if isinstance(exc, IsADirectoryError):
        return UserError(f"{path}: is a folder, expected a {what}")
    return UserError(f"{path}: cannot read ({exc.strerror or exc})")

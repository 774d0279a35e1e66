"""The one error type the command line turns into `error: ...` on stderr and exit code 2.

Anything the user can fix (a bad flag, a missing file, an unreachable database)
is raised as `UsageError` (or a `ValueError` from validation, which the CLI
treats the same way) before anything is written.
"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2, nothing written."""

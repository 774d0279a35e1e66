"""Errors the storage layer raises for problems a user can fix.

Messages are one line and never contain a password (URLs are masked), so the
command line can print them as they are and exit with code 2.
"""


class StorageError(Exception):
    """A bad URL, an unreachable server, an unknown study, an outdated schema, ..."""

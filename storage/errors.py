"""Errors the storage layer raises for problems a user can fix.

Messages are one line and never contain a password (URLs are masked), so the
command line can print them as they are and exit with code 2.
"""


class StorageError(Exception):
    """A bad URL, an unreachable server, an unknown study, an outdated schema, ..."""


class DatabaseUnavailable(StorageError):
    """The database stayed unreachable (server down or restarting, connection lost, SQLite
    locked by another process) for longer than the caller was willing to retry.

    Unlike other StorageErrors, this is not bad input: whatever was written before it is
    intact, and the same operation succeeds once the database is back."""


class StudyClaimed(StorageError):
    """Another launch holds the study's claim (`storage.claims`): alive, or gone and this
    launch did not ask to take it over."""


class ClaimLost(StorageError):
    """This launch's claim was taken over by another launch while it could not renew it:
    it stops (not bad input)."""

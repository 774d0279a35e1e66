"""The error a missing dataset raises: a FileNotFoundError the CLI prints as one line."""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are not where they should be; the message says where and how to get them."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        return str(self.args[0])

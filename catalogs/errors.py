"""Errors raised while reading catalogs: they name the file, the line and what was expected."""

from __future__ import annotations

from pathlib import Path


class CatalogError(ValueError):
    """A catalog cannot be loaded or is inconsistent (unknown ids, duplicates, missing files)."""


class CatalogFormatError(CatalogError):
    """A catalog file is malformed at a known place.

    The message reads ``<file>, line <n>: expected <what>, found <what>`` so a user can fix
    the file without reading a traceback.
    """

    def __init__(self, path: str | Path, line: int | None, expected: str, found: str = "") -> None:
        self.path = Path(path)
        self.line = line
        self.expected = expected
        self.found = found
        where = f"{self.path}" if line is None else f"{self.path}, line {line}"
        message = f"{where}: expected {expected}"
        if found:
            message += f", found {found}"
        super().__init__(message)


def shorten(text: str, limit: int = 80) -> str:
    """A one-line excerpt of offending input for error messages."""
    text = text.replace("\n", "\\n")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")

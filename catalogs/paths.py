"""Where real data and caches live: environment variables first, then conventional places."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir(override: str | Path | None = None) -> Path:
    """The directory holding real public catalogs (``homedepot/``, ``wands/``).

    Order: the explicit argument, ``$LESER_DATA_DIR``, then ``../shared/data`` beside the
    working directory or beside the project checkout. The first that exists wins; when none
    does, the explicit or environment value (or the checkout default) is returned so the
    loader's error names the path it looked in.
    """
    if override:
        return Path(override).expanduser()
    if os.environ.get("LESER_DATA_DIR"):
        return Path(os.environ["LESER_DATA_DIR"]).expanduser()
    candidates = [Path.cwd().parent / "shared" / "data", PROJECT_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]


def cache_dir(override: str | Path | None = None) -> Path:
    """The cache for built artefacts (indexes, models, converted catalogs).

    Order: the explicit argument, ``$LESER_CACHE_DIR``, ``$XDG_CACHE_HOME/leser``, ``~/.cache/leser``.
    Everything in it is keyed by a content hash and can be deleted at any time.
    """
    if override:
        path = Path(override).expanduser()
    elif os.environ.get("LESER_CACHE_DIR"):
        path = Path(os.environ["LESER_CACHE_DIR"]).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "leser"
    path.mkdir(parents=True, exist_ok=True)
    return path

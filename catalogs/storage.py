"""Files on disk, the one implementation everything calls: atomic writes, atomically replaced
directories, and caches verified by content hash.

- ``atomic_file`` / ``write_atomically`` / ``write_json_atomically``: write through a temporary
  file in the same directory and rename it over the target, so a crash or a kill never leaves
  half a file; the target is either the old content or the new.
- ``png_figure(path, ...)``: a matplotlib figure (headless) that the block draws on and that is
  written to ``path`` as a PNG through ``atomic_file`` when it ends; every plot the project writes.
- ``replace_directory(staging, target)``: the target moves aside to ``.NAME.old``, the staging
  directory takes its place, the old copy is removed. A kill at any instant leaves either the old
  or the new directory readable: ``recover_directory(target)`` (called by every reader) puts the
  old copy back when the new one never arrived, and removes it when it did.
- ``cached_directory(directory, key, build)``: a cache directory that is trusted only while its
  manifest (``cache_manifest.json``) matches ``key`` and every file matches the content digest
  recorded when it was built; otherwise it is rebuilt into a staging directory, sealed, and
  swapped in. Concurrent cold builds agree: the first sound copy to arrive is kept. A cache file
  truncated, replaced or changed by one byte is therefore detected and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

CACHE_MANIFEST = "cache_manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file (mkstemp alone gives 0600)
DIRECTORY_MODE = 0o777 & ~_UMASK  # what mkdir would give (mkdtemp alone gives 0700)
IGNORED_SUFFIXES = (".lock",)  # lock files a reader may create (tantivy's) are not content


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A stream to a temporary file beside ``path``, renamed over it when the block succeeds.

    Text modes write UTF-8 with ``\\n`` line ends. On an exception the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(handle, mode, **text) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, content: str | bytes) -> None:
    """Write text (UTF-8) or bytes to ``path`` through ``atomic_file``."""
    with atomic_file(path, "wb" if isinstance(content, bytes) else "w") as stream:
        stream.write(content)


def write_json_atomically(path: str | Path, payload: Any, indent: int | None = 2) -> None:
    """Write ``payload`` as JSON through ``atomic_file``; ASCII with escapes, so any text (a lone
    surrogate from undecodable input included) is written and read back unchanged."""
    write_atomically(path, json.dumps(payload, indent=indent) + "\n")


@contextlib.contextmanager
def png_figure(
    path: str | Path, *, dpi: int = 110, bbox_inches: str | None = None, **subplots: Any
) -> Iterator[tuple[Any, Any]]:
    """``(figure, axes)`` from ``matplotlib.pyplot.subplots(**subplots)`` on the headless Agg
    backend; when the block succeeds the figure is laid out (``tight_layout``) and written to
    ``path`` as a PNG through ``atomic_file`` (``bbox_inches="tight"`` also fits the image to what
    was drawn outside the axes). The figure is closed either way, so a long run that plots at every
    checkpoint does not accumulate figures, and an error while drawing leaves ``path`` as it was."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        with atomic_file(path, "wb") as stream:
            figure.savefig(stream, format="png", dpi=dpi, bbox_inches=bbox_inches)
    finally:
        plt.close(figure)


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def replace_directory(staging: str | Path, target: str | Path) -> None:
    """Put the directory ``staging`` where ``target`` is, so that a kill at any instant leaves one
    complete copy (see ``recover_directory``)."""
    staging, target = Path(staging), Path(target)
    recover_directory(target)
    aside = _aside(target)
    if target.exists():
        target.rename(aside)
    staging.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def recover_directory(target: str | Path) -> None:
    """Finish what a killed ``replace_directory`` left: the old copy back when the new one is
    missing, the old copy removed when the new one is in place."""
    target = Path(target)
    aside = _aside(target)
    if not aside.exists():
        return
    if target.exists():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.rename(target)


def staging_directory(target: str | Path) -> Path:
    """A fresh hidden directory beside ``target`` (same file system, so renaming it is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".staging"))
    staging.chmod(DIRECTORY_MODE)
    return staging


def file_digest(path: str | Path) -> str:
    """The BLAKE2b digest (128 bits, hex) of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _content_files(directory: Path) -> dict[str, Path]:
    return {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != CACHE_MANIFEST and not path.name.endswith(IGNORED_SUFFIXES)
    }


def tree_digests(directory: str | Path) -> dict[str, str]:
    """The digest of every file under ``directory``, by relative path (lock files and the manifest aside)."""
    return {name: file_digest(path) for name, path in _content_files(Path(directory)).items()}


def seal_directory(directory: str | Path, key: Mapping[str, Any]) -> None:
    """Record ``key`` and the digest of every file in ``directory`` in its manifest."""
    directory = Path(directory)
    files = tree_digests(directory)
    write_json_atomically(directory / CACHE_MANIFEST, {"key": dict(key), "files": files})


_verified: dict[tuple[str, str], tuple[tuple[str, int, int, int], ...]] = {}


def verify_directory(directory: str | Path, key: Mapping[str, Any]) -> bool:
    """Whether ``directory`` was sealed for ``key`` and holds exactly the files it was sealed with,
    byte for byte. A directory verified earlier in this process is not hashed again while no
    file's size, modification time or inode has changed."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / CACHE_MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("key") != json.loads(json.dumps(dict(key))):
            return False
        recorded = manifest["files"]
        present = _content_files(directory)
        if not isinstance(recorded, dict) or set(recorded) != set(present):
            return False
        stats = tuple(
            (name, stat.st_size, stat.st_mtime_ns, stat.st_ino)
            for name, stat in ((name, path.stat()) for name, path in present.items())
        )
        memo = (str(directory.resolve()), json.dumps(recorded, sort_keys=True))
        if _verified.get(memo) == stats:
            return True
        if all(file_digest(path) == recorded[name] for name, path in present.items()):
            _verified[memo] = stats
            return True
        return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def cached_directory(directory: str | Path, key: Mapping[str, Any], build: Callable[[Path], None]) -> bool:
    """Make ``directory`` a sound cache for ``key``, building it with ``build(staging)`` when it is
    missing, stale or fails its digests; returns whether it was (re)built here."""
    directory = Path(directory)
    recover_directory(directory)
    if verify_directory(directory, key):
        return False
    staging = staging_directory(directory)
    try:
        build(staging)
        seal_directory(staging, key)
        if verify_directory(directory, key):  # another process finished the same build first
            return True
        if directory.exists() and not directory.is_dir():
            directory.unlink()  # a file where the cache directory belongs
        replace_directory(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True

"""Files the flow writes: the build and data roots, atomic writes, and locks between processes.

One helper each, used by every layer above (generation, simulator builds, the dataset and
the trained models), so the conventions are written once:

* :func:`build_root` is ``$RPACCEL_BUILD`` or ``./build``: generated Verilog, manifests,
  simulator builds, synthesis runs and waveforms. :func:`data_root` is ``$RPACCEL_DATA``
  or ``./data``: the downloaded dataset and the trained models. Both are resolved against
  the current directory when called.
* :func:`atomic_write` writes a file under a temporary name in the same folder and renames
  it into place, so a reader (a parallel pytest-xdist worker, a second ``rpaccel`` run)
  sees the old file or the whole new one, never half of it. The file gets the mode an
  ordinary ``open()`` would give it (``0o666`` minus the umask), not ``mkstemp``'s private
  ``0o600``: outputs are meant to be read by others. :func:`write_if_changed` does not
  write at all when the content is already there, so modification times (and the
  simulators' rebuild checks that look at them) stay put.
* :func:`file_lock` serialises a critical section across processes with an exclusive
  advisory ``flock``: one worker builds, downloads or trains, the others wait and reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["build_root", "data_root", "atomic_write", "write_if_changed", "file_lock"]


def build_root() -> Path:
    """Where generated files and simulator builds go: ``$RPACCEL_BUILD`` or ``./build``."""
    return Path(os.environ.get("RPACCEL_BUILD", "build")).resolve()


def data_root() -> Path:
    """Where downloaded data and trained models live: ``$RPACCEL_DATA`` or ``./data``."""
    return Path(os.environ.get("RPACCEL_DATA", "data")).resolve()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Replace ``path`` atomically with ``content``: text (UTF-8), bytes, or a function
    that writes the file at the temporary path it is given (for writers such as
    ``numpy.savez`` that want a file name). The temporary file keeps ``path``'s suffix (some
    writers append one otherwise) and is removed if anything fails; the parent folder is
    created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode() if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_if_changed(path: str | Path, text: str) -> bool:
    """:func:`atomic_write` ``text`` unless ``path`` already holds exactly it; returns
    whether the file was written."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text)
    return True


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created, with its folder, if needed)
    for the ``with`` block; other processes taking the same lock wait until it ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

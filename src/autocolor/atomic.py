"""The one way the package writes a file: whole or not at all.

Readers see the old file or the new one, never half of it: data goes to a
temporary file in the destination's folder, is flushed and fsynced, and is
renamed over the destination with :func:`os.replace`; the folder is fsynced
too where the platform allows, so the rename survives a power cut. New files
get the usual permissions (``0o666`` less the umask: 0644 under umask 022),
not the 0600 :func:`tempfile.mkstemp` gives. On any error the temporary file
is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    return 0o666 & ~_umask()


def default_folder_mode() -> int:
    """``0o777`` less the process umask: the mode ``mkdir()`` would give a new folder."""
    return 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)  # the umask can only be read by setting it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to stream into; it replaces ``path`` when the block ends without error.

    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_open(dest) as f:
    ...     _ = f.write(b"whole")
    >>> dest.read_bytes()
    b'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module's docstring)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically, newlines as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file written by someone else's writer (safetensors, PIL) to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)

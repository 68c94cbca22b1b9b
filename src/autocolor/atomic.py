"""The one way the package writes a file: whole or not at all.

Readers see the old file or the new one, never half of it: data goes to a
temporary file in the destination's folder, is flushed and fsynced, and is
renamed over the destination with :func:`os.replace`; the folder is fsynced
too where the platform allows, so the rename survives a power cut. New files
get the usual permissions (``0o666`` less the umask: 0644 under umask 022),
not the 0600 :func:`tempfile.mkstemp` gives. On any error the temporary file
is removed and the destination is left as it was.

Temporary names are short (a 255-byte destination name still fits) and say
which process wrote them, so :func:`remove_stale_temporaries` can tell a
killed run's leftovers from a live run's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMPORARY_SUFFIX = ".part"
_TEMPORARY = re.compile(r"^\.autocolor-(?P<host>[A-Za-z0-9.-]{0,32})-(?P<pid>\d+)-[A-Za-z0-9_]+\.part$")


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


def _hostname() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname())[:32]


def temporary_prefix() -> str:
    return f".autocolor-{_hostname()}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """A binary file to stream into; it replaces ``path`` when the block ends without error.
    ``before_replace`` sees the finished temporary file just before it takes ``path``'s place.

    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_open(dest) as f:
    ...     _ = f.write(b"whole")
    >>> dest.read_bytes()
    b'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(), suffix=TEMPORARY_SUFFIX)
    try:
        os.chmod(tmp, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes,
                       before_replace: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see the module's docstring)."""
    with atomic_open(path, before_replace) as f:
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


def process_alive(pid: int) -> bool:
    """Whether a process of that id runs on this machine (anyone's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path, legacy_names: set[str] = frozenset(), legacy_age_s: float = 3600.0) -> int:
    """Delete temporary files that killed runs left in ``folder``; return how many.

    A temporary file of :func:`atomic_open` is stale when the process named in
    it (on this host) has ended. Older versions named theirs
    ``.NAME.XXXXXXXX.part`` without a process: those are removed for the
    ``legacy_names`` given, once older than ``legacy_age_s``.
    """
    removed = 0
    host = _hostname()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not name.endswith(TEMPORARY_SUFFIX):
            continue
        match = _TEMPORARY.match(name)
        if match:
            stale = match["host"] == host and not process_alive(int(match["pid"]))
        else:
            base, _, token = name[1:-len(TEMPORARY_SUFFIX)].rpartition(".")
            try:
                stale = base in legacy_names and len(token) == 8 and now - entry.stat().st_mtime > legacy_age_s
            except OSError:
                stale = False
        if stale and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed

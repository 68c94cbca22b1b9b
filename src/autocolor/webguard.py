"""What keeps one web visitor from hurting another, as plain classes (no Gradio here).

* :class:`UploadQuota`: how many files and bytes one visitor (one client
  address) may store within a time window; uploads past it are refused.
* :class:`UploadStore`: every upload gets a folder of its own under a random
  name, so two visitors sending the same bytes never share a file, and one
  visitor's tab closing deletes only that visitor's files; uploads never
  claimed by a request expire early.
* :class:`FairGate`: the model runs at most ``slots`` images at once, and when
  visitors wait, the one who used least compute recently (in pixels) goes
  next, so a small photo is not stuck behind another visitor's eight big ones.
* :func:`remove_leftovers`: folders of earlier servers that were killed
  (SIGKILL, the OOM killer) before they could delete their visitors' photos.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from autocolor.atomic import process_alive

WORKDIR_PREFIX = "autocolor-web-"
OWNER_FILE = "owner.pid"


@dataclass
class UploadQuota:
    """Files and bytes one visitor may upload per ``window_s`` seconds."""

    max_files: int = 100
    max_bytes: int = 300 * 2**20
    window_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _log: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, visitor: str) -> deque:
        log, start = self._log[visitor], self.clock() - self.window_s
        while log and log[0][0] < start:
            log.popleft()
        return log

    def refusal(self, visitor: str, files: int = 0, size: int = 0) -> str | None:
        """Why ``files`` more files of ``size`` bytes in all would exceed the
        visitor's share (a message for the visitor), or None."""
        with self._lock:
            log = self._recent(visitor)
            used_files, used_bytes = len(log), sum(n for _, n in log)
        if used_files + files > self.max_files or used_bytes + size > self.max_bytes:
            wait = self.window_s - (self.clock() - log[0][0]) if log else self.window_s
            return (f"You have uploaded {used_files} files ({used_bytes / 2**20:.0f} MB) in the last "
                    f"{self.window_s / 60:g} minutes, the most this demo takes; please try again in "
                    f"{max(1, round(wait / 60))} min.")
        return None

    def record(self, visitor: str, sizes: list[int]) -> None:
        with self._lock:
            log, now = self._recent(visitor), self.clock()
            log.extend((now, n) for n in sizes)


class UploadStore:
    """Uploads, each in a random folder of its own, owned by the sessions that claim them."""

    def __init__(self, root: Path, unclaimed_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.unclaimed_s = unclaimed_s
        self.clock = clock
        self._unclaimed: dict[Path, float] = {}  # upload -> when it arrived
        self._sessions: dict[str, set[Path]] = defaultdict(set)
        self._lock = threading.Lock()

    def new_path(self, name: str) -> Path:
        """Where to store an upload named ``name`` (already stripped of folders)."""
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        path = folder / name
        assert path.parent == folder, f"unsafe upload name {name!r}"
        with self._lock:
            self._unclaimed[path] = self.clock()
        return path

    def owns(self, path: Path) -> bool:
        return path.resolve().parent.parent == self.root.resolve()

    def claim(self, session: str, paths: list[Path]) -> None:
        """``session`` uses these files: they are deleted when it ends, not before."""
        with self._lock:
            for path in paths:
                self._unclaimed.pop(path, None)
                self._sessions[session].add(path)

    def keep(self, session: str, path: Path) -> None:
        """Any other file or folder (results) to delete when ``session`` ends."""
        with self._lock:
            self._sessions[session].add(path)

    def end(self, session: str) -> None:
        with self._lock:
            paths = self._sessions.pop(session, set())
        for path in paths:
            _remove(path.parent if self.owns(path) else path)

    def sweep(self) -> int:
        """Delete uploads that no request claimed within ``unclaimed_s``; how many."""
        start = self.clock() - self.unclaimed_s
        with self._lock:
            stale = [p for p, t in self._unclaimed.items() if t < start]
            for path in stale:
                del self._unclaimed[path]
        for path in stale:
            _remove(path.parent)
        return len(stale)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class VisitorLimit(ValueError):
    """A visitor asked for more work than one visitor may have per window (a message for them)."""


class FairGate:
    """At most ``slots`` images colorized at once; among waiting visitors the
    one with the fewest pixels colorized in the last ``window_s`` goes first
    (ties: who came first). A visitor past ``max_pixels`` in the window is
    refused with :class:`VisitorLimit` until it has passed."""

    def __init__(self, slots: int = 1, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_pixels: int | None = None) -> None:
        assert slots >= 1
        self.slots = slots
        self.max_pixels = max_pixels
        self.window_s = window_s
        self.clock = clock
        self._busy = 0
        self._waiting: list[tuple[str, int]] = []  # (visitor, ticket)
        self._used: dict[str, deque] = defaultdict(deque)  # visitor -> (time, pixels)
        self._tickets = 0
        self._cond = threading.Condition()

    def used(self, visitor: str) -> int:
        log, start = self._used[visitor], self.clock() - self.window_s
        while log and log[0][0] < start:
            log.popleft()
        return sum(n for _, n in log)

    def _next(self) -> tuple[str, int]:
        return min(self._waiting, key=lambda w: (self.used(w[0]), w[1]))

    @contextmanager
    def turn(self, visitor: str, pixels: int) -> Iterator[None]:
        """Wait for this visitor's turn, then hold a slot for one image of ``pixels``."""
        with self._cond:
            if self.max_pixels is not None and self.used(visitor) + pixels > self.max_pixels:
                raise VisitorLimit(f"you have colorized {self.used(visitor) / 1e6:.0f} MP in the last "
                                   f"{self.window_s:g} s, the most one visitor may; please wait a minute")
            self._tickets += 1
            me = (visitor, self._tickets)
            self._waiting.append(me)
            self._cond.wait_for(lambda: self._busy < self.slots and self._next() == me)
            self._waiting.remove(me)
            self._busy += 1
            self._used[visitor].append((self.clock(), pixels))  # charged up front: the next pick sees it
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()


# ---------------------------------------------------------------- the server's own folder


def _start_time(pid: int) -> str | None:
    """The process's start time from /proc (to tell a reused pid apart), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def make_workdir(parent: Path | None = None) -> Path:
    """A new private folder for one server, marked with its owner's pid and start time."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
    (workdir / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid()) or ''}\n")
    return workdir


def _owner_alive(workdir: Path) -> bool:
    try:
        pid_text, *start = (workdir / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if not process_alive(pid):
        return False
    return not start or _start_time(pid) == start[0]


def remove_leftovers(parent: Path | None = None, min_age_s: float = 60.0) -> list[Path]:
    """Delete the folders of earlier servers (ours, by uid) whose process is gone.

    A folder without an owner file counts only once it is ``min_age_s`` old: a
    server being started right now writes its file a moment after creating it.
    """
    import tempfile

    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for folder in parent.glob(WORKDIR_PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid():
            continue
        if not (folder / OWNER_FILE).exists() and time.time() - info.st_mtime < min_age_s:
            continue
        if not _owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed

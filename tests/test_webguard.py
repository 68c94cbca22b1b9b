"""The web demo's guards as plain objects: quotas, private upload folders, the fair gate, leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from autocolor.webedit import display_name
from autocolor.webguard import (
    FairGate,
    UploadQuota,
    UploadStore,
    make_workdir,
    remove_leftovers,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_upload_quota_counts_files_and_bytes_per_visitor_and_window():
    clock = Clock()
    quota = UploadQuota(max_files=3, max_bytes=100, window_s=60, clock=clock)
    quota.record("a", [10, 10, 10])
    assert quota.refusal("a", files=1) and "try again in 1 min" in quota.refusal("a", files=1)
    assert quota.refusal("b", files=1) is None, "another visitor has a quota of its own"
    assert quota.refusal("b", files=1, size=101) is not None
    clock.now += 61
    assert quota.refusal("a", files=3, size=100) is None, "the window has passed"


def test_identical_uploads_get_separate_files_and_a_session_deletes_only_its_own(tmp_path):
    store = UploadStore(tmp_path / "uploads")
    a, b = store.new_path("same.png"), store.new_path("same.png")
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    assert a != b and store.owns(a) and store.owns(b)
    store.claim("session-a", [a])
    store.claim("session-b", [b])
    store.end("session-a")
    assert not a.exists() and b.exists()
    assert not store.owns(tmp_path / "elsewhere" / "x" / "same.png")


def test_unclaimed_uploads_expire(tmp_path):
    clock = Clock()
    store = UploadStore(tmp_path / "uploads", unclaimed_s=300, clock=clock)
    unused, used = store.new_path("unused.png"), store.new_path("used.png")
    unused.write_bytes(b"x")
    used.write_bytes(b"x")
    store.claim("s", [used])
    clock.now += 299
    assert store.sweep() == 0
    clock.now += 2
    assert store.sweep() == 1
    assert not unused.parent.exists() and used.exists()


def test_fair_gate_serves_the_visitor_who_used_least_first():
    gate = FairGate(slots=1)
    order: list[str] = []
    release = threading.Event()

    def work(visitor: str, hold: bool = False) -> None:
        with gate.turn(visitor, 1_000_000):
            order.append(visitor)
            if hold:
                release.wait(10)

    first = threading.Thread(target=work, args=("big", True))
    first.start()
    while not order:
        time.sleep(0.01)
    waiting = [threading.Thread(target=work, args=("big",)) for _ in range(3)]
    for thread in waiting:
        thread.start()
        time.sleep(0.02)
    small = threading.Thread(target=work, args=("small",))
    small.start()
    time.sleep(0.1)  # everyone is waiting now; "small" came last
    release.set()
    for thread in [first, *waiting, small]:
        thread.join(10)
    assert order[:2] == ["big", "small"], order


def test_fair_gate_refuses_a_visitor_past_its_share_until_the_window_passes():
    from autocolor.webguard import VisitorLimit

    clock = Clock()
    gate = FairGate(slots=1, window_s=60, clock=clock, max_pixels=10_000_000)
    for _ in range(2):
        with gate.turn("a", 4_000_000):
            pass
    try:
        with gate.turn("a", 4_000_000):
            raise AssertionError("should have been refused")
    except VisitorLimit as exc:
        assert "please wait a minute" in str(exc)
    with gate.turn("b", 4_000_000):  # another visitor has a share of its own
        pass
    clock.now += 61
    with gate.turn("a", 4_000_000):
        pass


def test_leftovers_of_a_dead_server_are_removed_and_a_live_ones_kept(tmp_path):
    live = make_workdir(tmp_path)  # this process: alive
    dead_owner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                capture_output=True, text=True, check=True).stdout.strip()
    dead = tmp_path / "autocolor-web-dead"
    dead.mkdir()
    (dead / "owner.pid").write_text(f"{dead_owner} 1\n")
    (dead / "visitor.jpg").write_bytes(b"photo")
    starting = tmp_path / "autocolor-web-starting"  # no owner file yet, and new
    starting.mkdir()
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    assert remove_leftovers(tmp_path) == [dead]
    assert live.exists() and starting.exists() and unrelated.exists() and not dead.exists()
    old = time.time() - 3600
    os.utime(starting, (old, old))
    assert remove_leftovers(tmp_path) == [starting]


def test_names_are_escaped_for_messages():
    assert display_name("a\x1b]0;title\x07b\nc.png") == "a\\\\x1b\\]0;title\\\\x07b\\\\nc.png"
    assert display_name("<img src=x onerror=alert(1)>.png") == "\\<img src=x onerror=alert(1)\\>.png"
    assert display_name("[a](b)*c*_d_.png") == "\\[a\\](b)\\*c\\*\\_d\\_.png"
    assert len(display_name("x" * 500)) <= 80

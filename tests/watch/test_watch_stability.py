"""When an arriving file is complete (backlitfix.watch.stability), on real files."""
from __future__ import annotations

import pytest

from backlitfix.watch.stability import StabilityTracker, signature

# ---- completeness ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_file_is_ready_only_after_a_quiet_period_without_change(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(2.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1" * 100)
    assert tracker.touch(str(f)) is True
    assert tracker.touch(str(f)) is False  # no change: an event without a write
    clock.t += 1.9
    assert tracker.pop_ready() == []
    with open(f, "ab") as fh:  # more data arrives (the event is delivered)
        fh.write(b"2" * 100)
    tracker.touch(str(f))
    clock.t += 1.5  # 3.4 s after the first write, but only 1.5 s after the last
    assert tracker.pop_ready() == []
    assert tracker.next_due() == pytest.approx(clock.t + 0.5)
    clock.t += 0.5
    assert tracker.pop_ready() == [(str(f), signature(str(f)))]
    assert len(tracker) == 0


def test_a_change_without_an_event_restarts_the_quiet_period(tmp_path):
    """A polling observer (or a lost event) may not report a write: the due check stats the file."""
    clock = Clock()
    tracker = StabilityTracker(1.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1" * 10)
    tracker.touch(str(f))
    f.write_bytes(b"1" * 20)  # no touch()
    clock.t += 1.0
    assert tracker.pop_ready() == []
    clock.t += 1.0
    assert [p for p, _ in tracker.pop_ready()] == [str(f)]


def test_a_file_that_vanishes_is_dropped_and_reported_gone(tmp_path):
    """Reported, not dropped silently: `watch --once` waits for every file it found (fault 2)."""
    clock = Clock()
    tracker = StabilityTracker(1.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1")
    tracker.touch(str(f))
    f.unlink()
    clock.t += 2
    assert tracker.pop_ready() == [(str(f), None)] and len(tracker) == 0
    assert tracker.pop_ready() == []

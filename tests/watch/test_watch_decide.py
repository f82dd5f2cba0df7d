"""`decide`, the watch daemon's one decision function: a table with a row for every case.

Rows marked "fault N" are the cases of issue 14 that the daemon got wrong before `decide` existed
(their end-to-end regression tests are in test_watch_daemon_faults.py).
"""
from __future__ import annotations

import pytest

from backlitfix.watch.decide import ACTIONS, ADOPTED, KEPT_EXISTING, PHASES, RELEASED, Action, Facts, decide
from backlitfix.watch.journal import Entry

IN, OUT = "/in/a.jpg", "/out/a.jpg"
SIG, NEW_SIG = (100, 1), (120, 2)


def row(state: str, *, sig=SIG, digest="h1", output=OUT, reason="") -> Entry:
    return Entry(IN, sig[0], sig[1], digest, state, output, reason, 1, 0.1, 1.0, 2.0)


def taken(entry=None, **kw) -> Facts:
    """A file taken up by the worker, hashed (digest h2, unchanged while hashed) and planned to OUT."""
    base = dict(sig=NEW_SIG, path=IN, taken_sig=NEW_SIG, digest="h2", planned=OUT)
    base.update(kw)
    return Facts("taken", entry, **base)


CASES = [
    # ---- seen: an event or a scan ------------------------------------------------------------
    ("seen: a new file is tracked", Facts("seen", None, SIG, IN), Action("wait")),
    ("seen: gone before it was looked at", Facts("seen", None, None, IN), Action("forget")),
    ("seen: this version is done", Facts("seen", row("done"), SIG, IN), Action("skip", "done")),
    ("seen: this version failed: not retried", Facts("seen", row("failed"), SIG, IN), Action("skip", "failed")),
    ("seen: a new version of a done file", Facts("seen", row("done"), NEW_SIG, IN), Action("wait")),
    ("seen: interrupted by a kill: redone", Facts("seen", row("processing"), SIG, IN), Action("wait")),
    ("seen: pending from the last run", Facts("seen", row("pending", digest=None), SIG, IN), Action("wait")),
    ("seen: gone while the worker has it", Facts("seen", row("processing"), None, IN, busy=True), Action("hold")),
    # ---- ready: the quiet period is over -----------------------------------------------------
    ("ready: complete: to the worker", Facts("ready", None, SIG, IN), Action("queue")),
    ("ready: fault 2: vanished in its quiet period", Facts("ready", row("pending", digest=None), None, IN),
     Action("forget")),
    ("ready: done meanwhile (same version)", Facts("ready", row("done"), SIG, IN), Action("skip", "done")),
    # ---- departed: deleted or moved away -----------------------------------------------------
    ("departed: fault 1: a done file releases its output", Facts("departed", row("done"), None, IN),
     Action("forget")),
    ("departed: a pending file leaves no trace", Facts("departed", row("pending", digest=None), None, IN),
     Action("forget")),
    ("departed: in the worker's hands: its result settles it",
     Facts("departed", row("processing"), None, IN, busy=True), Action("hold")),
    # ---- taken: the worker gathers the rest ----------------------------------------------------
    ("taken: no hash yet", Facts("taken", None, SIG, IN), Action("hash")),
    ("taken: gone when taken", Facts("taken", None, None, IN, busy=True), Action("forget")),
    ("taken: this version is done (event raced the worker)", Facts("taken", row("done"), SIG, IN),
     Action("skip", "done")),
    ("taken: written to while hashed", taken(taken_sig=SIG), Action("wait")),
    ("taken: touched, same bytes, done", taken(row("done", digest="h2")),
     Action("record", "done", same_content=True)),
    ("taken: touched, same bytes, failed", taken(row("failed", digest="h2", reason="truncated")),
     Action("record", "failed", "truncated", same_content=True)),
    ("taken: not planned yet", taken(planned=None), Action("plan")),
    ("taken: cannot be planned", taken(planned=None, plan_error="the output would overwrite the input itself"),
     Action("record", "failed", "the output would overwrite the input itself")),
    ("taken: a new photo, free name", taken(), Action("process", output=OUT)),
    ("taken: new content: the earlier output stays (a reused name, seen or not)",
     taken(row("done"), output_exists=True, owner=IN, own_output_exists=True), Action("release", output=OUT)),
    ("taken: new content, --overwrite: it replaces its own output",
     taken(row("done"), output_exists=True, owner=IN, own_output_exists=True, overwrite=True),
     Action("process", output=OUT)),
    ("taken: new content, its earlier output deleted by the user: the name is free again",
     taken(row("done"), own_output_exists=False), Action("process", output=OUT)),
    ("taken: interrupted by a kill: redone over its own output (the same bytes)",
     taken(row("processing", digest="h2"), output_exists=True, owner=IN, own_output_exists=True),
     Action("process", output=OUT)),
    ("taken: interrupted by a kill, changed since: its output stays",
     taken(row("processing", digest="h1"), output_exists=True, owner=IN, own_output_exists=True),
     Action("release", output=OUT)),
    ("taken: new content of a failed file: nothing to keep",
     taken(row("failed", output=None, reason="truncated")), Action("process", output=OUT)),
    ("taken: a file backlitfix did not write is kept", taken(output_exists=True),
     Action("record", "done", KEPT_EXISTING, output=OUT)),
    ("taken: ... unless --overwrite", taken(output_exists=True, overwrite=True), Action("process", output=OUT)),
    ("taken: a kept file stays kept when the input changes",
     taken(row("done", reason=KEPT_EXISTING), output_exists=True, owner=IN),
     Action("record", "done", KEPT_EXISTING, output=OUT)),
    ("taken: fault 1: an earlier photo's output is never overwritten",
     taken(row("done"), output_exists=True, owner=RELEASED, overwrite=True),
     Action("record", "failed", f"the output {OUT} belongs to an earlier photo; not overwritten")),
    ("taken: another input's output is never overwritten",
     taken(output_exists=True, owner="/in/other.jpg", overwrite=True),
     Action("record", "failed", f"the output {OUT} belongs to /in/other.jpg; not overwritten")),
    ("taken: fault 1: name reused by a new photo: its own name",
     taken(planned="/out/a_2.jpg", earlier=OUT, earlier_hash="h1"), Action("process", output="/out/a_2.jpg")),
    ("taken: the same photo moved back in finds its output",
     taken(planned="/out/a_2.jpg", earlier=OUT, earlier_hash="h2"), Action("record", "done", ADOPTED, output=OUT)),
    # ---- result: what the pipeline said --------------------------------------------------------
    ("result: fault 3: done is recorded done", Facts("result", None, NEW_SIG, IN, taken_sig=NEW_SIG, result="done",
                                                     planned=OUT), Action("record", "done", output=OUT)),
    ("result: done, but it left meanwhile: released after",
     Facts("result", None, None, IN, taken_sig=NEW_SIG, result="done", planned=OUT),
     Action("record", "done", output=OUT, release=True)),
    ("result: fault 6: cancelled by a stop: pending again",
     Facts("result", None, NEW_SIG, IN, taken_sig=NEW_SIG, result="cancelled"), Action("retry")),
    ("result: failed while still being written: waits again",
     Facts("result", None, NEW_SIG, IN, taken_sig=SIG, result="failed", reason="truncated"), Action("retry")),
    ("result: failed because it left", Facts("result", None, None, IN, taken_sig=SIG, result="failed"),
     Action("forget")),
    ("result: failed", Facts("result", None, NEW_SIG, IN, taken_sig=NEW_SIG, result="failed", reason="truncated"),
     Action("record", "failed", "truncated")),
    # ---- sibling: names are run's whatever the arrival order -----------------------------------
    ("sibling: fault 4: a same-stem photo arrived: our output is renamed",
     Facts("sibling", row("done"), SIG, IN, planned="/out/a_jpg.tif", own_output_exists=True),
     Action("rename", output="/out/a_jpg.tif")),
    ("sibling: name unchanged", Facts("sibling", row("done"), SIG, IN, planned=OUT, own_output_exists=True),
     Action("skip", "done")),
    ("sibling: the new name is taken: never over a file",
     Facts("sibling", row("done"), SIG, IN, planned="/out/a_jpg.tif", output_exists=True, own_output_exists=True),
     Action("skip", "done")),
    ("sibling: a kept file is not ours to move",
     Facts("sibling", row("done", reason=KEPT_EXISTING), SIG, IN, planned="/out/a_jpg.tif", own_output_exists=True),
     Action("skip", "done")),
    ("sibling: an adopted output is ours",
     Facts("sibling", row("done", reason=ADOPTED), SIG, IN, planned="/out/a_jpg.tif", own_output_exists=True),
     Action("rename", output="/out/a_jpg.tif")),
    ("sibling: no output (failed)", Facts("sibling", row("failed", output=None), None, IN, planned="/out/a_jpg.tif"),
     Action("skip", "failed")),
    ("sibling: our output was deleted by the user",
     Facts("sibling", row("done"), SIG, IN, planned="/out/a_jpg.tif", own_output_exists=False),
     Action("skip", "done")),
    ("sibling: soak: the name was reused (new content): the output is released, never moved",
     Facts("sibling", row("done"), NEW_SIG, IN, planned="/out/a_2.jpg", own_output_exists=True),
     Action("skip", "done")),
    ("sibling: soak: the input left: its output is released, never moved",
     Facts("sibling", row("done"), None, IN, planned="/out/a_2.jpg", own_output_exists=True),
     Action("skip", "done")),
    ("sibling: not processed yet", Facts("sibling", row("pending", output=None), None, IN, planned=OUT),
     Action("skip", "pending")),
]


@pytest.mark.parametrize("facts, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(facts, expected):
    assert decide(facts) == expected


def test_the_table_covers_every_phase_and_every_action():
    assert {c[1].phase for c in CASES} == set(PHASES)
    assert {c[2].kind for c in CASES} == set(ACTIONS)


def test_decide_is_pure():
    """No file system and no journal: the same facts give the same action, whatever is on disk."""
    import os

    def no_io(*a, **k):
        raise AssertionError("decide looked at the file system")

    saved = {name: getattr(os, name) for name in ("stat", "lstat", "open", "scandir", "listdir")}
    saved_path = {name: getattr(os.path, name) for name in ("lexists", "exists")}
    try:
        for name in saved:
            setattr(os, name, no_io)
        for name in saved_path:
            setattr(os.path, name, no_io)
        got = [decide(facts) for _, facts, _ in CASES]
    finally:
        for name, f in saved.items():
            setattr(os, name, f)
        for name, f in saved_path.items():
            setattr(os.path, name, f)
    assert got == [expected for _, _, expected in CASES]


def test_unknown_phase_is_a_bug():
    with pytest.raises(ValueError):
        decide(Facts("arrived", None, SIG, IN))

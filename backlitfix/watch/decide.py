"""Every decision of the watch daemon, as one pure function of what is known about one file.

The daemon's threads gather facts (a ``stat``, a journal row, a content hash, the output name from
`backlitfix.discover`, whether that output exists and whose it is) and carry out the action
:func:`decide` returns; nothing else in the daemon chooses. Facts are gathered lazily: while one
that a decision needs is missing, :func:`decide` asks for it (``hash``, ``plan``), so a file that
was done already costs a ``stat`` and a journal lookup, not a hash.

The rules that keep a photographer's work safe live here, in one place, with a table of tests
(``tests/watch/test_watch_decide.py``):

* an output file is only ever written from one content: a redo after a kill writes the same bytes
  again; a file whose content changed is a new photo as far as its output goes (a camera reusing a
  name while the daemon was stopped looks exactly like an edit), so the earlier output is released
  and kept, and the new content gets a name of its own, unless ``overwrite``;
* never another photo's output, never a file backlitfix did not write (unless ``overwrite``);
* a file that left the folder releases its output: a new photo under the reused name gets its own
  name (``discover.plan``'s counter), and the earlier output stays;
* a result that cannot be trusted (cancelled by a stop, the file changed while it was processed)
  goes back to waiting rather than being recorded as a failure.
"""
from __future__ import annotations

from dataclasses import dataclass

TERMINAL = ("done", "failed")
KEPT_EXISTING = "output exists (not overwritten)"
ADOPTED = "same photo as an earlier one: its output was kept"

# Where a fact comes from. ``seen``: an event or a scan; ``ready``: its quiet period is over;
# ``taken``: the worker is about to process it; ``result``: the pipeline's outcome; ``departed``:
# it was deleted or moved away; ``sibling``: a photo of the same folder whose output name may have
# changed with an arrival (names are run's, whatever the arrival order).
PHASES = ("seen", "ready", "taken", "result", "departed", "sibling")

RELEASED = "\0released"  # Facts.owner of an output whose input left the folder


@dataclass(frozen=True)
class Facts:
    phase: str
    entry: object | None = None  # the journal row (journal.Entry) or None
    sig: tuple[int, int] | None = None  # (size, mtime_ns) now; None: the file is gone
    path: str = ""  # the input
    busy: bool = False  # the worker has it in hand (its result will settle it)
    taken_sig: tuple[int, int] | None = None  # taken: before hashing; result: when it was taken
    digest: str | None = None  # taken: content hash (None: not computed yet)
    planned: str | None = None  # taken/sibling: the output discover names (None: not planned yet)
    plan_error: str | None = None  # taken: why it cannot be planned
    output_exists: bool = False  # the planned output exists
    owner: str | None = None  # input path the planned output is recorded for, or RELEASED, or None
    earlier: str | None = None  # taken: the released output of the natural name, if that exists...
    earlier_hash: str | None = None  # ...and the content hash of the photo it was made from
    overwrite: bool = False
    result: str | None = None  # result: done | failed | cancelled
    reason: str = ""  # result: why it failed
    own_output_exists: bool = False  # taken/sibling: the output the journal records for it exists


@dataclass(frozen=True)
class Action:
    kind: str  # one of ACTIONS
    state: str | None = None  # skip/record: the state it ends in
    reason: str = ""
    output: str | None = None  # record/process/rename: the output concerned
    same_content: bool = False  # record: the bytes were seen before; only the signature changes
    release: bool = False  # record: the input left meanwhile, release it afterwards


ACTIONS = ("wait", "queue", "hash", "plan", "process", "skip", "record", "retry", "forget", "hold", "rename",
           "release")


def decide(f: Facts) -> Action:
    """The one action for ``f`` (see ACTIONS):

    wait     track the file until it is quiet (new, changed, or changed while hashed)
    queue    hand it to the worker
    hash     (taken) compute its content hash, then ask again
    plan     (taken) name its output with discover, then ask again
    process  run it through the pipeline into ``output``
    skip     nothing to do; this version ended in ``state`` already
    record   write ``state`` (and ``reason``) in the journal without processing
    retry    back to pending and waiting: the result says nothing about this version
    forget   the file is gone: release its journal row and output
    hold     nothing now: the result being computed settles it
    release  (taken) the earlier content's output is kept as it is (released); plan again
    rename   (sibling) move our own output to the name discover gives it now
    """
    if f.phase not in PHASES:
        raise ValueError(f"unknown phase {f.phase!r}")
    e = f.entry
    if f.phase == "departed":
        return Action("hold") if f.busy else Action("forget")
    if f.phase == "result":
        return _result(f)
    if f.phase == "sibling":
        return _sibling(f)

    if f.sig is None:
        return Action("hold") if f.busy and f.phase != "taken" else Action("forget")
    if e is not None and e.state in TERMINAL and e.signature == f.sig:
        return Action("skip", e.state)
    if f.phase == "seen":
        return Action("wait")
    if f.phase == "ready":
        return Action("queue")

    # taken
    if f.digest is None:
        return Action("hash")
    if f.taken_sig != f.sig:
        return Action("wait")  # written to while it was hashed: not complete after all
    if e is not None and e.state in TERMINAL and e.hash == f.digest:
        return Action("record", e.state, e.reason, same_content=True)  # touched or copied again
    if (e is not None and e.output and e.state in ("done", "processing") and e.reason != KEPT_EXISTING
            and e.hash != f.digest and f.own_output_exists and not f.overwrite):
        return Action("release", output=e.output)  # new content: the earlier output is not replaced
    if f.planned is None and f.plan_error is None:
        return Action("plan")
    if f.plan_error is not None:
        return Action("record", "failed", f.plan_error)
    if f.earlier is not None and f.earlier_hash == f.digest:
        return Action("record", "done", ADOPTED, output=f.earlier)  # moved out and back: same photo
    if f.output_exists:
        mine = f.owner == f.path  # recorded for this input (made by it, or kept for it)
        ours = mine and e is not None and e.output == f.planned and e.reason != KEPT_EXISTING
        if f.owner is not None and not mine:
            who = "an earlier photo" if f.owner == RELEASED else f.owner
            return Action("record", "failed", f"the output {f.planned} belongs to {who}; not overwritten")
        if not ours and not f.overwrite:
            return Action("record", "done", KEPT_EXISTING, output=f.planned)
    return Action("process", output=f.planned)


def _result(f: Facts) -> Action:
    gone = f.sig is None
    if f.result == "done":
        return Action("record", "done", output=f.planned, release=gone)
    if f.result == "cancelled":
        return Action("retry")  # stopped before it was enhanced: pending, for the next start
    if gone:
        return Action("forget")  # it failed because it left
    if f.sig != f.taken_sig:
        return Action("retry")  # it failed because it was still being written
    return Action("record", "failed", f.reason)


def _sibling(f: Facts) -> Action:
    e = f.entry
    if (e is None or e.state != "done" or not e.output or f.planned is None or e.output == f.planned
            or e.reason == KEPT_EXISTING or not f.own_output_exists or f.output_exists):
        return Action("skip", e.state if e is not None else None)  # not ours, unchanged, or the name is taken
    if f.sig != e.signature:
        # the input left or holds new content (a reused name): its output is about to be released, not
        # moved; moving it would hand its name to the next photo (found by the soak test)
        return Action("skip", e.state)
    return Action("rename", output=f.planned)

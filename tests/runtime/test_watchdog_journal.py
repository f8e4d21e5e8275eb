"""The watchdog journals a fence made after its daemon's death (docs/audit.md).

Invariant: the audit journal tells what a node held even when its daemon died.
The daemon journals a fence when it resumes; a daemon that is gone (EOF on the
watchdog's pipe: the watchdog is the journal's only writer left) cannot, so the
watchdog appends the same ``resource`` stop record, in the daemon's boot after
its last record, and the audit reads the journal as one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_watchdog import BOUND, Rig

from failover.audit import load_records
from failover.runtime.logging import AuditJournal
from failover.runtime.watchdog import FENCED

BOOT = 3


def daemon_journal(path: Path, *, torn: bool = False) -> None:
    """What a daemon of boot ``BOOT`` journalled before it was killed (an earlier boot
    first), with, if ``torn``, a last line cut by the kill."""
    for boot, kinds in ((BOOT - 1, ("start", "exit")), (BOOT, ("start", "transition"))):
        journal = AuditJournal(path, node="alpha", boot=boot, reserve=0)
        for kind in kinds:
            fields: dict[str, Any] = {"generation": "1:1"}
            if kind == "transition":
                fields.update({"from": "secondary", "to": "primary", "forced": False})
            journal.write(kind, **fields)
        journal.close()
    if torn:
        with open(path, "ab") as handle:
            handle.write(b'{"v": 1, "kind": "link", "node": "al')


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def journalled(tmp_path: Path) -> Iterator[Rig]:
    journal = tmp_path / "audit.jsonl"
    daemon_journal(journal, torn=True)
    made = Rig(
        tmp_path,
        addresses=(("192.0.2.10/24", "no-such-if0"),),
        journal=str(journal),
        node="alpha",
        boot=BOOT,
    )
    try:
        yield made
    finally:
        made.cleanup()


def test_the_daemon_gone_while_serving_its_fence_is_journalled(journalled: Rig) -> None:
    rig, journal = journalled, Path(journalled.plan.journal or "")
    journalled.feed(time.monotonic() + 10 * BOUND)
    assert rig.close() == 0  # EOF: the kernel closed a killed daemon's pipe
    assert rig.group_gone()
    notice = json.loads(Path(rig.plan.record).read_text())[FENCED]
    written = records(journal)  # (the torn line of the killed daemon is cut off)
    assert [(r["boot"], r["seq"], r["kind"]) for r in written] == [
        (BOOT - 1, 1, "start"),
        (BOOT - 1, 2, "exit"),
        (BOOT, 1, "start"),
        (BOOT, 2, "transition"),
        (BOOT, 3, "resource"),
    ]
    fence = written[-1]
    assert fence["node"] == "alpha" and fence["watchdog"] is True
    assert (fence["action"], fence["phase"]) == ("stop", "end")
    assert fence["fenced_at"] == notice["at"] <= fence["mono"]
    assert fence["vip"] == "192.0.2.10/24"
    # the VIP's interface does not exist here: a failed step is said, not hidden
    assert fence["ok"] is False and "failed: vip" in fence["problem"]
    assert "the daemon is gone" in fence["problem"]
    nodes, torn = load_records([journal])  # the audit reads it: no torn line left
    assert torn == 0 and nodes["alpha"][-1].kind == "resource"


def test_no_fence_no_record(journalled: Rig) -> None:
    journal = Path(journalled.plan.journal or "")
    before = journal.read_bytes()
    journalled.feed(time.monotonic() + 10 * BOUND)
    journalled.feed(None)  # the node stopped serving, then the daemon ended
    assert journalled.close() == 0
    assert journal.read_bytes() == before  # not even the torn line touched


@pytest.mark.parametrize("daemon_journalled", [False, True])
def test_a_stall_fence_is_journalled_at_eof_unless_the_daemon_did(
    journalled: Rig, daemon_journalled: bool
) -> None:
    """Fenced at the deadline (the loop stalled), then the daemon killed before it
    resumed: the fence is journalled at EOF. A daemon that resumed journalled it
    itself and removed the record file: nothing is written twice."""
    rig, journal = journalled, Path(journalled.plan.journal or "")
    rig.feed(time.monotonic() + 0.2)
    notice = rig.notice()
    assert notice is not None, rig.log()
    if daemon_journalled:
        Path(rig.plan.record).unlink()
    before = journal.read_bytes()
    assert rig.close() == 0
    if daemon_journalled:
        assert journal.read_bytes() == before
    else:
        written = records(journal)
        assert [(r["seq"], r["kind"]) for r in written if r["boot"] == BOOT][-1] == (
            3,
            "resource",
        )
        assert written[-1]["fenced_at"] == notice["at"]
        assert "before its deadline" in written[-1]["problem"]


def test_a_later_daemon_already_journalling_gets_no_older_record(tmp_path: Path) -> None:
    """The next daemon stopped waiting for this watchdog (its bound passed) and has
    started its boot: a record of the older boot after it would break the journal's
    time order, and its start record already says what the node holds."""
    journal = tmp_path / "audit.jsonl"
    daemon_journal(journal)
    AuditJournal(journal, node="alpha", boot=BOOT + 1, reserve=0).write("start", generation="1:1")
    rig = Rig(tmp_path, journal=str(journal), node="alpha", boot=BOOT)
    try:
        before = journal.read_bytes()
        rig.feed(time.monotonic() + 10 * BOUND)
        assert rig.close() == 0
        assert rig.group_gone()  # fenced all the same
        assert journal.read_bytes() == before
        assert "a later daemon already writes" in rig.log()
    finally:
        rig.cleanup()

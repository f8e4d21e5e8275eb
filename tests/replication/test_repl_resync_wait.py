"""The data plane's parts below the adapter, without FUSE nor a network: the target's
wait for a resync (``ResyncWait``), the source's attempts (``SourceAttempts.start``),
the verifier's verdict and the sending side's fence and status."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from failover.errors import UsageError
from failover.replication.apply import ApplyError
from failover.replication.channel import ChannelSettings, SessionIdentity
from failover.replication.resync_attempt import AttemptOutcome, SourceAttempts
from failover.replication.resync_check import CheckCache
from failover.replication.resync_target import ResyncWait
from failover.replication.sending import Sending
from failover.replication.tracking import ChangeSet
from failover.replication.verify_peer import PeerVerifier

pytestmark = pytest.mark.anyio


@dataclass
class FakeDirectories:
    """What ``ResyncWait`` uses of ``Directories``: the shared checks and fds."""

    root: Path
    checks: CheckCache = field(default_factory=CheckCache)

    async def dup_roots(self) -> dict[str, int]:
        return {"data": os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)}


class FakeTracker:
    def __init__(self) -> None:
        self.suspect = ChangeSet(4096)

    def changes(self) -> ChangeSet:
        return self.suspect


@dataclass
class Waiting:
    wait: ResyncWait[str]
    reported: list[tuple[str, str]]
    set_aside: anyio.Event  # set by the test: the set-aside may end
    set_aside_fails: list[bool]


@asynccontextmanager
async def waiting(tmp_path: Path) -> AsyncIterator[Waiting]:
    reported: list[tuple[str, str]] = []
    release = anyio.Event()
    fails: list[bool] = []

    async def set_aside() -> tuple[str, Exception] | None:
        await release.wait()
        return ("data", OSError(28, "No space left on device")) if fails else None

    def recorder(kind: str) -> Any:
        async def record(what: str) -> None:
            reported.append((kind, what))

        return record

    directories: Any = FakeDirectories(tmp_path)
    wait: ResyncWait[str] = ResyncWait(
        directories,
        base=lambda: "1:alpha",
        set_aside=set_aside,
        on_done=recorder("done"),
        on_failed=recorder("failed"),
        on_set_aside_failed=recorder("set-aside failed"),
    )
    tracker: Any = FakeTracker()
    async with anyio.create_task_group() as tg:
        wait.attach(tracker, tg)
        yield Waiting(wait, reported, release, fails)
        tg.cancel_scope.cancel()


async def test_a_full_resync_is_answered_only_once_everything_was_set_aside(
    tmp_path: Path,
) -> None:
    async with waiting(tmp_path) as w:
        w.wait.expect("full", "2:alpha")
        await anyio.wait_all_tasks_blocked()
        assert w.wait.wanted is None  # nothing may be received over data not set aside
        assert w.wait.status()["resync_wanted"]  # but the node does wait for it
        w.set_aside.set()
        await anyio.wait_all_tasks_blocked()
        assert w.wait.wanted is True
        assert w.reported == []


async def test_a_failed_set_aside_answers_no_source_and_is_reported(tmp_path: Path) -> None:
    async with waiting(tmp_path) as w:
        w.set_aside_fails.append(True)
        w.wait.expect("full", "2:alpha")
        w.set_aside.set()
        await anyio.wait_all_tasks_blocked()
        assert w.wait.wanted is None
        assert not w.wait.status()["resync_wanted"]
        assert w.reported == [
            (
                "set-aside failed",
                "could not quarantine data before a full resync: "
                "[Errno 28] No space left on device",
            )
        ]


async def test_an_incremental_resync_replaces_a_full_one_being_set_aside(tmp_path: Path) -> None:
    async with waiting(tmp_path) as w:
        w.set_aside_fails.append(True)  # even a failing one: it no longer counts
        w.wait.expect("full", "2:alpha")
        await anyio.wait_all_tasks_blocked()
        w.wait.expect("incremental", "3:alpha")
        assert w.wait.wanted is False
        w.set_aside.set()
        await anyio.wait_all_tasks_blocked()
        assert w.wait.wanted is False and w.reported == []


async def test_a_stopped_set_aside_is_waited_for_but_never_answered(tmp_path: Path) -> None:
    async with waiting(tmp_path) as w:
        w.wait.expect("full", "2:alpha")
        await anyio.wait_all_tasks_blocked()
        w.wait.stop()  # the core stopped it: its moves go on in their thread
        settled = anyio.Event()

        async def serve() -> None:
            async with w.wait.settled():
                settled.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await anyio.wait_all_tasks_blocked()
            assert not settled.is_set()  # the application must not get the directories
            w.set_aside.set()
        assert settled.is_set() and w.wait.wanted is None and w.reported == []


async def test_the_end_of_a_resync_is_reported_only_when_waited_for(tmp_path: Path) -> None:
    async with waiting(tmp_path) as w:
        with capture_logs() as logs:
            await anyio.to_thread.run_sync(w.wait.done)  # nobody waited: logged only
        assert w.reported == [] and w.wait.received == 1
        assert [r["event"] for r in logs] == ["a resync ended that this node did not wait for"]
        w.wait.expect("incremental", "2:alpha")
        await anyio.to_thread.run_sync(w.wait.done)
        assert w.reported == [("done", "2:alpha")] and w.wait.wanted is None
        assert w.wait.status() == {"resync_wanted": False, "resyncs_received": 2}


async def test_a_change_that_failed_is_a_failed_resync_only_during_one(tmp_path: Path) -> None:
    async with waiting(tmp_path) as w:
        await w.wait.apply_failed("alpha", ApplyError("disk full", 28))
        assert w.reported == []
        w.wait.expect("incremental", "2:alpha")
        await w.wait.apply_failed("alpha", ApplyError("disk full", 28))
        assert w.reported == [("failed", "a change from alpha failed here: disk full")]


async def test_the_suspect_set_is_digested_on_expect_once_and_never_for_a_request(
    tmp_path: Path,
) -> None:
    class Session:  # what a request is asked of: the session's ResyncTarget
        def request(self, base: str, suspect: ChangeSet, *, full: bool) -> bytes:
            return f"{base} {full}".encode()

    session: Any = Session()
    async with waiting(tmp_path) as w:
        assert w.wait.request(session) == b""  # no resync wanted: nothing asked
        w.wait.expect("incremental", "2:alpha")
        await w.wait.digested()
        assert w.wait.checks.passes == 1
        assert w.wait.request(session) == b"1:alpha False"
        w.wait.digest()  # an authenticated session ended: digested again if voided
        await w.wait.digested()
        assert w.wait.checks.passes == 1  # nothing was written: still fresh, no pass
        with w.wait.checks.writing():
            pass
        w.wait.digest()
        await w.wait.digested()
        assert w.wait.checks.passes == 2
        w.wait.stop()
        w.wait.digest()  # nothing wanted: no pass
        await w.wait.digested()
        assert w.wait.checks.passes == 2


# --- the source's attempts ---------------------------------------------------------------


@dataclass
class FakeSending:
    peer: str = "beta"
    relay: object = "the relay"


async def test_attempts_hand_over_their_outcome_unless_stopped(tmp_path: Path) -> None:
    resynced: list[bool] = []
    sending: Any = FakeSending()
    attempts = SourceAttempts(
        Any, sending, bandwidth=0, on_late_break=print, on_resynced=lambda: resynced.append(True)
    )
    gate = anyio.Event()

    async def attempt(mode: str, generation: str, tracker: Any, relay: Any) -> AttemptOutcome:
        assert (mode, relay) == ("full", "the relay")
        await gate.wait()
        return AttemptOutcome(generation == "ok", "" if generation == "ok" else "no route")

    attempts.attempt = attempt  # type: ignore[method-assign]
    outcomes: list[AttemptOutcome] = []

    async def outcome(end: AttemptOutcome) -> None:
        outcomes.append(end)

    async with anyio.create_task_group() as tg:
        attempts.start(tg, "full", "fail", Any, outcome)
        await anyio.wait_all_tasks_blocked()
        attempts.stop()  # the core stopped it: never reported, never counted
        gate.set()
        await anyio.wait_all_tasks_blocked()
        assert outcomes == [] and attempts.failures == 0
        attempts.start(tg, "full", "fail", Any, outcome)
        attempts.start(tg, "full", "ok", Any, outcome)  # replaces the first
        await anyio.wait_all_tasks_blocked()
        assert outcomes == [AttemptOutcome(True)] and resynced == [True]
        attempts.start(tg, "full", "fail", Any, outcome)
    assert outcomes == [AttemptOutcome(True), AttemptOutcome(False, "no route")]
    assert attempts.failures == 1 and resynced == [True]
    status = attempts.status(None)
    assert status == {"resync": None, "resync_failures": 1, "bandwidth": 0, "tracked": None}


# --- verify -------------------------------------------------------------------------------


async def test_verify_needs_a_live_session_and_a_resync_voids_its_verdict() -> None:
    sending: Any = FakeSending(relay=None)
    sending.sender = None
    verifier = PeerVerifier(sending, Any, 4096)
    with pytest.raises(UsageError, match="verify needs a replicating primary"):
        await verifier.verify()
    verifier.last = {"at": 1.0, "in_sync": False, "differences": 3}
    assert verifier.status() == {"verified": verifier.last}
    verifier.forget()
    assert verifier.status() == {"verified": None}


# --- the sending side's part --------------------------------------------------------------


class FakeRelay:
    def __init__(self) -> None:
        self.sender: Any = None
        self.fenced, self.serving, self.held = False, True, 0

    def set_fenced(self, fenced: bool, serving: bool) -> None:
        self.fenced, self.serving = fenced, serving


async def test_the_fence_set_before_the_relay_exists_is_applied_when_it_does() -> None:
    async def connect() -> Any:
        raise AssertionError("not connected here")

    sending = Sending(
        identity=lambda: SessionIdentity("c1", None, "alpha", "beta", "1:alpha"),
        channel=ChannelSettings(),
        connect=connect,
        peer="beta",
        on_broken=print,
    )
    assert sending.status() == {
        "replicating": False,
        "channel_problem": None,
        "writes_fenced": False,
        "writes_held": 0,
        "ack": str(ChannelSettings().ack_level),
        "sender": None,
    }
    sending.fence(True, False)  # the core's FenceWrites before the data plane runs
    relay: Any = FakeRelay()
    async with anyio.create_task_group() as tg:
        sending.attach(relay, tg)
    assert (relay.fenced, relay.serving) == (True, False)
    assert sending.status()["writes_fenced"]
    sending.fence(False, True)
    assert (relay.fenced, relay.serving) == (False, True)

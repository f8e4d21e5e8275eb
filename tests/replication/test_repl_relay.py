"""The relay's write fence against the sessions that come and go (``replication/relay.py``).

The invariant: while the fence holds (the peer is an alive secondary), an fsync
returns only once a peer acknowledged it, or the fence lifts; it fails with EIO
once this node stops serving. A held fsync is asked again of every later session
that runs unbroken (as a new fsync would be), never of one it already tried, and
a protected pair, whose fence never lifts, releases it through its session
(campaign finding 3, i13). No FUSE here: the relay is called as a FUSE thread
would call it, with a fake sender and a fake tracker.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

from failover.replication.ops import Fsync, Op
from failover.replication.relay import Relay

WAIT_S = 10.0  # bound of a wait on another thread (an event, not a timing)
OP = Fsync("data", b"record", False)


class FakeSender:
    """What ``Relay`` uses of a ``ReplicationSender``: an unbroken one
    acknowledges every entry at once; a broken one queues nothing. ``checked``
    is set when someone asked whether it is broken; ``on_wait`` runs when an
    fsync waits for its acknowledgement."""

    def __init__(self, broken: str | None = None, on_wait: Callable[[], None] = lambda: None):
        self._broken = broken
        self.on_wait = on_wait
        self.queued: list[Op] = []
        self.checked = threading.Event()

    @property
    def broken(self) -> str | None:
        self.checked.set()
        return self._broken

    def queue(self, op: Op) -> int:
        if self._broken is not None:
            return 0
        self.queued.append(op)
        return len(self.queued)

    def wait_acked(self, seq: int) -> bool:
        self.on_wait()
        return self._broken is None


class FakeTracker:
    def __init__(self) -> None:
        self.synced: list[Fsync] = []

    def sync(self, op: Fsync) -> None:
        self.synced.append(op)


def new_relay() -> Relay:
    return Relay(cast(Any, FakeTracker()))


def as_sender(sender: FakeSender) -> Any:
    return cast(Any, sender)


@contextmanager
def fsync_in_thread(relay: Relay) -> Iterator[list[object]]:
    """An application's fsync through ``relay`` in its own thread (a FUSE thread);
    yields the list that gets its result (the epoch returned, or the OSError).
    On leaving, the fsync must have returned within the bound; if it hangs, the
    node stops serving (the held fsync fails) so that the test ends."""
    result: list[object] = []
    local: list[bool] = []

    def application() -> None:
        try:
            result.append(relay.sync(OP, lambda: local.append(True)))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=application)
    thread.start()
    try:
        yield result
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the fsync hangs"
    finally:
        if thread.is_alive():
            relay.set_fenced(False, serving=False)
            thread.join(WAIT_S)
    assert local == [True]  # the local fsync ran once, however many sessions were asked


def held(relay: Relay) -> None:
    """Until an fsync waits at the fence (a bounded poll of another thread's state)."""
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.005)):
        if relay.held:
            return
        done.wait(0.005)
    pytest.fail("no fsync was held")


def test_a_held_fsync_is_acknowledged_by_the_next_session() -> None:
    """The campaign's stall: an fsync begun with no session reaches the fence once
    the peer is secondary; the resync's session, handed over meanwhile, is the
    only way out of a protected pair (its fence never lifts)."""
    relay = new_relay()
    relay.set_fenced(True, serving=True)
    session = FakeSender()
    with fsync_in_thread(relay) as result:
        held(relay)
        relay.sender = as_sender(session)
    assert session.queued == [OP]
    # queued and acknowledged within this session: the mirror may note the file clean
    assert result == [relay.session()] and result[0] is not None
    assert relay.held == 0


def test_a_held_fsync_is_asked_of_no_broken_session_and_a_fence_change_alone_keeps_it() -> None:
    relay = new_relay()
    relay.set_fenced(True, serving=True)
    tried = FakeSender()
    tried.on_wait = lambda: setattr(tried, "_broken", "cut")  # the session breaks
    relay.sender = as_sender(tried)
    broken = FakeSender("refused")
    with fsync_in_thread(relay) as result:
        held(relay)
        relay.sender = as_sender(broken)
        assert broken.checked.wait(WAIT_S)  # the held fsync saw it, and stays held
        relay.sender = None
        relay.set_fenced(True, serving=True)  # the same fence again: still held
        relay.sender = as_sender(tried)
        assert relay.held == 1
        relay.set_fenced(False, serving=True)  # the core: the peer left secondary
    assert result == [None]  # let go without the peer (its changes are tracked)
    assert tried.queued == [OP] and broken.queued == []


def test_a_held_fsync_fails_once_the_node_stops_serving() -> None:
    relay = new_relay()
    relay.set_fenced(True, serving=True)
    with fsync_in_thread(relay) as result:
        held(relay)
        relay.set_fenced(True, serving=False)
    assert isinstance(result[0], OSError) and result[0].errno == errno.EIO


def test_an_fsync_begun_before_fail_held_fails_when_its_session_then_breaks() -> None:
    """Unserve: ``fail_held`` then the session's end. An fsync waiting for its
    acknowledgement meanwhile is held only after the call, and fails too."""
    relay = new_relay()
    relay.set_fenced(True, serving=True)
    session = FakeSender()

    def unserve() -> None:
        relay.fail_held()
        session._broken = "replication session closed locally"

    session.on_wait = unserve
    relay.sender = as_sender(session)
    with fsync_in_thread(relay) as result:
        pass
    assert isinstance(result[0], OSError) and result[0].errno == errno.EIO


def test_an_fsync_with_no_session_and_no_fence_returns_without_the_peer() -> None:
    relay = new_relay()
    with fsync_in_thread(relay) as result:
        pass
    assert result == [None]
    assert cast(FakeTracker, relay.tracker).synced == [OP]

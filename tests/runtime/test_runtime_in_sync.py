"""Status's ``in_sync`` and why it is false (``failover.runtime.control.not_in_sync``)."""

from __future__ import annotations

from typing import Any

import pytest

from failover.core.state import State
from failover.runtime.control import not_in_sync

PEER = {"node": "beta", "state": "secondary", "alive": True}
REPLICATING: dict[str, Any] = {"replicating": True, "channel_problem": None, "verified": None}


def test_a_primary_with_its_secondary_and_a_live_channel_is_in_sync() -> None:
    assert not_in_sync(State.PRIMARY, PEER, REPLICATING) is None
    assert not_in_sync(State.PRIMARY, PEER, None) is None  # nothing replicated


@pytest.mark.parametrize(
    ("state", "peer", "replication", "reason"),
    [
        (State.PRIMARY, None, REPLICATING, "the peer was never heard"),
        (State.PRIMARY, dict(PEER, alive=False), REPLICATING, "peer beta lost"),
        (State.PRIMARY, dict(PEER, state="resync"), REPLICATING, "peer beta is resync"),
        (State.ALONE, PEER, REPLICATING, "this node is alone"),
        (State.SECONDARY, dict(PEER, state="primary"), None, "peer beta is primary"),
        (State.PRIMARY, PEER, dict(REPLICATING, replicating=False), "no replication session"),
        (
            State.PRIMARY,
            PEER,
            dict(REPLICATING, channel_problem="no answer from beta for 2.0 s"),
            "replication channel: no answer from beta for 2.0 s",
        ),
        (
            State.PRIMARY,
            PEER,
            dict(REPLICATING, verified={"in_sync": False, "differences": 3}),
            "the last verify found 3 differences",
        ),
    ],
)
def test_each_reason_not_to_be_in_sync_is_named(
    state: State, peer: dict[str, Any] | None, replication: dict[str, Any] | None, reason: str
) -> None:
    found = not_in_sync(state, peer, replication)
    assert found is not None and found.startswith(reason)

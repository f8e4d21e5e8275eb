"""Status's ``in_sync`` and why it is false: the core's view of the pair
(``failover.core.node.pair_problem``), then what only the data plane sees
(``failover.runtime.control.not_in_sync``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from failover.core.node import pair_problem
from failover.core.state import Generation, Metadata, PeerStatus, State, SubStatus
from failover.runtime.control import not_in_sync

G1 = Generation(1, "alpha")
OURS = Metadata(generation=G1, synced_generation=G1, consistent=True)
PEER = PeerStatus("beta", State.SECONDARY, SubStatus.READY, G1, G1, True, "")
REPLICATING: dict[str, Any] = {"replicating": True, "channel_problem": None, "verified": None}


def test_a_primary_with_its_secondary_and_a_live_channel_is_in_sync() -> None:
    core = pair_problem(State.PRIMARY, PEER, True, OURS)
    assert core is None
    assert not_in_sync(core, REPLICATING) is None
    assert not_in_sync(core, None) is None  # nothing replicated


@pytest.mark.parametrize(
    ("state", "peer", "alive", "reason"),
    [
        (State.PRIMARY, None, False, "the peer was never heard"),
        (State.PRIMARY, PEER, False, "peer beta lost"),
        (State.PRIMARY, replace(PEER, state=State.RESYNC), True, "peer beta is resync"),
        (State.ALONE, PEER, True, "this node is alone"),
        (State.SECONDARY, replace(PEER, state=State.PRIMARY), True, "peer beta is primary"),
        (
            State.PRIMARY,
            replace(PEER, generation=Generation(2, "beta")),
            True,
            "peer beta holds generation 2:beta, not ours",
        ),
    ],
)
def test_the_core_names_why_the_pair_is_not_in_sync(
    state: State, peer: PeerStatus | None, alive: bool, reason: str
) -> None:
    core = pair_problem(state, peer, alive, OURS)
    assert core is not None and core.startswith(reason)
    assert not_in_sync(core, REPLICATING) == core  # the core's reason comes first


@pytest.mark.parametrize(
    ("replication", "reason"),
    [
        (dict(REPLICATING, replicating=False), "no replication session"),
        (
            dict(REPLICATING, channel_problem="no answer from beta for 2.0 s"),
            "replication channel: no answer from beta for 2.0 s",
        ),
        (
            dict(REPLICATING, verified={"in_sync": False, "differences": 3}),
            "the last verify found 3 differences",
        ),
    ],
)
def test_the_data_plane_adds_what_only_it_sees(replication: dict[str, Any], reason: str) -> None:
    found = not_in_sync(None, replication)
    assert found is not None and found.startswith(reason)

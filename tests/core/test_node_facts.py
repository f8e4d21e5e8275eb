"""The node's whole mutable state is one frozen value, ``NodeFacts``.

Invariant: the facts determine the node's future. A node restored from the
facts another node had after any step, given the same inputs at the same times
from then on, emits the same effects and ends with the same facts. (A piece of
state kept outside the value, or a restore that forgets part of it, breaks
that.) The sub-states are enums that keep their words.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest
from core_support import SETTINGS, WALKS, Driver

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.facts import NodeFacts
from failover.core.node import Node
from failover.core.state import AppPending, Handover, ResyncRole, State


def _replay(node: Node, steps: list[tuple[ev.Event, float]]) -> list[list[fx.Effect]]:
    return [node.handle(event, now) for event, now in steps]


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_node_restored_from_the_facts_of_any_step_continues_alike(state: State) -> None:
    d = Driver()
    WALKS[state](d)
    d.run_until(d.now + 2 * SETTINGS.dead_timeout)  # timers too: the peer is lost
    steps = [(step.event, step.now) for step in d.steps]
    for cut in range(len(steps) + 1):
        first = Node(SETTINGS, Driver().metadata)
        _replay(first, steps[:cut])
        facts = first.snapshot()
        assert facts is first.facts  # the snapshot is the value itself
        second = Node(SETTINGS)
        second.restore(facts)
        assert _replay(second, steps[cut:]) == _replay(first, steps[cut:]), f"cut {cut}"
        assert second.facts == first.facts
        assert second.state is first.state is d.state


def test_the_facts_are_replaced_never_changed_in_place() -> None:
    d = Driver()
    before = d.node.facts
    WALKS[State.PRIMARY](d)
    assert before == NodeFacts(
        metadata=before.metadata, view=before.view, links=before.links
    )  # still the facts of a node just started
    with pytest.raises(FrozenInstanceError):
        d.node.facts.reason = "changed"  # type: ignore[misc]


def test_sub_states_are_enums_that_keep_their_words() -> None:
    d = Driver()
    WALKS[State.PRIMARY](d)
    d.do(ev.Swap())
    assert d.node.facts.handover is Handover.STOPPING
    assert d.node.facts.app_pending is AppPending.STOP
    assert json.dumps([d.node.facts.handover, d.node.facts.app_pending]) == '["stopping", "stop"]'
    d = Driver()
    WALKS[State.RESYNC](d)
    assert d.node.facts.resync_role is ResyncRole.TARGET
    assert f"{d.node.facts.resync_role}" == "target"


def test_a_misspelt_fact_is_refused_not_kept_as_an_extra_attribute() -> None:
    """``update`` and ``Metadata.evolve`` take only field names: a typo in a rule
    must fail loudly, not leave the real fact unchanged."""
    node = Node(SETTINGS, Driver().metadata)
    before = node.facts
    with pytest.raises(TypeError, match="NodeFacts has no field relaton"):
        node.update(relaton=None)
    assert node.facts is before
    with pytest.raises(TypeError, match="Metadata has no field generaton"):
        before.metadata.evolve(generaton=None)

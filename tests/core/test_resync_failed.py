"""A resync this node could not apply (its copy is not what the incremental plan
assumed, as after a split brain's quarantine) must not loop: the table leaves
``resync`` for ``wait`` and the next resync from the serving peer is a full one."""

from __future__ import annotations

from core_support import G1_BETA, G2_BETA, Driver, beta, of_type, to_secondary

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import State


def test_a_resync_that_failed_here_is_retried_as_a_full_one() -> None:
    d = Driver()
    to_secondary(d)  # in sync at G1: beta then serves alone (G2), alpha resyncs what changed
    first = of_type(
        d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5), fx.StartResync
    )
    assert d.state is State.RESYNC
    assert [(e.role, e.mode) for e in first] == [("target", "incremental")]
    effects = d.do(ev.ResyncFailed("a change from beta failed here: Write: No such file"))
    assert d.state is State.WAIT
    assert of_type(effects, fx.StopResync)
    assert not d.node.facts.metadata.consistent
    effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC
    again = of_type(effects, fx.StartResync)
    assert [(e.role, e.mode) for e in again] == [("target", "full")]
    # once: a later resync is incremental again
    assert not d.node.facts.full_resync

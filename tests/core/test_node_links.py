"""Links and peer loss: one silent link is shown down; the peer is lost only
when every link has been silent for the dead timeout."""

from __future__ import annotations

from core_support import G1_BETA, SETTINGS, Driver, beta, of_type, records, to_resync

from failover.core import effects as fx
from failover.core.state import State

SERVING_BETA = beta(State.ALONE, G1_BETA)


def resyncing_from_beta() -> Driver:
    """Alpha resynchronises from beta: losing beta would end the resync."""
    d = Driver()
    to_resync(d)  # beta heard on both links at 0.5
    return d


def test_a_link_is_shown_down_after_link_timeout_while_the_other_keeps_the_peer() -> None:
    d = resyncing_from_beta()
    effects = []
    for t in (1.5, 2.5, 3.5, 4.5, 5.5):
        effects += d.run_until(t)
        effects += d.hear(SERVING_BETA, at=t, links=["serial"])
    effects += d.run_until(6.0)
    assert of_type(effects, fx.LinkChanged) == [fx.LinkChanged("lan", up=False)]
    assert not d.node.facts.link("lan").up
    assert d.node.facts.link("serial").up
    assert d.node.facts.peer_alive
    assert d.state is State.RESYNC
    assert not any(r.event == "peer_lost" for r in records(effects))


def test_the_link_goes_down_exactly_at_link_timeout() -> None:
    d = resyncing_from_beta()
    d.hear(SERVING_BETA, at=1.0, links=["serial"])
    d.run_until(0.5 + SETTINGS.link_timeout - 0.01)
    assert d.node.facts.link("lan").up
    d.run_until(0.5 + SETTINGS.link_timeout)
    assert not d.node.facts.link("lan").up
    assert d.node.facts.link("serial").up


def test_a_heartbeat_brings_a_link_back_up() -> None:
    d = resyncing_from_beta()
    d.hear(SERVING_BETA, at=1.0, links=["serial"])
    d.run_until(3.0)
    assert not d.node.facts.link("lan").up
    effects = d.hear(SERVING_BETA, at=3.2, links=["lan"])
    assert fx.LinkChanged("lan", up=True) in effects
    assert d.node.facts.link("lan").up


def test_the_peer_is_lost_only_when_every_link_is_silent_for_dead_timeout() -> None:
    d = resyncing_from_beta()
    d.hear(SERVING_BETA, at=1.0, links=["lan"])
    d.hear(SERVING_BETA, at=2.0, links=["serial"])  # the last word from beta
    d.run_until(2.0 + SETTINGS.dead_timeout - 0.01)
    assert d.node.facts.peer_alive
    assert d.state is State.RESYNC
    effects = d.run_until(2.0 + SETTINGS.dead_timeout)
    assert not d.node.facts.peer_alive
    assert d.state is State.WAIT
    [record] = [r for r in records(effects) if r.source != r.target]
    assert (record.event, record.source, record.target) == ("peer_lost", "resync", "wait")
    assert "lost" in record.reason
    assert of_type(effects, fx.StopResync)

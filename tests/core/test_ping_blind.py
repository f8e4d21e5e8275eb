"""A ping witness records no generation: a node that decides without its peer
does not serve on its grant (``arbitrated`` is false), as without an arbitrator;
a witness or etcd, which grant only to the newest data, let it ask."""

from __future__ import annotations

from dataclasses import replace

from core_support import SETTINGS, Driver, of_type, to_secondary, to_wait

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation, Metadata, Settings, State

# alpha was a secondary, in sync, when it stopped: whether beta served since is unknown
SECONDARY = Metadata(
    generation=Generation(2, "beta"),
    peer_generation=Generation(2, "beta"),
    last_state=State.SECONDARY,
    consistent=True,
)


def test_a_ping_witness_does_not_vouch_for_a_blind_start() -> None:
    ping = replace(SETTINGS, arbitrator=True, arbitrator_records=False)
    d = Driver(settings=ping, metadata=SECONDARY)
    to_wait(d)
    effects = d.run_until(20.0)  # discovery ends, then every recheck
    assert d.state is State.WAIT
    assert not of_type(effects, fx.RequestArbitration)
    assert "data freshness unknown" in d.node.facts.reason, d.node.facts.reason


def test_a_witness_is_asked_for_a_blind_start() -> None:
    witness = replace(SETTINGS, arbitrator=True)
    d = Driver(settings=witness, metadata=SECONDARY)
    to_wait(d)
    effects = d.run_until(20.0)
    assert of_type(effects, fx.RequestArbitration), "the witness decides whose data is newest"


def denied_secondary(settings: Settings) -> tuple[Driver, list[fx.Effect]]:
    """Alpha, beta's secondary, loses beta; the arbitrator is not reached."""
    d = Driver(settings=settings)
    to_secondary(d)
    effects = d.run_until(d.now + 10.0)  # dead_timeout: alpha asks to take over
    assert of_type(effects, fx.RequestArbitration)
    d.do(ev.ArbitrationDenied(reason="192.0.2.1 not reached"))
    assert d.state is State.WAIT
    return d, d.run_until(d.now + 20.0)  # every recheck


def test_a_denied_secondary_asks_a_witness_again_at_a_recheck() -> None:
    _, effects = denied_secondary(replace(SETTINGS, arbitrator=True))
    assert of_type(effects, fx.RequestArbitration), "asked again at a recheck"


def test_a_denied_secondary_waits_for_its_peer_with_a_ping_witness() -> None:
    d, effects = denied_secondary(replace(SETTINGS, arbitrator=True, arbitrator_records=False))
    assert not of_type(effects, fx.RequestArbitration)
    assert "data freshness unknown" in d.node.facts.reason, d.node.facts.reason

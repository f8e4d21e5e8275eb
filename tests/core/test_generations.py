"""Generations order data histories; ``relation`` compares two nodes' data without clocks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from failover.core.compare import Relation, common_generation, relation
from failover.core.state import INITIAL, Generation

G1A, G1B = Generation(1, "alpha"), Generation(1, "beta")
G2A, G2B = Generation(2, "alpha"), Generation(2, "beta")
G3A = Generation(3, "alpha")


@dataclass(frozen=True)
class Data:
    generation: Generation
    synced_generation: Generation = INITIAL
    consistent: bool = True


def test_generations_order_by_counter_then_origin() -> None:
    assert sorted([G2B, G1B, INITIAL, G2A, G1A]) == [INITIAL, G1A, G1B, G2A, G2B]
    assert G1B < G2A  # the counter decides before the origin
    assert Generation(1, "alpha") == G1A
    assert G1A != G1B  # same counter, different history


def test_the_successor_is_above_everything_seen_and_names_its_minter() -> None:
    assert INITIAL.successor("alpha", INITIAL) == G1A
    assert G1A.successor("beta", INITIAL) == G2B
    assert G1A.successor("alpha", Generation(5, "beta")) == Generation(6, "alpha")
    assert G3A.successor("beta", G1B) == Generation(4, "beta")


def test_only_the_initial_generation_is_initial() -> None:
    assert INITIAL.initial
    assert not G1A.initial
    assert str(INITIAL) == "0"
    assert str(G2B) == "2:beta"


@pytest.mark.parametrize(
    ("mine", "peer", "expected"),
    [
        (Data(G1A, G1A), Data(G1A, G1A), Relation.EQUAL),
        (Data(G2A, G1A), Data(G1A, G1A), Relation.ME_NEWER),
        (Data(G1A, G1A), Data(G2B, G1A), Relation.PEER_NEWER),
        (Data(G2A, G1A), Data(G2B, G1A), Relation.DIVERGED),
        (Data(G3A, G1A), Data(G2B, G1A), Relation.DIVERGED),  # a higher counter is no excuse
        (Data(G2A, G1A, False), Data(G1A, G1A, False), Relation.UNKNOWN),
        (Data(G1A, G1A), Data(G2B, G1A, False), Relation.ME_NEWER),  # the peer's copy is broken
        (Data(G2A, G1A, False), Data(G1A, G1A), Relation.PEER_NEWER),
        # one side recorded a later common point (it persisted the end of a resync)
        (Data(G2A, G2A), Data(G2A, G1A), Relation.EQUAL),
        (Data(G3A, G2A), Data(G2A, G1A), Relation.ME_NEWER),
    ],
    ids=[
        "equal",
        "me_newer",
        "peer_newer",
        "diverged",
        "diverged-higher-counter",
        "unknown",
        "peer-inconsistent",
        "me-inconsistent",
        "equal-later-sync-on-one-side",
        "me_newer-later-sync-on-one-side",
    ],
)
def test_relation(mine: Data, peer: Data, expected: Relation) -> None:
    assert relation(mine, peer) is expected


@pytest.mark.parametrize("case", list(Relation))
def test_relation_is_symmetric(case: Relation) -> None:
    mirror = {Relation.ME_NEWER: Relation.PEER_NEWER, Relation.PEER_NEWER: Relation.ME_NEWER}
    pairs = {
        Relation.EQUAL: (Data(G1A, G1A), Data(G1A, G1A)),
        Relation.ME_NEWER: (Data(G2A, G1A), Data(G1A, G1A)),
        Relation.PEER_NEWER: (Data(G1A, G1A), Data(G2B, G1A)),
        Relation.DIVERGED: (Data(G2A, G1A), Data(G2B, G1A)),
        Relation.UNKNOWN: (Data(G2A, G1A, False), Data(G1A, G1A, False)),
    }
    mine, peer = pairs[case]
    assert relation(mine, peer) is case
    assert relation(peer, mine) is mirror.get(case, case)


def test_the_common_generation_is_the_later_sync_point() -> None:
    assert common_generation(Data(G3A, G2A), Data(G2A, G1A)) == G2A
    assert common_generation(Data(G1A), Data(G1B)) == INITIAL

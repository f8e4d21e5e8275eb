"""How two nodes' data compare, from their generations alone (never clocks)."""

from __future__ import annotations

import enum

from failover.core.state import DataView, Generation, fresh


class Relation(enum.Enum):
    """Our data compared with the peer's."""

    EQUAL = "equal"  # same history
    ME_NEWER = "me_newer"  # the peer's data is an older state of ours
    PEER_NEWER = "peer_newer"  # ours is an older state of the peer's
    DIVERGED = "diverged"  # both served since they were last in sync: split brain
    UNKNOWN = "unknown"  # both inconsistent, or the peer is not known

    def describe(self, peer: str) -> str:
        return {
            Relation.EQUAL: f"same data as {peer}",
            Relation.ME_NEWER: f"our data is newer than {peer}'s",
            Relation.PEER_NEWER: f"{peer} has newer data",
            Relation.DIVERGED: f"our data and {peer}'s diverged",
            Relation.UNKNOWN: f"freshness against {peer} unknown",
        }[self]


def common_generation(mine: DataView, peer: DataView) -> Generation:
    """The last generation at which both held the same data.

    Each node records the generation at which it was last in sync with the
    other; one of them may have recorded a later one (it persisted the end of
    a resync the other did not). Both values lie on their shared history, so
    the later one is the most recent common point.
    """
    return max(mine.synced_generation, peer.synced_generation)


def relation(mine: DataView, peer: DataView) -> Relation:
    """Compare by generation: a node whose generation differs from the common
    point has served (minted) since; if both have, they diverged."""
    if not mine.consistent and not peer.consistent:
        return Relation.UNKNOWN
    if not peer.consistent:
        return Relation.ME_NEWER
    if not mine.consistent:
        return Relation.PEER_NEWER
    if mine.generation == peer.generation:
        return Relation.EQUAL
    # a node that never served nor synced holds no generation's data (a first
    # start, or a reinstalled node): whatever common point the other recorded,
    # it was not with this copy, which is older than any history
    if fresh(mine) != fresh(peer):
        return Relation.PEER_NEWER if fresh(mine) else Relation.ME_NEWER
    common = common_generation(mine, peer)
    mine_moved = mine.generation != common
    peer_moved = peer.generation != common
    if mine_moved and peer_moved:
        return Relation.DIVERGED
    return Relation.ME_NEWER if mine_moved else Relation.PEER_NEWER

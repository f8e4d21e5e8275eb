"""The safety invariants of spec/INVARIANTS.md, checked on every step.

Each check compares the world before and after one action, using the
simulator's ground truth (the disks, the acknowledged writes, what was really
delivered) rather than what the cores believe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from failover.core.compare import Relation, relation
from failover.core.state import Generation, Metadata, State
from failover.model.sim import (
    NAMES,
    PREEXISTING,
    ClusterConfig,
    StepInfo,
    World,
    holds_resources,
)


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.message}"


INVARIANTS: dict[str, str] = {
    "S1": "one server: with an arbitrator never two serving nodes; without one, two serve only "
    "after a takeover on total silence, and the first heartbeat between them resolves it",
    "S2": "no stale promotion: a node starts serving only with the newest generation, "
    "unless forced",
    "S3": "no lost acknowledged write: every acknowledged write is on the next node to serve",
    "S4": "a resync node never serves; resync ends in secondary, wait or stop",
    "S5": "generations never decrease (in memory and on disk, across restarts)",
    "S6": "no acknowledged write ever disappears: after a split brain the loser's writes are "
    "in its quarantine",
    "S7": "a first start keeps pre-existing data: it is never overwritten without being "
    "quarantined, and a node never serves on its own over a peer's pre-existing data",
    "R": "the application runs only on a serving node; metadata in memory is what is on disk",
}

Check = Callable[[ClusterConfig, World, StepInfo, World], list[Violation]]


def _serving(world: World, i: int) -> bool:
    """Serving means holding the resources: a serving state, or an application
    (and virtual IP) not yet stopped after leaving one."""
    return holds_resources(world, i)


def _wins_against(config: ClusterConfig, world: World, k: int, theirs: Generation) -> bool:
    """The split-brain policy, judged on what k was told (the heartbeat it got)."""
    if config.split_brain_winner is not None:
        return config.split_brain_winner == NAMES[k]
    return world.hosts[k].stored.generation > theirs


def check_s1(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    if not (_serving(post, 0) and _serving(post, 1)):
        return []
    if config.arbitrator and not post.dual_serving_blind:
        return [Violation("S1", "both nodes serve at once with an arbitrator configured")]
    if not post.dual_serving_blind:
        return [Violation("S1", "a node started serving while its peer served and could be heard")]
    return [
        Violation(
            "S1",
            f"{NAMES[k]} heard {NAMES[1 - k]} serving at generation {theirs} and kept serving "
            "without winning the split brain",
        )
        for k, theirs in info.kept_serving_against
        if _serving(post, k) and not _wins_against(config, post, k, theirs)
    ]


def _stale_promotion(pre: World, post: World, k: int, mine: Metadata) -> list[Violation]:
    """S2 for node ``k`` entering serving with ``mine``: the peer held newer,
    consistent data of an unforced history. Judged on what the peer held
    before the step (when ``k`` decided: within the step the peer may already
    have reacted, marking its copy inconsistent as a resync target or, without
    replicated directories, adopting ``k``'s generation at once) and after it
    (the peer may have minted meanwhile), where a generation ``k`` minted on
    entering is its own history, not newer data."""
    served = {c for c, parent in post.minted_from if parent == mine.generation}
    for world in (pre, post):
        theirs = world.hosts[1 - k].stored
        own_history = world is post and any(
            c.origin == NAMES[k] and post.descends(theirs.generation, c) for c in served
        )
        if (
            theirs.consistent
            and theirs.generation not in post.forced_lineage
            and not own_history
            and relation(mine, theirs) is Relation.PEER_NEWER
        ):
            return [
                Violation(
                    "S2",
                    f"{NAMES[k]} started serving generation {mine.generation} while "
                    f"{NAMES[1 - k]} holds newer {theirs.generation}",
                )
            ]
    return []


def check_s2_s3(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    found: list[Violation] = []
    set_aside = frozenset().union(*(h.quarantine for h in post.hosts))
    for k, _source, forced, blind in info.entered_serving:
        if forced:
            continue
        exempt = blind
        pre_core = pre.hosts[k].core
        mine = pre_core.metadata if pre_core is not None else pre.hosts[k].stored
        if not exempt:
            found += _stale_promotion(pre, post, k, mine)
        # writes a split-brain resolution set aside in quarantine are S6's to keep;
        # after a blind takeover the peer's unreplicated writes will be (S6 again)
        missing = post.acked - post.hosts[k].data - set_aside
        if exempt:
            # the peer may serve on behind a partition, under a generation of its
            # own: only what it acknowledged in ours (its last served with us in
            # sync) or synchronously is owed to this node
            own = {w for w, g in post.acked_in if g == mine.generation}
            missing &= post.replicated_acks | own
        # a write acknowledged on a history that split from this node's (a blind
        # takeover or a forced promotion made the split, which S1/S2 judge) is
        # the other side of a split brain: S6 keeps it, in quarantine if need be
        missing -= {
            w for w, g in post.acked_in if w in missing and post.diverged(g, mine.generation)
        }
        # forced promotion aside (DESIGN S3): a write acknowledged on a history an
        # operator forced (primforce of a copy never confirmed, say) that this node
        # never adopted: when the two meet, the split brain is detected and S6 keeps it
        missing -= {
            w
            for w, g in post.acked_in
            if w in missing and g in post.forced_lineage and not post.descends(mine.generation, g)
        }
        # and a node on a forced history owes only what was acknowledged on it:
        # what the forced node lacked when the operator forced it was waived then
        if mine.generation in post.forced_lineage:
            missing -= {w for w, g in post.acked_in if g not in post.forced_lineage}
        if missing:
            found.append(
                Violation(
                    "S3",
                    f"{NAMES[k]} started serving without acknowledged writes {sorted(missing)}",
                )
            )
    return found


_RESYNC_EXITS = (State.RESYNC, State.SECONDARY, State.WAIT, State.STOP)


def check_s4(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    found: list[Violation] = []
    for i in range(2):
        before, after = pre.hosts[i].core, post.hosts[i].core
        if before is None or after is None or before.state is not State.RESYNC:
            continue
        if after.state not in _RESYNC_EXITS:
            found.append(Violation("S4", f"{NAMES[i]} went from resync to {after.state.value}"))
    return found


def check_s5(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    found: list[Violation] = []
    for i in range(2):
        a, b = pre.hosts[i], post.hosts[i]
        if b.stored.generation < a.stored.generation:
            found.append(
                Violation(
                    "S5",
                    f"{NAMES[i]}'s persisted generation went from {a.stored.generation} "
                    f"to {b.stored.generation}",
                )
            )
        alive = a.core is not None and b.core is not None
        if alive and b.core.metadata.generation < a.core.metadata.generation:  # type: ignore[union-attr]
            found.append(Violation("S5", f"{NAMES[i]}'s generation decreased"))
    return found


def check_s6(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    kept = frozenset().union(*(h.data | h.quarantine for h in post.hosts))
    lost = post.acked - kept
    if lost:
        return [
            Violation("S6", f"acknowledged writes {sorted(lost)} are on no disk nor quarantine")
        ]
    return []


def check_s7(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    """A first start keeps what was on the disks before the cluster's first run:
    every pre-existing datum stays on some disk or in some quarantine, and no
    node whose metadata is fresh starts serving (unforced) while its peer's
    metadata is fresh too and its disk holds data: the node with data serves,
    and with data on both sides the operator chooses."""
    found: list[Violation] = []
    kept = frozenset().union(*(h.data | h.quarantine for h in post.hosts))
    lost = [
        NAMES[i]
        for i, there in enumerate(config.initial_data)
        if there and PREEXISTING[i] not in kept
    ]
    if lost:
        found.append(
            Violation("S7", f"the data {', '.join(lost)} held before the first start is gone")
        )
    for k, _source, forced, _blind in info.entered_serving:
        pre_core = pre.hosts[k].core
        mine = pre_core.metadata if pre_core is not None else pre.hosts[k].stored
        peer = pre.hosts[1 - k]
        if forced or not (mine.fresh and peer.stored.fresh and peer.data):
            continue
        found.append(
            Violation(
                "S7",
                f"{NAMES[k]} started serving at a first start over the data {NAMES[1 - k]} "
                "held before it",
            )
        )
    return found


def check_resources(
    config: ClusterConfig, pre: World, info: StepInfo, post: World
) -> list[Violation]:
    found: list[Violation] = []
    if info.outcome_overflow:
        found.append(Violation("R", "effects and outcomes loop without settling"))
    for i, host in enumerate(post.hosts):
        core = host.core
        if core is None:
            continue
        if host.app_running and not core.state.serving and not host.app_stopping:
            found.append(
                Violation("R", f"{NAMES[i]} runs the application in state {core.state.value}")
            )
        if core.metadata != host.stored:
            found.append(Violation("R", f"{NAMES[i]}'s metadata changed without being persisted"))
    return found


CHECKS: tuple[Check, ...] = (
    check_s1,
    check_s2_s3,
    check_s4,
    check_s5,
    check_s6,
    check_s7,
    check_resources,
)


def check_step(config: ClusterConfig, pre: World, info: StepInfo, post: World) -> list[Violation]:
    found: list[Violation] = []
    for check in CHECKS:
        found.extend(check(config, pre, info, post))
    return found

"""What the node and its rules share, so that neither imports the other.

``rules`` holds the guards and actions the table names; ``node`` runs the
table and calls them. The rules see the node only through ``Decider``: its
facts (one frozen ``NodeFacts`` value) which a row reads and replaces through
``update``, the step's inputs, and the few questions derived from them.
``Node`` satisfies it (structurally); ``node`` imports ``rules``, never the
reverse.
"""

from __future__ import annotations

from typing import Any, Protocol

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.compare import Relation
from failover.core.facts import Lease, NodeFacts
from failover.core.state import Settings, State

__all__ = ["Decider", "Lease"]


class Decider(Protocol):
    """The node as a guard reads it and an action changes it (``failover.core.node.Node``)."""

    settings: Settings
    now: float
    event: ev.Event
    followups: list[ev.Event]

    @property
    def facts(self) -> NodeFacts: ...

    def update(self, **changes: Any) -> None:
        """Replace the facts by a copy with ``changes`` (names of ``NodeFacts`` fields)."""

    @property
    def state(self) -> State: ...

    @property
    def relation(self) -> Relation: ...

    @property
    def can_serve(self) -> bool: ...

    @property
    def budget_spent(self) -> bool: ...

    @property
    def app_started(self) -> bool: ...

    def emit(self, effect: fx.Effect) -> None: ...

"""The formal core: a sans-IO, synchronous decision procedure.

Importing this package loads and validates the transition table in spec/, so
a malformed table fails at import, not when an edge fires.
"""

from failover.core import effects, events
from failover.core.compare import Relation, relation
from failover.core.facts import LinkView, NodeFacts
from failover.core.node import Node, NodeSnapshot
from failover.core.rules import default_table
from failover.core.state import (
    INITIAL,
    AppPending,
    Generation,
    Handover,
    Metadata,
    PeerStatus,
    ResyncRole,
    Settings,
    State,
    SubStatus,
)

TABLE = default_table()

__all__ = [
    "INITIAL",
    "TABLE",
    "AppPending",
    "Generation",
    "Handover",
    "LinkView",
    "Metadata",
    "Node",
    "NodeFacts",
    "NodeSnapshot",
    "PeerStatus",
    "Relation",
    "ResyncRole",
    "Settings",
    "State",
    "SubStatus",
    "default_table",
    "effects",
    "events",
    "relation",
]

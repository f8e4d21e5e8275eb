"""The formal core: a sans-IO, synchronous decision procedure.

Importing this package loads and validates the transition table in spec/, so
a malformed table fails at import, not when an edge fires.
"""

from failover.core import effects, events
from failover.core.compare import Relation, relation
from failover.core.node import LinkView, Node, NodeSnapshot
from failover.core.rules import default_table
from failover.core.state import (
    INITIAL,
    Generation,
    Metadata,
    PeerStatus,
    Settings,
    State,
    SubStatus,
)

TABLE = default_table()

__all__ = [
    "INITIAL",
    "TABLE",
    "Generation",
    "LinkView",
    "Metadata",
    "Node",
    "NodeSnapshot",
    "PeerStatus",
    "Relation",
    "Settings",
    "State",
    "SubStatus",
    "default_table",
    "effects",
    "events",
    "relation",
]

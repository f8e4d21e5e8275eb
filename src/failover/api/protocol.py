"""The seam between the daemon and its control API.

The daemon implements ``Controller``; the HTTP server only translates requests
into these calls and results into JSON. Neither side decides anything: a
command is turned into a core event and the core accepts or refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

STATUS_SCHEMA_VERSION = 2

COMMANDS: tuple[str, ...] = ("start", "stop", "prim", "primforce", "second", "swap", "fullsync")


@dataclass(frozen=True)
class CommandResult:
    """``accepted`` is False when the core refused the command; ``message`` says why.
    ``state`` is the node's state once the command was handled."""

    accepted: bool
    message: str
    state: str


class Controller(Protocol):
    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot. Never blocks: it reads what the daemon already holds.

        Its exact shape is the pydantic model ``failover.api.openapi.Status``
        (schema 2: the top-level keys, ``peer``, ``links``, ``frames``,
        ``degraded``, ``scripts``, ``replication``, ``in_sync``...); every object
        there forbids keys it does not list, and the tests validate a real
        daemon's answer against it, so a key added here goes there too.
        """
        ...

    def transitions(self, limit: int) -> list[dict[str, Any]]:
        """The most recent transition records, oldest first (at most ``limit``)."""
        ...

    async def command(self, name: str) -> CommandResult:
        """Hand ``name`` (one of COMMANDS) to the core and report its answer."""
        ...

    async def set_bandwidth(self, rate: int) -> CommandResult:
        """Set the resync bandwidth limit (bytes/s, 0 = none), also mid-resync."""
        ...

    async def verify(self) -> dict[str, Any]:
        """Compare both copies by digest: {"at", "in_sync", "directories": {name:
        {"in_sync", "missing_on_peer", "extra_on_peer", "differing"}}, "text"}.
        Raises ``UsageError`` when this node cannot verify (it does not replicate)."""
        ...

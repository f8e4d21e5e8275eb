"""Find and load transport plugins from the ``failover.transports`` entry-point group.

Loading is lazy and by exact name: only the entry point a link names is
imported, and nothing is ever picked by priority or by default. Every failure
(unknown name, import error, object not shaped like a transport) is one
``PluginNotFound`` whose message tells the operator what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from failover.errors import PluginNotFound
from failover.transport import HeartbeatTransport, ReplicationTransport

ENTRY_POINT_GROUP = "failover.transports"


@dataclass(frozen=True)
class PluginInfo:
    """One installed entry point, described without importing it."""

    name: str
    distribution: str
    version: str
    target: str  # "module:object"


def _entry_points() -> dict[str, EntryPoint]:
    # If two distributions declare the same name, the first one found wins, as
    # importlib.metadata orders them by sys.path: the same rule as imports.
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _describe(ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    distribution = dist.name if dist is not None else "?"
    version = dist.version if dist is not None else "?"
    return PluginInfo(ep.name, distribution, version, ep.value)


def installed_plugins() -> list[PluginInfo]:
    """Every transport entry point installed, sorted by name. Imports nothing."""
    return [_describe(ep) for _, ep in sorted(_entry_points().items())]


def installed_transports() -> dict[str, tuple[str, str]]:
    """Map each installed transport name to (distribution, version). Imports nothing."""
    return {info.name: (info.distribution, info.version) for info in installed_plugins()}


def _not_found_hint(name: str, installed: list[str]) -> str:
    listed = ", ".join(installed) if installed else "none"
    return (
        f"transport {name!r} is not installed (installed: {listed}); "
        f"install a package providing entry point {name!r} in group {ENTRY_POINT_GROUP}"
    )


def transport_kind(obj: object) -> str | None:
    """``"heartbeat"`` or ``"replication"``: what ``obj`` can carry, judged by its
    members (``open``, or ``listen`` and ``connect``); None if neither."""
    if callable(getattr(obj, "open", None)):
        return "heartbeat"
    if callable(getattr(obj, "listen", None)) and callable(getattr(obj, "connect", None)):
        return "replication"
    return None


def missing_members(obj: object, kind: str = "heartbeat") -> list[str]:
    """Names of the members of a ``kind`` transport ``obj`` lacks or has with the wrong kind."""
    missing: list[str] = []
    if not isinstance(getattr(obj, "name", None), str):
        missing.append("name (a str)")
    model = getattr(obj, "endpoint_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        missing.append("endpoint_model (a pydantic BaseModel subclass)")
    wanted = ("open",) if kind == "heartbeat" else ("listen", "connect")
    missing += [f"{name} (a method)" for name in wanted if not callable(getattr(obj, name, None))]
    return missing


class _LoadFailure(Exception):
    """Why an entry point did not give a usable transport (a phrase, no name)."""


def _instantiate(ep: EntryPoint, kind: str | None = "heartbeat") -> object:
    """The entry point's transport; with ``kind`` None, a transport of either kind."""
    try:
        target = ep.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise _LoadFailure(f"failed to load: {type(exc).__name__}: {exc}") from exc
    try:
        transport: object = target() if isinstance(target, type) else target
    except Exception as exc:
        raise _LoadFailure(f"could not be instantiated: {type(exc).__name__}: {exc}") from exc
    found = transport_kind(transport)
    if kind is not None and found is not None and found != kind:
        raise _LoadFailure(f"is a {found} transport, not a {kind} transport")
    missing = missing_members(transport, kind or found or "heartbeat")
    if missing:
        raise _LoadFailure(f"is not a transport: missing {', '.join(missing)}")
    return transport


def _load(name: str, kind: str) -> object:
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        raise PluginNotFound(_not_found_hint(name, sorted(eps)))
    try:
        return _instantiate(ep, kind)
    except _LoadFailure as exc:
        raise PluginNotFound(f"transport {name!r} ({ep.value}) {exc}") from exc.__cause__


def load_transport(name: str) -> HeartbeatTransport:
    """Import and instantiate the heartbeat transport registered under exactly ``name``.

    Raises ``PluginNotFound`` when no entry point has that name, when its
    module fails to import (the message carries the import error), when the
    object cannot be instantiated with no arguments, or when it lacks a
    member of ``HeartbeatTransport`` (the message names what is missing).
    """
    transport = _load(name, "heartbeat")
    assert isinstance(transport, HeartbeatTransport)
    return transport


def load_replication_transport(name: str) -> ReplicationTransport:
    """The same for a replication transport (``listen`` and ``connect``)."""
    transport = _load(name, "replication")
    assert isinstance(transport, ReplicationTransport)
    return transport


def plugin_problem(name: str) -> str | None:
    """``None`` if the transport ``name`` loads and is well formed, else why not.

    Imports the plugin (like ``load_transport``); for diagnostics such as
    ``failover plugins``.
    """
    return check_plugin(name)[1]


def check_plugin(name: str) -> tuple[str | None, str | None]:
    """(kind, problem) of the transport ``name``: its kind ("heartbeat" or
    "replication") when it loads, and None or why it does not load."""
    ep = _entry_points().get(name)
    if ep is None:
        return None, "not installed"
    try:
        transport = _instantiate(ep, None)
    except _LoadFailure as exc:
        return None, str(exc)
    return transport_kind(transport), None

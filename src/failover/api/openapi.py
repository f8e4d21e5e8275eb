"""The control API described as pydantic models, and its OpenAPI 3.1 document.

The models say what every answer holds (``Status`` is what
``Controller.status`` returns; the tests validate a real daemon's answer
against it, and every object forbids keys it does not list, so that the code
and the document cannot drift apart). ``openapi_document`` builds the
document served at ``/v1/openapi.json`` from the server's own route table
(``failover.api.server.ROUTES``): a route without an operation here is an
error, not a silent gap.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from failover import __version__
from failover.api.protocol import COMMANDS, STATUS_SCHEMA_VERSION
from failover.api.schema import (
    ADMIN_ROLE,
    COMMANDS_PREFIX,
    DEFAULT_TRANSITIONS_LIMIT,
    MAX_TRANSITIONS_LIMIT,
    READ_ROLE,
    required_role,
)
from failover.core.state import State, SubStatus
from failover.replication.channel_sender import SenderStatus
from failover.replication.resync import ResyncStatus


class _Closed(BaseModel):
    """An object with exactly the keys listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = float


class PeerView(_Closed):
    """The peer as this node last heard of it (``peer`` of status)."""

    node: str
    state: State
    substatus: SubStatus
    generation: str = Field(description="counter:origin, e.g. 4:alpha")
    alive: bool = Field(description="heard on some link within the dead timeout")
    last_seen_ago: Seconds | None = Field(description="seconds since a link last heard it")


class LinkView(_Closed):
    """One heartbeat link."""

    name: str
    transport: str
    up: bool
    last_seen_ago: Seconds | None
    rtt: Seconds | None = Field(
        description="the latest heartbeat round trip measured on the link (null: none yet)"
    )
    rtt_dropped: dict[str, int] = Field(
        description="round-trip echoes not used, by reason (docs/wire.md, Round trip)"
    )


class Frames(_Closed):
    """Heartbeat frames received, and those dropped by reason."""

    received: int
    dropped: dict[str, int]


class Degraded(_Closed):
    """The node cannot write its metadata: it serves on and decides nothing."""

    reason: str
    file: str
    error: str | None
    since_ago: Seconds
    attempts: int
    held_events: int


class ScriptRun(_Closed):
    """One run of an application script."""

    ok: bool
    returncode: int | None
    timed_out: bool
    error: str | None
    duration: Seconds
    ended_ago: Seconds
    tail: list[str] = Field(description="the last lines of its output")


class Verified(_Closed):
    """The verdict of the last verify since the last resync."""

    at: float = Field(description="epoch seconds")
    in_sync: bool
    differences: int


class Tracked(_Closed):
    """What the change tracker holds for the peer (an incremental resync's work)."""

    since: str | None
    files: int
    names: int
    meta: int


class Replication(_Closed):
    """The data plane's view (docs/replication.md)."""

    directories: dict[str, str] = Field(description="name: path")
    mode: Literal["read-write", "read-only"]
    replicating: bool
    channel_problem: str | None
    writes_fenced: bool
    writes_held: int
    ack: Literal["received", "written", "fsynced"]
    sender: SenderStatus | None
    sessions_received: int
    handshakes_refused: int
    verified: Verified | None
    resync_wanted: bool
    resyncs_received: int
    resync: ResyncStatus | None
    resync_failures: int
    bandwidth: int = Field(description="resync bandwidth limit, bytes/s, 0: none")
    tracked: Tracked | None


class Status(_Closed):
    """``GET /v1/status``: this node, its peer, its links and its data."""

    schema_version: Literal[2] = Field(alias="schema")
    node: str
    state: State
    substatus: SubStatus
    reason: str
    generation: str
    consistent: bool
    cluster: str
    peer: PeerView | None
    links: list[LinkView]
    frames: Frames
    uptime: Seconds
    degraded: Degraded | None
    scripts: dict[str, list[ScriptRun]] = Field(description="the last runs of each script")
    replication: Replication | None = Field(description="null without replicated directories")
    in_sync: bool
    in_sync_reason: str | None


assert STATUS_SCHEMA_VERSION == 2, "update Status.schema_version with the status schema"


class Transition(_Closed):
    """One transition record, as logged."""

    time: str = Field(description="ISO 8601, UTC, milliseconds")
    mono: float = Field(description="CLOCK_MONOTONIC seconds")
    node: str
    from_: State = Field(alias="from")
    event: str
    to: State
    substatus: SubStatus
    effects: list[str]
    reason: str
    generation: str
    forced: bool


class Transitions(_Closed):
    """``GET /v1/transitions``: the most recent records, oldest first."""

    transitions: list[Transition]


class CommandAnswer(_Closed):
    """A command's or a bandwidth change's answer: 200 accepted, 409 refused."""

    accepted: bool
    message: str = Field(description="why it was refused, or what was done")
    state: State = Field(description="the node's state once it was handled")


class DifferingEntry(_Closed):
    path: str
    fields: list[str]
    zones: list[int] | None
    xattrs: list[str]
    local: dict[str, Any]
    peer: dict[str, Any]


class DirectoryComparison(_Closed):
    in_sync: bool
    missing_on_peer: list[str]
    extra_on_peer: list[str]
    differing: list[DifferingEntry]


class VerifyReport(_Closed):
    """``POST /v1/replication/verify``: both copies compared by digest."""

    at: float
    in_sync: bool
    directories: dict[str, DirectoryComparison]
    text: str


class Error(_Closed):
    """Every error: one line; a 403 also names the role the request needs."""

    error: str
    required_role: Literal["admin"] | None = None


class ConsoleNodeView(_Closed):
    """One node's control listener as a browser reaches it."""

    name: str
    url: str = Field(description="http://address:port, https:// with control.tcp.tls")


class Nodes(_Closed):
    """``GET /v1/nodes``: where the console finds both nodes (docs/console.md)."""

    self_: str = Field(alias="self", description="the node that answers")
    nodes: list[ConsoleNodeView]


class OpenAPIDocument(BaseModel):
    """``GET /v1/openapi.json``: this document (OpenAPI 3.1)."""

    model_config = ConfigDict(extra="allow")

    openapi: str


class TransitionsQuery(_Closed):
    """The query of ``GET /v1/transitions``."""

    limit: int = Field(DEFAULT_TRANSITIONS_LIMIT, ge=0, le=MAX_TRANSITIONS_LIMIT)


class BandwidthQuery(_Closed):
    """The query of ``POST /v1/replication/bandwidth``."""

    rate: int = Field(ge=0, lt=10**15, description="bytes per second, 0: no limit")


class NoQuery(_Closed):
    """No query parameter (an unknown one gets 400)."""


class RouteLike(Protocol):
    """What the document needs of a route (``failover.api.server.Route``)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def operation(self) -> str: ...


@dataclass(frozen=True)
class Operation:
    """How one operation of the server is described: ``answers`` maps a status to
    the model of its JSON body, or to a media type (``text/plain``...) for an
    answer that is not JSON; ``errors`` adds statuses answered with ``Error``."""

    summary: str
    answers: dict[int, type[BaseModel] | str]
    query: type[BaseModel] = NoQuery
    errors: tuple[int, ...] = field(default=())
    anonymous: bool = False
    """Answered without a token (the console's page: it holds no secret)."""


OPERATIONS: dict[str, Operation] = {
    "status": Operation("this node's status", {200: Status}),
    "transitions": Operation(
        "the most recent transitions, oldest first", {200: Transitions}, TransitionsQuery, (400,)
    ),
    "openapi": Operation("this document", {200: OpenAPIDocument}),
    "metrics": Operation(
        "the Prometheus metrics (docs/metrics.md)", {200: "text/plain; version=0.0.4"}
    ),
    "command": Operation(
        "hand the command to the core", {200: CommandAnswer, 409: CommandAnswer}, errors=(503,)
    ),
    "bandwidth": Operation(
        "set the resync bandwidth limit now",
        {200: CommandAnswer, 409: CommandAnswer},
        BandwidthQuery,
        (400,),
    ),
    "verify": Operation("compare both copies by digest", {200: VerifyReport, 409: Error}),
    "nodes": Operation("both nodes' control URLs, for the console", {200: Nodes}, errors=(400,)),
    "events": Operation(
        "server-sent events: a `status` event (its data: a Status) on each change and "
        "at least every 5 s, a keep-alive comment otherwise; a client that does not "
        "read is dropped",
        {200: "text/event-stream"},
        errors=(400,),
    ),
    "console": Operation(
        "the console's page (control.tcp.console; off: 401 without a token, 404 with one; "
        "`/console` redirects here with 308)",
        {200: "text/html; charset=utf-8"},
        anonymous=True,
    ),
    "console_file": Operation(
        "one of the console's files (its scripts and style; 404 for any other name)",
        {200: "*/*"},
        anonymous=True,
    ),
}
"""Every operation the server's routes name (``Route.operation``)."""

_COMMON_ERRORS = (401, 404, 405, 408, 413, 431, 500, 503)
_ERROR_TEXT = {
    400: "a bad or unknown query parameter",
    401: "TCP: a missing or wrong bearer token",
    403: "TCP: the read-only token on an admin operation",
    404: "no such endpoint",
    405: "the wrong method for the path",
    408: "the request did not arrive in time",
    409: "refused",
    413: "the request body is too large",
    431: "the request head is too large",
    500: "the daemon failed to answer (see its log)",
    503: "too many connections, or the daemon did not handle the request in time",
}


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    operation: str


def _schemas() -> dict[str, Any]:
    """JSON Schema of every model the operations name, as ``components.schemas``
    (refs point there)."""
    models: dict[type[BaseModel], None] = {Error: None}
    for spec in OPERATIONS.values():
        models.update((m, None) for m in spec.answers.values() if not isinstance(m, str))
        models[spec.query] = None
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _parameters(query: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    props = schemas[query.__name__].get("properties", {})
    needed = set(schemas[query.__name__].get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in needed,
            "schema": {k: v for k, v in prop.items() if k != "title"},
        }
        for name, prop in props.items()
    ]


def _answer(description: str, model: type[BaseModel] | str) -> dict[str, Any]:
    if isinstance(model, str):  # a media type: a body that is not JSON
        return {"description": description, "content": {model: {"schema": {"type": "string"}}}}
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


ANONYMOUS = "anonymous"
"""The role of the operations answered without a token (``Operation.anonymous``)."""


def role_of(route: RouteLike) -> str:
    """The role ``route`` needs: ``anonymous``, ``read`` or ``admin``."""
    spec = OPERATIONS.get(route.operation)
    if spec is None:
        raise LookupError(f"route {route.method} {route.path}: no operation {route.operation!r}")
    return ANONYMOUS if spec.anonymous else required_role(route.method)


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", path)
    ]


def _operation(route: _Route, schemas: dict[str, Any]) -> dict[str, Any]:
    role = role_of(route)
    spec = OPERATIONS[route.operation]
    responses: dict[str, Any] = {}
    for status, model in spec.answers.items():
        text = "done" if status == 200 else _ERROR_TEXT[status]
        responses[str(status)] = _answer(text, model)
    common = [e for e in _COMMON_ERRORS if not (spec.anonymous and e == 401)]
    errors = sorted({*spec.errors, *common, *((403,) if role == ADMIN_ROLE else ())})
    for status in errors:
        responses.setdefault(str(status), _answer(_ERROR_TEXT[status], Error))
    summary = spec.summary
    if route.operation == "command":
        summary = f"{route.path.removeprefix(COMMANDS_PREFIX)}: {summary}"
    operation_id = route.operation
    if route.operation == "command":
        operation_id = f"command_{route.path.removeprefix(COMMANDS_PREFIX)}"
    query = _parameters(spec.query, schemas) if spec.query is not NoQuery else []
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": _ROLE_TEXT[role],
        "x-failover-role": role,
        "security": [] if role == ANONYMOUS else [{"bearer": [role]}],
        "parameters": [*_path_parameters(route.path), *query],
        "responses": responses,
    }


_ROLE_TEXT = {
    ANONYMOUS: "Needs no token (the page holds no secret; what it reads needs one).",
    READ_ROLE: "Needs the read role: the read-only or the admin token.",
    ADMIN_ROLE: "Needs the admin role: the admin token.",
}


def openapi_document(routes: Iterable[RouteLike]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (the server's ``ROUTES``). A fresh
    copy each call; raises ``LookupError`` for a route no operation describes."""
    return copy.deepcopy(_document(tuple(_Route(r.method, r.path, r.operation) for r in routes)))


@cache
def _document(routes: tuple[_Route, ...]) -> dict[str, Any]:
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "failover control API",
            "version": __version__,
            "description": "One node's control API (docs/api.md). Over TCP every request "
            "carries a bearer token: the admin token may do everything, the read-only token "
            "only GET (role `read`). The Unix socket takes no token and acts as admin. "
            "The console's page and its files (role `anonymous`) and CORS preflights "
            "(OPTIONS, any path, answered to the peer's origin only) need no token. "
            f"Commands: {', '.join(COMMANDS)}.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "roles: read (GET), admin (everything)",
                }
            },
        },
        "security": [{"bearer": []}],
    }

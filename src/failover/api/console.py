"""The operator's console: its static page, the pair's addresses, live status events, CORS.

The console is a page (HTML, CSS, plain JavaScript modules, shipped in the
``console/`` directory next to this module) that the daemon serves on its TCP
control listener under ``/console/`` when ``control.tcp.console`` is true. The
page holds no secret, so it loads without a token; everything it reads or
does goes through the token-protected API, with the token the operator typed.

The page reads both nodes directly (``/v1/nodes`` says where they are), so it
keeps working when the node that served it dies. That is a cross-origin read,
so the API answers CORS for the peer's origin only (never ``*``), preflight
included: the browser sends the preflight without the token.

``GET /v1/events`` streams server-sent events: one ``status`` event with the
full status snapshot whenever it changes (a state, a link, replication; ages
and counters alone do not count, but a snapshot is resent at least every
``refresh`` seconds so they stay fresh), and a keep-alive comment while
nothing changes. A stream holds at most one event in hand: the next one is
built only once the previous one was taken by the client's socket, and a
client that does not take one within the server's send timeout is dropped.

Invariants:
- a static file is served only if its name is in the list read from the
  package at start: nothing in a request becomes a file system path;
- CORS headers go only to an origin named in the cluster file (the peer's
  control URL), never ``*``;
- an anonymous request (the page's files, a preflight) never authenticates
  its connection: it stays pending, under the strangers' cap and deadline.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio

from failover.api.protocol import Controller
from failover.config.models import ClusterConfig
from failover.errors import UsageError

CONSOLE_PREFIX = "/console/"
CONSOLE_FILE_PATH = CONSOLE_PREFIX + "{file}"
"""The console's files as a route (``failover.api.server.ROUTES``): ``file`` names one
of ``load_static``'s."""
NODES_PATH = "/v1/nodes"
EVENTS_PATH = "/v1/events"
STATIC_DIR = Path(__file__).with_name("console")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(html|css|js|svg)")

# Fields of a status that change without anything happening: they alone never
# make a new event (a snapshot is resent every ``refresh`` seconds for them).
_VOLATILE = frozenset(
    {"uptime", "last_seen_ago", "since_ago", "last_heard_ago", "frames", "rtt", "rtt_dropped"}
)

Headers = tuple[tuple[str, str], ...]
Changes = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """The console's files by request path (``/console/app.js``); ``/console/`` is index.html.

    Only plain names with a known suffix are taken; nothing else is ever served.
    Raises ``UsageError`` when the directory or its index.html cannot be read."""
    files: dict[str, StaticFile] = {}
    try:
        for path in sorted(directory.iterdir()):
            if path.is_file() and _NAME.fullmatch(path.name):
                body = path.read_bytes()
                files[CONSOLE_PREFIX + path.name] = StaticFile(body, _TYPES[path.suffix])
    except OSError as exc:
        raise UsageError(
            f"the console's files cannot be read from {directory}: {exc.strerror or exc} "
            "(a broken installation? or set control.tcp.console: false)"
        ) from None
    index = files.get(CONSOLE_PREFIX + "index.html")
    if index is None:
        raise UsageError(f"the console's page {directory}/index.html is missing")
    files[CONSOLE_PREFIX] = index
    return files


@dataclass(frozen=True)
class ConsoleNode:
    name: str
    url: str  # the node's control URL as a browser reaches it, e.g. http://10.0.9.1:7480


@dataclass(frozen=True)
class ConsoleSettings:
    """What the control server needs for the console and its API additions.

    ``static``: serve the page (``control.tcp.console``); ``origins``: the
    origins allowed cross-origin (the peer's); ``changes``: awaits the
    daemon's next change (None: only the ``poll`` fallback).
    """

    node: str
    nodes: tuple[ConsoleNode, ...]
    static: bool
    origins: frozenset[str]
    changes: Changes | None = None
    keepalive: float = 5.0
    refresh: float = 5.0
    poll: float = 1.0
    files: Mapping[str, StaticFile] = field(default_factory=dict)


def node_url(address: str, port: int, *, tls: bool = False) -> str:
    """The origin a browser uses for a control listener (IPv6 addresses in brackets)."""
    host = address
    try:
        if ipaddress.ip_address(address).version == 6:
            host = f"[{address}]"
    except ValueError:
        pass  # a host name
    return f"{'https' if tls else 'http'}://{host}:{port}"


def console_settings(
    config: ClusterConfig, node: str, changes: Changes | None = None
) -> ConsoleSettings | None:
    """The console settings of ``node``'s TCP listener; None when it has none."""
    tcp = config.control_of(node).tcp
    if tcp is None:
        return None
    nodes: list[ConsoleNode] = []
    for name in config.nodes:
        other = config.control_of(name).tcp
        if other is not None:
            secure = other.tls is not None
            nodes.append(ConsoleNode(name, node_url(other.address, other.port, tls=secure)))
    origins = frozenset(each.url for each in nodes if each.name != node)
    static = bool(tcp.console)
    files = load_static() if static else {}
    return ConsoleSettings(node, tuple(nodes), static, origins, changes, files=files)


@dataclass(frozen=True)
class ConsoleReply:
    """A complete answer (static file, preflight, nodes) in the server's terms."""

    status: int
    body: bytes
    content_type: str
    headers: Headers = ()


@dataclass(frozen=True)
class EventStream:
    """An endless answer: ``chunks`` yields the bytes of the stream, one event at a time."""

    chunks: Callable[[], AsyncGenerator[bytes, None]]
    headers: Headers = ()


_CSP_BASE = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ConsoleRoutes:
    """The console's share of the control API (see the module docstring)."""

    def __init__(self, settings: ConsoleSettings, controller: Controller) -> None:
        self.settings = settings
        self._controller = controller
        connect = " ".join(["'self'", *sorted(settings.origins)])
        self._page_headers: Headers = (
            ("content-security-policy", f"{_CSP_BASE}; connect-src {connect}"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
        )

    def anonymous(self, method: str, target: str) -> bool:
        """True for the requests answered without a token: a CORS preflight, and
        the page's files while the console is on."""
        if method == "OPTIONS":
            return True
        path = urlsplit(target).path
        return self.settings.static and method in ("GET", "HEAD") and _is_console(path)

    def cors(self, origin: str | None) -> Headers:
        """The CORS headers for a request from ``origin``: none unless it is allowed."""
        if origin is None or origin not in self.settings.origins:
            return ()
        return (("access-control-allow-origin", origin), ("vary", "origin"))

    def reply(
        self, method: str, target: str, origin: str | None
    ) -> ConsoleReply | EventStream | None:
        """The answer to a console route, or None when the request is not one."""
        path = urlsplit(target).path
        if method == "OPTIONS":
            return self._preflight(origin)
        if _is_console(path):
            if not self.settings.static:
                return _text(404, "the console is off (control.tcp.console: false)")
            if method not in ("GET", "HEAD"):
                return _text(405, f"{path} accepts GET only", (("allow", "GET, HEAD"),))
            if path == "/console":
                return ConsoleReply(308, b"", "text/plain", (("location", CONSOLE_PREFIX),))
            found = self.settings.files.get(path)
            if found is None:
                return _text(404, f"no such console file: {path}")
            return ConsoleReply(200, found.body, found.content_type, self._page_headers)
        if path in (NODES_PATH, EVENTS_PATH):
            if method != "GET":
                return _text(405, f"{path} accepts GET only", (("allow", "GET"),))
            if urlsplit(target).query:
                return _json(400, {"error": f"{path} takes no query parameters"})
            if path == NODES_PATH:
                return _json(200, self._nodes())
            return EventStream(self._events, (("x-accel-buffering", "no"),))
        return None

    def _preflight(self, origin: str | None) -> ConsoleReply:
        allowed = self.cors(origin)
        if not allowed:
            return _text(403, "cross-origin requests are allowed from the peer's console only")
        # (the server adds ``allowed`` to every answer, this one included)
        return ConsoleReply(
            204,
            b"",
            "text/plain",
            (
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-headers", "authorization"),
                ("access-control-max-age", "600"),
            ),
        )

    def _nodes(self) -> dict[str, Any]:
        nodes = [{"name": each.name, "url": each.url} for each in self.settings.nodes]
        return {"self": self.settings.node, "nodes": nodes}

    async def _events(self) -> AsyncGenerator[bytes, None]:
        """The stream of ``status`` events: one now, then one per significant change,
        a fresh one every ``refresh`` s, a keep-alive comment every ``keepalive`` s."""
        settings = self.settings
        yield b"retry: 1000\n\n"
        shown: object = None
        sent_at = last_write = -1e9
        while True:
            status = self._controller.status()
            now = anyio.current_time()
            key = _significant(status)
            if key != shown or now - sent_at >= settings.refresh:
                data = json.dumps(status, allow_nan=False, separators=(",", ":"))
                yield b"event: status\ndata: " + data.encode("utf-8") + b"\n\n"
                shown, sent_at = key, now
                last_write = anyio.current_time()
            elif now - last_write >= settings.keepalive:
                yield b": keep-alive\n\n"
                last_write = anyio.current_time()
            wait = min(settings.poll, settings.keepalive, settings.refresh)
            with anyio.move_on_after(wait):
                if settings.changes is None:
                    await anyio.sleep_forever()
                else:
                    await settings.changes()


def _is_console(path: str) -> bool:
    return path == "/console" or path.startswith(CONSOLE_PREFIX)


def _significant(value: object) -> object:
    """``value`` without its volatile fields, for comparing snapshots."""
    if isinstance(value, dict):
        return {k: _significant(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_significant(v) for v in value]
    return value


def _json(status: int, payload: object, headers: Headers = ()) -> ConsoleReply:
    body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return ConsoleReply(status, body, "application/json", headers)


def _text(status: int, message: str, headers: Headers = ()) -> ConsoleReply:
    return _json(status, {"error": message}, headers)

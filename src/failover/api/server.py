"""The control API server: HTTP/1.1 and JSON over a Unix socket, optionally TCP.

The server decides nothing. A request becomes one ``Controller`` call and the
result becomes JSON (``ControlRoutes``); the HTTP framing is h11, sans-IO, fed
from anyio socket streams (``serve_control``). Every client is held to bounds
(time to send a request, header and body size, number of connections) so that
a slow or hostile client costs the daemon little and never blocks the others.

On TCP a connection is admitted in two steps. Until a request head carrying
the right token has arrived it is *pending*: pending connections have their
own small cap (the oldest is dropped to make room for a new one) and a short
deadline, and never count toward the cap of authenticated connections. So
idle or dripping strangers can only push each other out, never a token holder.
The token is checked as soon as the head is parsed, before any body is read.

There are two tokens on TCP: the admin token may do everything, the optional
read-only token only GET (``schema.required_role``); a read token on a POST
gets 403 from the head, like a wrong token gets 401. With TLS the handshake
runs while the connection is pending, under the same deadline and cap, so a
client that never finishes it holds no more than a stranger.

On TCP the server also carries the web console (``failover.api.console``):
its page files and CORS preflights are answered without a token, and leave
the connection pending; ``/v1/events`` is an endless answer sent one event at
a time, and a client too slow to take one is dropped.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import math
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import h11
import structlog
from anyio.streams.tls import TLSStream

from failover import __version__
from failover.api.console import (
    CONSOLE_FILE_PATH,
    CONSOLE_PREFIX,
    EVENTS_PATH,
    NODES_PATH,
    ConsoleReply,
    ConsoleRoutes,
    ConsoleSettings,
    EventStream,
)
from failover.api.protocol import COMMANDS, Controller
from failover.api.schema import (
    ADMIN_ROLE,
    BANDWIDTH_PATH,
    COMMANDS_PREFIX,
    DEFAULT_TRANSITIONS_LIMIT,
    MAX_TRANSITIONS_LIMIT,
    METRICS_PATH,
    OPENAPI_PATH,
    READ_ROLE,
    STATUS_PATH,
    TRANSITIONS_PATH,
    VERIFY_PATH,
    required_role,
)
from failover.errors import UsageError

log = structlog.get_logger("failover.api")

Metrics = Callable[[], tuple[bytes, str]]
"""The ``/metrics`` page: its body and content type (``failover.runtime.metrics``)."""

# Errors that a peer going away mid-conversation raises on anyio streams.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@dataclass(frozen=True)
class ControlLimits:
    """Bounds on what one client may cost the daemon.

    - ``request_timeout``: a whole request (line, headers, body) must arrive
      within this many seconds of the connection opening or of the previous
      response; otherwise the server answers 408 and closes (or closes quietly
      when nothing at all arrived: an idle keep-alive connection).
    - ``send_timeout``: a response must fit into the client's socket within
      this many seconds; otherwise the connection is dropped.
    - ``max_header_bytes``: request line plus headers; beyond it, 431 and close.
    - ``max_body_bytes``: no endpoint takes a body; a larger one gets 413 and close.
    - ``max_connections``: authenticated connections served at once (every Unix
      socket connection is authenticated by the file's permissions); the next
      ones get 503 and close.
    - ``auth_timeout``: on TCP, a request head with the right token must arrive
      within this many seconds of the connection opening; otherwise the server
      answers 408 (or closes quietly when nothing arrived) and closes.
    - ``max_unauthenticated``: TCP connections that have not yet authenticated,
      held at once; a new one pushes out the oldest.
    """

    request_timeout: float = 5.0
    send_timeout: float = 5.0
    max_header_bytes: int = 8192
    max_body_bytes: int = 4096
    max_connections: int = 64
    auth_timeout: float = 3.0
    max_unauthenticated: int = 32


DEFAULT_LIMITS = ControlLimits()


@dataclass(frozen=True)
class ControlEndpoints:
    """Where the server listens; given to ``task_status.started`` once bound.

    ``tcp`` holds the port actually bound (useful when port 0 was asked for).
    """

    unix_path: str | None
    tcp: tuple[str, int] | None


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, body already encoded (JSON unless said), extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False
    content_type: str = "application/json"


def json_reply(status: int, payload: object, **kwargs: Any) -> Reply:
    """A reply carrying ``payload`` as strict JSON (NaN and infinities refused)."""
    body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return Reply(status, body, **kwargs)


def error_reply(
    status: int, message: str, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> Reply:
    """The uniform error shape: ``{"error": message}``."""
    return json_reply(status, {"error": message}, headers=headers, close=close)


class _BadQuery(Exception):
    """The query string is malformed or names a parameter the endpoint does not take."""


@dataclass(frozen=True)
class Route:
    """One endpoint the server dispatches: ``operation`` names its handler
    (``ControlRoutes``) and its entry in the OpenAPI document (``failover.api.openapi``)."""

    method: str
    path: str
    operation: str


ROUTES: tuple[Route, ...] = (
    Route("GET", STATUS_PATH, "status"),
    Route("GET", TRANSITIONS_PATH, "transitions"),
    Route("GET", OPENAPI_PATH, "openapi"),
    Route("GET", METRICS_PATH, "metrics"),
    Route("GET", NODES_PATH, "nodes"),
    Route("GET", EVENTS_PATH, "events"),
    Route("GET", CONSOLE_PREFIX, "console"),
    Route("GET", CONSOLE_FILE_PATH, "console_file"),
    Route("POST", BANDWIDTH_PATH, "bandwidth"),
    Route("POST", VERIFY_PATH, "verify"),
    *(Route("POST", COMMANDS_PREFIX + name, "command") for name in COMMANDS),
)
"""Every endpoint, the one table the dispatch and the OpenAPI document are built from.

The console's rows (``/v1/nodes``, ``/v1/events``, ``/console/`` and its files) are
answered by ``ConsoleRoutes`` first, under its own rules (the page's files and
CORS preflights without a token, leaving the connection pending); they reach
``ControlRoutes`` only where the server has no console (a Unix socket alone): 404."""

_ROUTE_OF_PATH = {route.path: route for route in ROUTES}
assert len(_ROUTE_OF_PATH) == len(ROUTES), "one method per path: the dispatch is by path"

Action = Callable[[Mapping[str, str], Route], Awaitable[Reply]]


class ControlRoutes:
    """Maps a method and a request target to one ``Controller`` call and its reply.

    No HTTP framing or I/O here beyond awaiting the controller; an exception
    from the controller becomes a 500 with a generic message (the traceback
    goes to the daemon log, never to the client).
    """

    def __init__(self, controller: Controller, metrics: Metrics | None = None) -> None:
        self._controller = controller
        self._actions: dict[str, Action] = {
            "status": self._status,
            "transitions": self._transitions,
            "openapi": self._openapi,
            "metrics": self._metrics_page,
            "bandwidth": self._bandwidth,
            "verify": self._verify,
            "command": self._command,
            "nodes": self._no_console,
            "events": self._no_console,
            "console": self._no_console,
            "console_file": self._no_console,
        }
        self._metrics = metrics

    async def reply(self, method: str, target: str) -> Reply:
        split = urlsplit(target)
        path = split.path
        route = _ROUTE_OF_PATH.get(path)
        if route is None:
            if path.startswith(COMMANDS_PREFIX):
                name = path.removeprefix(COMMANDS_PREFIX)
                known = ", ".join(COMMANDS)
                return error_reply(404, f"unknown command {name!r} (known: {known})")
            return error_reply(404, f"no such endpoint: {path}")
        allowed, action = route.method, self._actions[route.operation]
        if method != allowed:
            return error_reply(405, f"{path} accepts {allowed} only", headers=(("allow", allowed),))
        try:
            query = _parse_query(split.query)
            return await action(query, route)
        except _BadQuery as exc:
            return error_reply(400, str(exc))
        except TimeoutError:
            # The controller bounds its own waits (a command stuck behind a dead
            # disk): the daemon is alive but could not answer in time.
            return error_reply(503, "the daemon did not handle the request in time")
        except Exception:
            log.exception("control request failed", method=method, path=path)
            return error_reply(500, "internal error (see the daemon log)")

    async def _status(self, query: Mapping[str, str], _: Route) -> Reply:
        _allow_params(query)
        return json_reply(200, self._controller.status())

    async def _metrics_page(self, query: Mapping[str, str], _: Route) -> Reply:
        _allow_params(query)
        if self._metrics is None:
            return error_reply(404, f"no such endpoint: {METRICS_PATH} (no metrics here)")
        body, content_type = self._metrics()
        return Reply(200, body, content_type=content_type)

    async def _no_console(self, _: Mapping[str, str], route: Route) -> Reply:
        return error_reply(
            404, f"no such endpoint: {route.path} (the console's routes need control.tcp)"
        )

    async def _transitions(self, query: Mapping[str, str], _: Route) -> Reply:
        _allow_params(query, "limit")
        limit = _parse_limit(query.get("limit"))
        records = self._controller.transitions(limit)
        # The controller promises at most ``limit``; the API promises it to clients.
        return json_reply(200, {"transitions": records[max(len(records) - limit, 0) :]})

    async def _openapi(self, query: Mapping[str, str], _: Route) -> Reply:
        from failover.api.openapi import openapi_document  # noqa: PLC0415 - built on first ask

        _allow_params(query)
        return json_reply(200, openapi_document(ROUTES))

    async def _bandwidth(self, query: Mapping[str, str], _: Route) -> Reply:
        _allow_params(query, "rate")
        raw = query.get("rate")
        rate = _whole_number(raw, MAX_RATE) if raw is not None else None
        if rate is None:
            raise _BadQuery("rate: bytes per second, a whole number >= 0 (0: no limit)")
        result = await self._controller.set_bandwidth(rate)
        payload = {"accepted": result.accepted, "message": result.message, "state": result.state}
        return json_reply(200 if result.accepted else 409, payload)

    async def _verify(self, query: Mapping[str, str], _: Route) -> Reply:
        _allow_params(query)
        try:
            report = await self._controller.verify()
        except UsageError as exc:
            return error_reply(409, str(exc))
        return json_reply(200, report)

    async def _command(self, query: Mapping[str, str], route: Route) -> Reply:
        _allow_params(query)
        result = await self._controller.command(route.path.removeprefix(COMMANDS_PREFIX))
        payload = {"accepted": result.accepted, "message": result.message, "state": result.state}
        return json_reply(200 if result.accepted else 409, payload)


def _parse_query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=8)
    except ValueError:
        raise _BadQuery("malformed query string") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _BadQuery(f"query parameter {key!r} given twice")
        params[key] = value
    return params


def _allow_params(query: Mapping[str, str], *allowed: str) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise _BadQuery(f"unknown query parameter {unknown[0]!r}")


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TRANSITIONS_LIMIT
    limit = _whole_number(raw, MAX_TRANSITIONS_LIMIT)
    if limit is None:
        raise _BadQuery(f"limit must be an integer from 0 to {MAX_TRANSITIONS_LIMIT}")
    return limit


MAX_RATE = 10**15 - 1
"""The largest bandwidth a client may ask for (bytes/s): fifteen digits."""


def _whole_number(raw: str, maximum: int) -> int | None:
    """``raw`` as an integer from 0 to ``maximum`` written in ASCII digits, else None.

    ``str.isdigit`` also accepts '²' (which ``int`` refuses) and '١٢' (which
    ``int`` reads as 12): a query parameter is plain ASCII or it is refused.
    """
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(maximum)):
        return None
    value = int(raw)
    return value if value <= maximum else None


class _BodyTooLarge(Exception):
    pass


class _Refused(Exception):
    """A request head that is answered (401, 503) without reading further."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True)
class _Tokens:
    """What a TCP listener accepts: the admin token, and the read-only one if any."""

    admin: bytes
    read: bytes | None


@dataclass(frozen=True)
class _Listener:
    """A listening socket's rules: ``tokens`` None for the Unix socket (file
    permissions admit, as admin); ``tls`` the context its streams are wrapped in."""

    tokens: _Tokens | None
    tls: ssl.SSLContext | None = None


@dataclass
class _Admission:
    """One connection's place in the server: pending until it authenticates.

    ``tokens`` is what its listener requires (None: the Unix socket, nothing);
    ``scope`` ends the connection (when it is pushed out while pending);
    ``deadline`` is when a pending connection must have authenticated, and
    ``head_scope`` the cancel scope that enforces it on the read in progress.
    """

    tokens: _Tokens | None
    scope: anyio.CancelScope
    deadline: float
    authenticated: bool = False
    head_scope: anyio.CancelScope | None = None


class _ConnectionServer:
    """Runs the HTTP/1.1 conversation on each accepted stream, within ``ControlLimits``."""

    def __init__(
        self, routes: ControlRoutes, limits: ControlLimits, console: ConsoleRoutes | None = None
    ) -> None:
        self._routes = routes
        self._limits = limits
        self._console = console
        self._served: set[int] = set()
        # Pending (unauthenticated) connections, oldest first.
        self._pending: dict[int, _Admission] = {}

    async def accept_loop(
        self, sock: socket.socket, listener: _Listener, task_group: anyio.abc.TaskGroup
    ) -> None:
        """Accept connections on listening ``sock`` until cancelled, each served in its own task."""
        while True:
            await anyio.wait_readable(sock)
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another wake-up took it, or the client gave up
            except OSError as exc:
                # Out of descriptors or memory: outside our control and may pass,
                # so back off instead of spinning or dying.
                log.warning("control accept failed", error=str(exc))
                await anyio.sleep(0.1)
                continue
            task_group.start_soon(self.serve, conn, listener)

    async def serve(self, conn: socket.socket, listener: _Listener) -> None:
        """Serve one accepted connection to its end. Never raises: its failure is its own."""
        stream: anyio.abc.ByteStream
        try:
            # A transport-backed stream: anyio's raw UNIX streams report a spurious
            # InvalidStateError when a read is cancelled as data arrives.
            stream = await anyio.abc.SocketStream.from_socket(conn)
        except (OSError, ValueError):
            conn.close()  # the client left before we could wrap its socket
            return
        deadline = anyio.current_time() + self._limits.auth_timeout
        admission = _Admission(listener.tokens, anyio.CancelScope(), deadline)
        try:
            with admission.scope:
                try:
                    if listener.tokens is None and not self._authenticate(admission):
                        await self._send(h11.Connection(h11.SERVER), stream, _BUSY, head=False)
                        await self._linger(stream)
                        return
                    self._hold_pending(admission)
                    if listener.tls is not None:
                        wrapped = await _handshake(stream, listener.tls, admission.deadline)
                        if wrapped is None:
                            return
                        stream = wrapped
                    await self._converse(stream, admission)
                finally:
                    self._served.discard(id(admission))
                    self._pending.pop(id(admission), None)
        except Exception:
            log.exception("control connection failed")
        finally:
            await anyio.aclose_forcefully(stream)

    def _hold_pending(self, admission: _Admission) -> None:
        """Count a connection that has not authenticated yet, pushing out the oldest."""
        if admission.authenticated:
            return
        while self._pending and len(self._pending) >= self._limits.max_unauthenticated:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest).scope.cancel()
        self._pending[id(admission)] = admission

    def _authenticate(self, admission: _Admission) -> bool:
        """Move a connection from pending to served; False when the served are at their cap."""
        if admission.authenticated:
            return True
        self._pending.pop(id(admission), None)
        if len(self._served) >= self._limits.max_connections:
            return False
        admission.authenticated = True
        self._served.add(id(admission))
        if admission.head_scope is not None:
            admission.head_scope.deadline = math.inf
        return True

    def _admit_head(self, request: h11.Request, admission: _Admission) -> None:
        """Check a request head's token (each request carries it) and count the
        connection as served, then check that the token's role may use the
        request's method; raises ``_Refused`` with the answer otherwise. A
        console page file or a CORS preflight is answered without a token and
        leaves the connection as it was (pending until a token arrives)."""
        console = self._console
        if console is not None and console.anonymous(_method(request), _target(request)):
            return
        role = ADMIN_ROLE if admission.tokens is None else _role_of(request, admission.tokens)
        if role is None:
            cors = () if console is None else console.cors(_origin(request))
            raise _Refused(_UNAUTHORIZED if not cors else _with_headers(_UNAUTHORIZED, cors))
        if not self._authenticate(admission):
            raise _Refused(_BUSY)
        method = request.method.decode("ascii")
        if required_role(method) == ADMIN_ROLE and role != ADMIN_ROLE:
            path = urlsplit(request.target.decode("ascii")).path
            raise _Refused(_forbidden(method, path))

    async def _converse(self, stream: anyio.abc.ByteStream, admission: _Admission) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
        while True:
            request = await self._next_request(conn, stream, admission)
            if request is None:
                return
            if isinstance(request, Reply):
                await self._send(conn, stream, request, head=False)
                await self._linger(stream)
                return
            reply = await self._reply(request)
            if isinstance(reply, EventStream):
                await self._stream(conn, stream, reply)
                return
            sent = await self._send(conn, stream, reply, head=request.method == b"HEAD")
            if not sent or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _reply(self, request: h11.Request) -> Reply | EventStream:
        """The answer to an admitted request: a console route's, else the API's;
        with the CORS headers its origin is allowed."""
        method, target = _method(request), _target(request)
        console = self._console
        if console is None:
            return await self._routes.reply(method, target)
        cors = console.cors(_origin(request))
        special = console.reply(method, target, _origin(request))
        if isinstance(special, EventStream):
            return EventStream(special.chunks, (*special.headers, *cors))
        if isinstance(special, ConsoleReply):
            return Reply(
                special.status,
                special.body,
                (*special.headers, *cors),
                content_type=special.content_type,
            )
        return _with_headers(await self._routes.reply(method, target), cors)

    async def _stream(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, reply: EventStream
    ) -> None:
        """Send an endless answer chunk by chunk until the client leaves or is too
        slow: each chunk must fit into its socket within the send timeout, and the
        next one is made only then, so a client costs one chunk at most."""
        headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-store"),
            ("server", f"failover/{__version__}"),
            *reply.headers,
        ]
        try:
            head = conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        except h11.LocalProtocolError:
            return
        pending = head or b""
        # A small kernel buffer too: what a client that does not read costs stays small.
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _STREAM_SNDBUF)
        chunks = reply.chunks()
        try:
            async for chunk in chunks:
                data = conn.send(h11.Data(data=chunk))
                with anyio.move_on_after(self._limits.send_timeout):
                    try:
                        await stream.send(pending + (data or b""))
                    except _GONE:
                        return
                    pending = b""
                    continue
                log.info("event stream dropped: the client does not read it")
                return
        finally:
            await chunks.aclose()

    async def _next_request(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, admission: _Admission
    ) -> h11.Request | Reply | None:
        """The next complete, authenticated request, an error reply to send before
        closing, or None when the client closed or stayed idle past its time:
        the request timeout, and until it authenticates, ``auth_timeout``."""
        timeout = self._limits.request_timeout
        deadline = math.inf if admission.authenticated else admission.deadline
        admission.head_scope = anyio.CancelScope(deadline=deadline)
        with anyio.move_on_after(timeout), admission.head_scope:
            try:
                return await self._read_request(conn, stream, admission)
            except _Refused as exc:
                return exc.reply
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431:
                    message = f"request headers exceed {self._limits.max_header_bytes} bytes"
                else:
                    message = f"malformed HTTP request: {exc}"
                return error_reply(status, message, close=True)
            except _BodyTooLarge:
                limit = self._limits.max_body_bytes
                return error_reply(413, f"request body exceeds {limit} bytes", close=True)
        if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
            return None
        if not admission.authenticated:
            timeout = min(timeout, self._limits.auth_timeout)
        return error_reply(408, f"request not received within {timeout:g} s", close=True)

    async def _read_request(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, admission: _Admission
    ) -> h11.Request | None:
        request: h11.Request | None = None
        body_size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except _GONE:
                    data = b""  # h11 turns this into ConnectionClosed or a protocol error
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                # h11 bounds only an incomplete head: one read can bring a whole
                # oversized head at once, so measure the parsed one too.
                if _head_size(event) > self._limits.max_header_bytes:
                    raise h11.RemoteProtocolError("head too large", error_status_hint=431)
                # Before any body is read or invited (100-continue).
                self._admit_head(event, admission)
                if _declared_length(event) > self._limits.max_body_bytes:
                    raise _BodyTooLarge
                if conn.they_are_waiting_for_100_continue:
                    continue_line = conn.send(
                        h11.InformationalResponse(status_code=100, headers=[])
                    )
                    await stream.send(continue_line or b"")
            elif isinstance(event, h11.Data):
                body_size += len(event.data)
                if body_size > self._limits.max_body_bytes:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                return request
            else:  # ConnectionClosed (PAUSED cannot happen: we answer before reading on)
                return None

    async def _send(
        self, conn: h11.Connection, stream: anyio.abc.ByteStream, reply: Reply, *, head: bool
    ) -> bool:
        """Send ``reply``; False when the client is gone or too slow to take it."""
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-store"),
            ("server", f"failover/{__version__}"),
            *reply.headers,
        ]
        if reply.close:
            headers.append(("connection", "close"))
        reason = HTTPStatus(reply.status).phrase.encode("ascii")
        response = h11.Response(status_code=reply.status, headers=headers, reason=reason)
        try:
            parts = [conn.send(response)]
            if not head:
                parts.append(conn.send(h11.Data(data=reply.body)))
            parts.append(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return False  # the conversation is already past the point of answering
        with anyio.move_on_after(self._limits.send_timeout):
            try:
                await stream.send(b"".join(part for part in parts if part))
            except _GONE:
                return False
            return True
        return False

    async def _linger(self, stream: anyio.abc.ByteStream) -> None:
        """Before closing after an error, read and drop what the client still
        sends for a moment: closing a TCP socket with unread input resets it,
        and the reset can destroy the error reply before the client reads it."""
        with anyio.move_on_after(min(1.0, self._limits.request_timeout)):
            with contextlib.suppress(*_GONE):
                # a TLS stream cannot half-close (NotImplementedError): drain all the same
                with contextlib.suppress(NotImplementedError):
                    await stream.send_eof()
                drained = 0
                while drained < 65536:
                    drained += len(await stream.receive(65536))


_STREAM_SNDBUF = 65536
"""Bytes of kernel send buffer an event stream may hold (the kernel doubles it)."""

_BUSY = error_reply(503, "too many control connections", close=True)
_UNAUTHORIZED = error_reply(
    401,
    "missing or wrong bearer token",
    headers=(("www-authenticate", 'Bearer realm="failover"'),),
    close=True,
)


def _method(request: h11.Request) -> str:
    return request.method.decode("ascii")


def _target(request: h11.Request) -> str:
    return request.target.decode("ascii")


def _origin(request: h11.Request) -> str | None:
    for name, value in request.headers:
        if name == b"origin":
            return value.decode("latin-1")
    return None


def _with_headers(reply: Reply, headers: tuple[tuple[str, str], ...]) -> Reply:
    if not headers:
        return reply
    return Reply(
        reply.status, reply.body, (*reply.headers, *headers), reply.close, reply.content_type
    )


def _head_size(request: h11.Request) -> int:
    line = len(request.method) + len(request.target) + 11
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _declared_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return 0


def _forbidden(method: str, path: str) -> Reply:
    message = (
        f"{method} {path} needs the {ADMIN_ROLE} role; this token has the {READ_ROLE} role "
        "(the admin token is control.tcp.token_file)"
    )
    return json_reply(403, {"error": message, "required_role": ADMIN_ROLE}, close=True)


def _role_of(request: h11.Request, tokens: _Tokens) -> str | None:
    """The role of the token in ``Authorization: Bearer <token>`` (scheme in any
    case): ``admin``, ``read``, or None for a missing or wrong one. Only the
    header counts (never the query string); the first such header is the one read."""
    for name, value in request.headers:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            presented = credentials.strip()
            # Both compared in constant time whatever the scheme, so timing reveals nothing.
            admin = hmac.compare_digest(presented, tokens.admin)
            read = hmac.compare_digest(presented, tokens.read or tokens.admin)
            if scheme.lower() != b"bearer":
                return None
            if admin:
                return ADMIN_ROLE
            return READ_ROLE if read and tokens.read is not None else None
    return None


async def _handshake(
    stream: anyio.abc.ByteStream, context: ssl.SSLContext, deadline: float
) -> TLSStream | None:
    """``stream`` wrapped in TLS, or None when the handshake failed or did not end
    by ``deadline`` (the connection's auth deadline): plain HTTP, garbage, a client
    that distrusts our certificate, or one that stays silent. Logged without a
    traceback, at debug level: strangers must not be able to fill the log."""
    with anyio.CancelScope(deadline=deadline):
        try:
            return await TLSStream.wrap(
                stream, server_side=True, ssl_context=context, standard_compatible=False
            )
        except (ssl.SSLError, *_GONE) as exc:
            log.debug("control TLS handshake failed", error=str(exc) or type(exc).__name__)
            return None
    log.debug("control TLS handshake not done by the auth deadline")
    return None


async def serve_control(
    controller: Controller,
    *,
    unix_path: str | None = None,
    tcp: tuple[str, int] | None = None,
    token: str | None = None,
    read_token: str | None = None,
    tls: ssl.SSLContext | None = None,
    limits: ControlLimits = DEFAULT_LIMITS,
    console: ConsoleSettings | None = None,
    metrics: Metrics | None = None,
    task_status: anyio.abc.TaskStatus[ControlEndpoints] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API for ``controller`` until cancelled.

    Listens on ``unix_path`` (its parent directory is created; the socket gets
    mode 0660; a socket file left by a dead daemon is replaced, one a live
    process listens on is refused) and/or on ``tcp`` = (host, port), where
    every request must carry ``Authorization: Bearer <token>`` (the admin
    token) or, for GET only, ``read_token``; with ``tls`` (a server context,
    ``failover.api.control_tls``) the TCP listener speaks only TLS. The Unix
    socket relies on file permissions, takes no token and acts as admin.
    With ``metrics``, ``GET /metrics`` answers its page (on either listener, as any GET).

    ``task_status.started(ControlEndpoints)`` is called once every listener is
    bound: clients may connect from then on. On cancellation the listeners
    close, open connections are dropped and the socket file is removed.

    ``console``: the console's page, ``/v1/nodes``, ``/v1/events`` and CORS
    for the peer's origin (``failover.api.console``); None: none of them.

    Raises ``UsageError`` before listening when there is nothing to listen on,
    when TCP is asked for without a token, when the read token is the admin
    token, or when an address cannot be bound.
    """
    if unix_path is None and tcp is None:
        raise UsageError("the control API needs a unix socket path or a TCP address")
    if tcp is not None and not token:
        raise UsageError(
            "the control API over TCP needs a bearer token (control.tcp.token_file); "
            "refusing to listen without one"
        )
    if tls is not None and tcp is None:
        raise UsageError("TLS is for the control API over TCP (the Unix socket takes none)")
    if read_token is not None and hmac.compare_digest(
        read_token.encode("utf-8"), (token or "").encode("utf-8")
    ):
        raise UsageError("the control API's read-only token must differ from its admin token")
    routes = None if console is None else ConsoleRoutes(console, controller)
    server = _ConnectionServer(ControlRoutes(controller, metrics), limits, routes)
    listening: list[tuple[socket.socket, _Listener]] = []
    socket_file: tuple[Path, int] | None = None
    try:
        if unix_path is not None:
            path = Path(unix_path)
            sock = await anyio.to_thread.run_sync(_listen_unix, path)
            listening.append((sock, _Listener(None)))
            socket_file = (path, path.stat().st_ino)
        bound_tcp: tuple[str, int] | None = None
        if tcp is not None:
            assert token is not None
            tcp_socks = await anyio.to_thread.run_sync(_listen_tcp, *tcp)
            tokens = _Tokens(
                token.encode("utf-8"), None if read_token is None else read_token.encode("utf-8")
            )
            listening.extend((each, _Listener(tokens, tls)) for each in tcp_socks)
            bound_tcp = (tcp[0], tcp_socks[0].getsockname()[1])
        async with anyio.create_task_group() as task_group:
            for sock, listener in listening:
                task_group.start_soon(server.accept_loop, sock, listener, task_group)
            task_status.started(ControlEndpoints(unix_path, bound_tcp))
    finally:
        for sock, _ in listening:
            sock.close()
        if socket_file is not None:
            _remove_socket_file(*socket_file)


def _listen_unix(path: Path) -> socket.socket:
    """A non-blocking socket listening on ``path`` (mode 0660, parent created).

    A socket file nobody listens on (left by a dead daemon) is replaced; a
    live one, or any other kind of file, is refused with ``UsageError``.
    """
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if _stale_socket(path):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            os.chmod(path, 0o660)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise UsageError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def _stale_socket(path: Path) -> bool:
    """True if ``path`` is a socket nobody listens on; False if there is no file.

    Raises ``UsageError`` if it is not a socket or a process listens on it.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return True
        raise
    finally:
        probe.close()
    raise UsageError(
        f"another process already listens on {path} (is a failover daemon running for this node?)"
    )


def _remove_socket_file(path: Path, inode: int) -> None:
    with contextlib.suppress(OSError):
        # A newer daemon may have replaced the file since: leave its socket alone.
        if path.stat().st_ino == inode:
            path.unlink()


def _listen_tcp(host: str, port: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address ``host`` resolves to.

    With port 0 every address gets the port the first one was given.
    """
    socks: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, resolved in dict.fromkeys(infos):
            address = resolved
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return socks

"""The merged parts as one product: the route table (hence the OpenAPI document)
against what the server really answers with the console and metrics on, the two
roles on every route of every part, and the console over TLS.

Invariants:
- every path the server answers is a row of ``ROUTES`` (so of the document), and
  every row is answered (no 404 or 405), each with the role the document gives:
  ``anonymous`` rows without a token, ``read`` rows with the read token, ``admin``
  rows with the admin token only (the read token gets 403, from the head);
- with TLS a client that does not read its events is dropped all the same.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trustme
from console_support import (
    TOKEN,
    Changes,
    Controller,
    FakeController,
    read_answer,
    request,
    serving_api,
    settings,
    until_the_slot_is_freed,
)
from h11 import CLIENT, Connection, EndOfMessage, Request

from failover.api.console import CONSOLE_PREFIX
from failover.api.control_tls import client_context, server_context
from failover.api.openapi import ANONYMOUS, openapi_document, role_of
from failover.api.schema import ADMIN_ROLE, READ_ROLE
from failover.api.server import ROUTES, ControlLimits, serve_control

pytestmark = pytest.mark.anyio

READ = "read-only-token-for-the-glue-tests"
WAIT = 10.0  # an upper bound on every wait, never an expected duration
METRICS = (b"# HELP up x\n", "text/plain; version=0.0.4; charset=utf-8")


def _targets(path: str) -> list[str]:
    """The concrete request targets of a route (a template: each console file)."""
    if "{" not in path:
        return [path]
    files = settings().files
    pattern = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)))
    found = [name for name in files if pattern.fullmatch(name)]
    assert found, f"no console file for {path}"
    return found


@asynccontextmanager
async def _asked(
    address: tuple[str, int],
    method: str,
    target: str,
    bearer: str | None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[anyio.abc.ByteStream, Connection]]:
    """A fresh connection (TLS with ``tls``) that has sent one request; all within WAIT."""
    headers = [("host", "alpha"), ("content-length", "0")]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}"))
    conn = Connection(CLIENT)
    data = (conn.send(Request(method=method, target=target, headers=headers)) or b"") + (
        conn.send(EndOfMessage()) or b""
    )
    with anyio.fail_after(WAIT):
        stream = await anyio.connect_tcp(*address, ssl_context=tls, tls_standard_compatible=False)
        async with stream:
            await stream.send(data)
            yield stream, conn


async def _status_line(
    address: tuple[str, int],
    method: str,
    target: str,
    bearer: str | None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """The status code of one request on a fresh connection (the head only: an event
    stream never ends)."""
    async with _asked(address, method, target, bearer, tls) as (stream, _):
        head = b""
        while b"\r\n" not in head:
            head += await stream.receive()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    assert match, head
    return int(match.group(1))


async def _serve_all(task_group: anyio.abc.TaskGroup, **options: object) -> tuple[str, int]:
    ends = await task_group.start(
        lambda task_status: serve_control(
            FakeController(),
            tcp=("127.0.0.1", 0),
            token=TOKEN,
            read_token=READ,
            console=settings(changes=Changes()),
            metrics=lambda: METRICS,
            task_status=task_status,
            **options,
        )
    )
    assert ends.tcp is not None
    return ends.tcp  # type: ignore[no-any-return]


async def _once(method: str, target: str, bearer: str) -> int:
    """The status of one request to a server with every part on."""
    async with anyio.create_task_group() as tg:
        address = await _serve_all(tg)
        status = await _status_line(address, method, target, bearer)
        tg.cancel_scope.cancel()
    return status


def test_the_document_lists_the_consoles_routes_with_their_roles() -> None:
    paths = openapi_document(ROUTES)["paths"]
    assert paths["/v1/nodes"]["get"]["x-failover-role"] == READ_ROLE
    assert "text/event-stream" in paths["/v1/events"]["get"]["responses"]["200"]["content"]
    assert paths["/console/"]["get"]["security"] == []
    assert paths["/console/{file}"]["get"]["x-failover-role"] == ANONYMOUS
    assert paths["/metrics"]["get"]["x-failover-role"] == READ_ROLE


async def test_every_route_is_answered_with_the_role_the_document_gives() -> None:
    async with anyio.create_task_group() as tg:
        address = await _serve_all(tg)
        for route in ROUTES:
            role = role_of(route)
            for target in _targets(route.path):
                asked = f"{route.method} {target}"
                admin = await _status_line(address, route.method, target, TOKEN)
                assert admin not in (404, 405), f"{asked} is in the table but not answered"
                read = await _status_line(address, route.method, target, READ)
                anonymous = await _status_line(address, route.method, target, None)
                if role == ANONYMOUS:
                    assert (read, anonymous) == (admin, admin), asked
                elif role == READ_ROLE:
                    assert (read, anonymous) == (admin, 401), asked
                else:
                    assert role == ADMIN_ROLE
                    assert (read, anonymous) == (403, 401), asked
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "target", ["/v1/nodez", "/v1/event", "/console/nope.js", "/console/../schema.py", "/v2/status"]
)
async def test_what_is_not_in_the_table_is_not_answered(target: str) -> None:
    assert await _once("GET", target, TOKEN) == 404


@pytest.mark.parametrize("target", ["/v1/nodes", "/v1/events", "/console/"])
async def test_without_a_console_its_rows_answer_404_saying_why(target: str) -> None:
    """A server with no console (a Unix socket alone) reaches the console's rows in
    ``ControlRoutes``: a 404 that names what they need, never a 500 or a stream."""
    directory = Path(tempfile.mkdtemp(prefix="fo-glue-", dir="/tmp"))
    try:
        async with serving_api(FakeController(), unix_path=str(directory / "s")) as ends:
            answer = await request(ends, "GET", target)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert answer.status == 404
    assert "need control.tcp" in answer.json()["error"]


def test_every_console_file_is_covered_by_a_route() -> None:
    rows = {route.path for route in ROUTES}
    for name in settings().files:
        covered = name in rows or any(
            "{" in path and name.startswith(CONSOLE_PREFIX) and name != CONSOLE_PREFIX
            for path in rows
        )
        assert covered, name


@pytest.mark.parametrize(
    "path", ["/metrics", "/v1/events", "/v1/nodes", "/v1/status", "/v1/openapi.json"]
)
async def test_the_read_token_may_read_every_part(path: str) -> None:
    assert await _once("GET", path, READ) == 200


@pytest.mark.parametrize(
    "path", [route.path for route in ROUTES if route.method == "POST"], ids=lambda p: p
)
async def test_the_read_token_gets_403_on_every_post(path: str) -> None:
    # the console's buttons POST these very paths (app.js ACTIONS)
    assert await _once("POST", path, READ) == 403


# --- TLS ---------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(ca, cert, key) files for 127.0.0.1."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    files = tuple(tmp_path / f"{name}.pem" for name in ("ca", "cert", "key"))
    ca.cert_pem.write_to_path(str(files[0]))
    leaf.cert_chain_pems[0].write_to_path(str(files[1]))
    leaf.private_key_pem.write_to_path(str(files[2]))
    return files  # type: ignore[return-value]


async def test_over_tls_a_client_that_does_not_read_its_events_is_dropped(
    pki: tuple[Path, Path, Path],
) -> None:
    """As on plain TCP (test_console_api): the non-reader holds the one connection slot
    until the server drops it for not taking an event within the send timeout."""
    ca, cert, key = pki
    controller, changes = Controller(), Changes()
    limits = ControlLimits(max_connections=1, send_timeout=0.5)
    context = client_context(ca)
    async with anyio.create_task_group() as tg:
        ends = await tg.start(
            lambda task_status: serve_control(
                controller,
                tcp=("127.0.0.1", 0),
                token=TOKEN,
                tls=server_context(cert, key),
                limits=limits,
                console=settings(changes=changes, poll=0.01),
                task_status=task_status,
            )
        )
        address = ends.tcp
        plain = socket.socket()
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        plain.settimeout(WAIT)
        plain.connect(address)
        # the handshake (in a thread: the server runs on this loop), then it never reads
        sleeper = await anyio.to_thread.run_sync(context.wrap_socket, plain)
        ask = f"GET /v1/events HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
        await anyio.to_thread.run_sync(sleeper.sendall, ask.encode())
        try:
            await until_the_slot_is_freed(
                controller,
                changes,
                lambda: _status_line(address, "GET", "/v1/nodes", TOKEN, context),
            )
        finally:
            sleeper.close()
        tg.cancel_scope.cancel()


async def test_the_console_page_and_its_data_load_over_tls(
    pki: tuple[Path, Path, Path],
) -> None:
    ca, cert, key = pki
    context = client_context(ca)
    async with anyio.create_task_group() as tg:
        address = await _serve_all(tg, tls=server_context(cert, key))
        for target in ("/console/", "/console/app.js"):
            assert await _status_line(address, "GET", target, None, context) == 200
        async with _asked(address, "GET", "/v1/nodes", READ, context) as (stream, conn):
            answer = await read_answer(stream, conn)  # type: ignore[arg-type]
        assert answer.status == 200 and answer.json()["self"] == "alpha"
        assert await _status_line(address, "GET", "/v1/events", READ, context) == 200
        tg.cancel_scope.cancel()


async def test_over_tls_an_event_stream_gets_its_small_send_buffer(
    pki: tuple[Path, Path, Path],
) -> None:
    """``_stream`` finds the socket under the TLS stream (``SocketAttribute.raw_socket``
    is passed through): the server's end of a TLS event stream has the small buffer."""
    ca, cert, key = pki
    context = client_context(ca)
    async with anyio.create_task_group() as tg:
        address = await _serve_all(tg, tls=server_context(cert, key))
        async with _asked(address, "GET", "/v1/events", READ, context) as (stream, _):
            assert (await stream.receive()).startswith(b"HTTP/1.1 200 ")
            ours = stream.extra(anyio.abc.SocketAttribute.local_address)
            server_end = _socket_connected_to(ours)
            # the kernel doubles what it is given (socket(7))
            assert server_end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 65536
            server_end.close()
        tg.cancel_scope.cancel()


def _socket_connected_to(address: tuple[str, int]) -> socket.socket:
    """A duplicate of this process's TCP socket whose peer is ``address``."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue  # closed since the listing
        try:
            candidate = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket
            continue
        try:
            if candidate.type == socket.SOCK_STREAM and candidate.getpeername() == address:
                return candidate
        except OSError:
            pass  # not connected
        candidate.close()
    raise AssertionError(f"no socket of this process is connected to {address}")

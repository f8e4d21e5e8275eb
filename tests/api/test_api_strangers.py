"""Strangers on the TCP control API (no token) can never deny a token holder.

The token is checked from the request head, before any body; connections
that have not authenticated have their own cap (the oldest pushed out first)
and a short deadline, apart from the cap of authenticated connections.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import anyio.abc
import h11
import pytest
from api_fakes import (
    Answer,
    FakeController,
    connect,
    raw_exchange,
    read_answer,
    read_until_closed,
    request,
    serving,
    status_line,
)

from failover.api.server import ControlEndpoints, ControlLimits

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-for-tests"
BEARER = (("authorization", f"Bearer {TOKEN}"),)
PARTIAL_HEAD = b"GET /v1/status HTTP/1.1\r\nHo"
AUTHORIZED_GET = (
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
)


async def _strangers(
    stack: AsyncExitStack, ends: ControlEndpoints, count: int, sent: bytes = b""
) -> list[anyio.abc.SocketStream]:
    streams = []
    for _ in range(count):
        stream = await stack.enter_async_context(await connect(ends))
        if sent:
            await stream.send(sent)
        streams.append(stream)
    return streams


async def _authorized_get(stream: anyio.abc.SocketStream, conn: h11.Connection) -> Answer:
    """GET /v1/status with the token on a kept-alive connection (``conn``: its client side)."""
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    await stream.send(AUTHORIZED_GET)
    answer = await read_answer(stream, conn)
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:  # kept alive
        conn.start_next_cycle()
    return answer


def _stop_head(token: str, *headers: bytes) -> bytes:
    """The head of ``POST /v1/commands/stop`` with ``token`` and ``headers``."""
    lines = [
        b"POST /v1/commands/stop HTTP/1.1",
        b"Host: x",
        b"Authorization: Bearer " + token.encode(),
    ]
    return b"\r\n".join([*lines, *headers]) + b"\r\n\r\n"


async def _past_the_auth_deadline(ends: ControlEndpoints) -> None:
    """Return once every connection opened before the call is past its auth deadline:
    a stranger opened now is cut at its own, which comes later."""
    stranger = await connect(ends)
    async with stranger:
        assert await read_until_closed(stranger) == b""


@pytest.mark.parametrize("sent", [b"", PARTIAL_HEAD], ids=["idle", "partial-head"])
async def test_300_strangers_do_not_deny_a_token_holder(
    controller: FakeController, sent: bytes
) -> None:
    # Default limits: 300 is far beyond both caps.
    async with (
        serving(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends,
        AsyncExitStack() as stack,
    ):
        await _strangers(stack, ends, 300, sent)
        answer = await request(ends, "GET", "/v1/status", headers=BEARER)
        command = await request(ends, "POST", "/v1/commands/stop", headers=BEARER)
    assert answer.status == 200
    assert answer.json()["schema"] == 2
    assert command.status == 200
    assert controller.commands == ["stop"]


async def test_a_stranger_is_cut_at_the_auth_deadline_not_the_request_timeout(
    controller: FakeController,
) -> None:
    limits = ControlLimits(request_timeout=60, auth_timeout=0.3)
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends:
        stream = await connect(ends)
        async with stream:
            await stream.send(PARTIAL_HEAD)
            answer = await read_until_closed(stream)  # within WAIT, far below 60 s
        idle = await connect(ends)
        async with idle:
            quiet = await read_until_closed(idle)
    assert status_line(answer) == 408
    assert b"0.3 s" in answer
    assert quiet == b""


async def test_an_authenticated_connection_is_not_cut_at_the_auth_deadline(
    controller: FakeController,
) -> None:
    limits = ControlLimits(request_timeout=60, auth_timeout=0.3)
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends:
        holder = await connect(ends)
        async with holder:
            conn = h11.Connection(h11.CLIENT)
            first = await _authorized_get(holder, conn)
            await _past_the_auth_deadline(ends)
            second = await _authorized_get(holder, conn)
    assert (first.status, second.status) == (200, 200)


async def test_a_body_that_follows_an_authenticated_head_is_not_cut_at_the_auth_deadline(
    controller: FakeController,
) -> None:
    limits = ControlLimits(request_timeout=60, auth_timeout=0.3)
    head = _stop_head(TOKEN, b"Content-Length: 2", b"Connection: close")
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends:
        holder = await connect(ends)
        async with holder:
            await holder.send(head)
            await _past_the_auth_deadline(ends)
            await holder.send(b"{}")
            answer = await read_until_closed(holder)
    assert status_line(answer) == 200
    assert controller.commands == ["stop"]


async def test_an_authenticated_connection_leaves_the_strangers_cap(
    controller: FakeController,
) -> None:
    """Once authenticated, a connection is no longer among the pending ones that a
    new stranger pushes out."""
    limits = ControlLimits(request_timeout=60, auth_timeout=60, max_unauthenticated=1)
    async with (
        serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends,
        AsyncExitStack() as stack,
    ):
        holder = await connect(ends)
        async with holder:
            conn = h11.Connection(h11.CLIENT)
            first = await _authorized_get(holder, conn)
            older, _newer = await _strangers(stack, ends, 2, PARTIAL_HEAD)
            assert await read_until_closed(older) == b""  # pushed out by the newer one
            second = await _authorized_get(holder, conn)
    assert (first.status, second.status) == (200, 200)


async def test_a_wrong_token_is_refused_from_the_head_before_any_body(
    controller: FakeController,
) -> None:
    limits = ControlLimits(request_timeout=60, auth_timeout=60)
    head = _stop_head("wrong", b"Content-Length: 4000", b"Expect: 100-continue")
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends:
        # The body is never sent: the answer must not wait for it.
        answer = await raw_exchange(ends, head)
    assert status_line(answer) == 401
    assert b"100 Continue" not in answer
    assert controller.commands == []


async def test_the_oldest_stranger_is_pushed_out_first(controller: FakeController) -> None:
    limits = ControlLimits(request_timeout=60, auth_timeout=60, max_unauthenticated=2)
    async with (
        serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends,
        AsyncExitStack() as stack,
    ):
        oldest, *_ = await _strangers(stack, ends, 3, PARTIAL_HEAD)
        closed = await read_until_closed(oldest)
        answer = await request(ends, "GET", "/v1/status", headers=BEARER)
    assert closed == b""
    assert answer.status == 200


async def test_token_holders_share_their_own_cap(controller: FakeController) -> None:
    """One authenticated slot: a stranger already connected does not take it (it
    has its own cap), a second token holder finds it taken, and it is free again
    once the first holder has gone."""
    limits = ControlLimits(max_connections=1, request_timeout=60, auth_timeout=60)
    async with (
        serving(controller, tcp=("127.0.0.1", 0), token=TOKEN, limits=limits) as ends,
        AsyncExitStack() as stack,
    ):
        await _strangers(stack, ends, 1, PARTIAL_HEAD)
        holder = await connect(ends)
        async with holder:
            first = await _authorized_get(holder, h11.Connection(h11.CLIENT))
            busy = await request(ends, "GET", "/v1/status", headers=BEARER)
            await holder.send_eof()
            # The server closes its end only after the holder's slot is released.
            assert await read_until_closed(holder) == b""
        after = await request(ends, "GET", "/v1/status", headers=BEARER)
    assert first.status == 200
    assert busy.status == 503
    assert after.status == 200

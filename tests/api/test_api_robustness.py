"""Malformed, slow, oversized and concurrent clients: the server keeps serving the others."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import h11
import pytest
from api_fakes import (
    WAIT,
    FakeController,
    connect,
    raw_exchange,
    read_answer,
    read_until_closed,
    request,
    serving,
    status_line,
)

from failover.api.server import ControlLimits

pytestmark = pytest.mark.anyio

GET_STATUS = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
GET_STATUS_CLOSE = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\xff\x13garbage\r\n\r\n", 400),
        (b"GET /v1/status\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_requests_get_an_error_and_a_close(
    controller: FakeController, sock_dir: Path, data: bytes, expected: int
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await raw_exchange(ends, data)
        after = await request(ends, "GET", "/v1/status")
    assert status_line(answer) == expected
    assert b"connection: close" in answer.lower()
    assert b"Traceback" not in answer
    assert after.status == 200


async def test_huge_headers_are_refused_with_431(
    controller: FakeController, sock_dir: Path
) -> None:
    data = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await raw_exchange(ends, data)
    assert status_line(answer) == 431


async def test_truncated_headers_then_eof_do_not_disturb_the_server(
    controller: FakeController, sock_dir: Path
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await raw_exchange(ends, b"GET /v1/status HTTP/1.1\r\nHo", eof=True)
        after = await request(ends, "GET", "/v1/status")
    assert answer == b"" or status_line(answer) == 400
    assert after.status == 200


async def test_random_garbage_never_crashes_the_server(
    controller: FakeController, sock_dir: Path
) -> None:
    rng = random.Random(3)
    pieces = [GET_STATUS, b"\r\n", b"POST ", b"Content-Length: 5\r\n", b"\x00", b":", b" "]
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        for _ in range(150):
            blob = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            blob = bytes(b ^ rng.choice((0, 0, 0, 1, 32)) for b in blob)
            answer = await raw_exchange(ends, blob, eof=True)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
            assert b"Traceback" not in answer
        after = await request(ends, "GET", "/v1/status")
    assert after.status == 200


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    controller: FakeController, sock_dir: Path
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        stream = await connect(ends)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            await stream.send(
                GET_STATUS
                + b"GET /v1/transitions?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                + b"POST /v1/commands/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            )
            answers = []
            for method in ("GET", "GET", "POST"):
                # Track the client side's state; the bytes were already sent above.
                conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
                conn.send(h11.EndOfMessage())
                answers.append(await read_answer(stream, conn))
                conn.start_next_cycle()
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].json()["schema"] == 2
    assert len(answers[1].json()["transitions"]) == 1
    assert answers[2].json()["accepted"] is True


async def test_expect_100_continue_is_honoured(controller: FakeController, sock_dir: Path) -> None:
    head = (
        b"POST /v1/commands/start HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        stream = await connect(ends)
        async with stream:
            await stream.send(head)
            with anyio.fail_after(WAIT):
                interim = await stream.receive()
            await stream.send(b"{}")
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
            answer = await read_answer(stream, conn)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert answer.status == 200
    assert controller.commands == ["start"]


async def test_a_slow_client_is_cut_while_another_is_served(
    controller: FakeController, sock_dir: Path
) -> None:
    limits = ControlLimits(request_timeout=0.5)
    async with serving(controller, unix_path=str(sock_dir / "c.sock"), limits=limits) as ends:
        slow = await connect(ends)
        async with slow:
            await slow.send(b"GET /v1/status HTTP/1.1\r\nHo")
            # The slow client holds its connection; others are answered meanwhile.
            fast = await request(ends, "GET", "/v1/status")
            answer = await read_until_closed(slow)
    assert fast.status == 200
    assert status_line(answer) == 408


async def test_a_dripping_client_is_cut_by_the_whole_request_bound(
    controller: FakeController, sock_dir: Path
) -> None:
    limits = ControlLimits(request_timeout=0.5)
    async with serving(controller, unix_path=str(sock_dir / "c.sock"), limits=limits) as ends:
        stream = await connect(ends)
        async with stream, anyio.create_task_group() as task_group:

            async def drip() -> None:
                # One byte every 50 ms keeps every single read short: the bound
                # must hold on the whole request, not on the gap between reads.
                for byte in b"GET /v1/status HTTP/1.1\r\nX-Drip: " + b"a" * 1000:
                    try:
                        await stream.send(bytes([byte]))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return
                    await anyio.sleep(0.05)

            task_group.start_soon(drip)
            received = await read_until_closed(stream)
            task_group.cancel_scope.cancel()
    assert status_line(received) == 408


async def test_an_idle_connection_is_closed_quietly(
    controller: FakeController, sock_dir: Path
) -> None:
    limits = ControlLimits(request_timeout=0.3)
    async with serving(controller, unix_path=str(sock_dir / "c.sock"), limits=limits) as ends:
        stream = await connect(ends)
        async with stream:
            assert await read_until_closed(stream) == b""


async def test_a_pending_command_does_not_block_other_clients(
    controller: FakeController, sock_dir: Path
) -> None:
    controller.gate = anyio.Event()
    controller.entered = anyio.Event()
    results: list[int] = []
    async with (
        serving(controller, unix_path=str(sock_dir / "c.sock")) as ends,
        anyio.create_task_group() as task_group,
    ):

        async def swap() -> None:
            results.append((await request(ends, "POST", "/v1/commands/swap")).status)

        task_group.start_soon(swap)
        with anyio.fail_after(WAIT):
            await controller.entered.wait()
        status = await request(ends, "GET", "/v1/status")
        assert results == []  # the command is still waiting on the gate
        controller.gate.set()
    assert status.status == 200
    assert results == [200]


async def test_many_concurrent_clients_are_all_answered(
    controller: FakeController, sock_dir: Path
) -> None:
    statuses: list[int] = []
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:

        async def one() -> None:
            statuses.append((await request(ends, "GET", "/v1/status")).status)

        async with anyio.create_task_group() as task_group:
            for _ in range(40):
                task_group.start_soon(one)
    assert statuses == [200] * 40


async def test_connections_beyond_the_limit_get_503(
    controller: FakeController, sock_dir: Path
) -> None:
    limits = ControlLimits(max_connections=2)
    async with serving(controller, unix_path=str(sock_dir / "c.sock"), limits=limits) as ends:
        holders = [await connect(ends) for _ in range(2)]
        for holder in holders:
            # A finished request proves the server counts this connection as served.
            conn = h11.Connection(h11.CLIENT)
            await holder.send(GET_STATUS)
            assert (await read_answer(holder, conn)).status == 200
        refused = await raw_exchange(ends, GET_STATUS_CLOSE)
        for holder in holders:
            await holder.aclose()
        # Slots free up once the holders' connections end.
        with anyio.fail_after(WAIT):
            while status_line(answer := await raw_exchange(ends, GET_STATUS_CLOSE)) == 503:
                await anyio.sleep(0.01)
    assert status_line(refused) == 503
    assert status_line(answer) == 200

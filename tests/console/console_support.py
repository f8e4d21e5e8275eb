"""Helpers of the console tests: a fake controller and raw HTTP over the control listener
(a module name unique across tests/)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11

# The API tests' raw HTTP reader (tests/api/api_fakes.py), whichever directory runs.
sys.path.insert(0, str(Path(__file__).parents[1] / "api"))
from api_fakes import Answer, FakeController, read_answer, request
from api_fakes import serving as serving_api

from failover.api.console import ConsoleNode, ConsoleSettings, load_static
from failover.api.protocol import CommandResult
from failover.api.server import ControlEndpoints, ControlLimits, serve_control

# tests/api's, for tests/console too
__all__ = ["Answer", "FakeController", "read_answer", "request", "serving_api"]

TOKEN = "console-test-token-0123456789"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PEER_ORIGIN = "http://10.9.9.2:7480"
WAIT = 10.0  # an upper bound on every wait, never an expected duration


class Changes:
    """The daemon's change signal: ``wait`` until the next ``notify``."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Controller:
    """A status the test edits; commands refused with a reason."""

    def __init__(self) -> None:
        self.state = "primary"
        self.reason = "peer beta in sync"
        self.uptime = 1.0

    def status(self) -> dict[str, Any]:
        return {
            "node": "alpha",
            "state": self.state,
            "substatus": "ready",
            "reason": self.reason,
            "uptime": self.uptime,
            "links": [{"name": "lan", "up": True, "last_seen_ago": self.uptime / 7}],
        }

    def transitions(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def command(self, name: str) -> CommandResult:
        return CommandResult(False, "the peer is not secondary", self.state)

    async def set_bandwidth(self, rate: int) -> CommandResult:
        return CommandResult(False, "no", self.state)

    async def verify(self) -> dict[str, Any]:
        return {}


def settings(*, static: bool = True, changes: Changes | None = None, **kw: Any) -> ConsoleSettings:
    nodes = (ConsoleNode("alpha", "http://10.9.9.1:7480"), ConsoleNode("beta", PEER_ORIGIN))
    files = load_static() if static else {}
    return ConsoleSettings(
        "alpha",
        nodes,
        static,
        frozenset({PEER_ORIGIN}),
        None if changes is None else changes.wait,
        files=files,
        **kw,
    )


@asynccontextmanager
async def serving(
    controller: Controller, console: ConsoleSettings, limits: ControlLimits | None = None
) -> AsyncIterator[tuple[str, int]]:
    options: dict[str, Any] = {"tcp": ("127.0.0.1", 0), "token": TOKEN, "console": console}
    if limits is not None:
        options["limits"] = limits
    async with anyio.create_task_group() as tg:
        ends: ControlEndpoints = await tg.start(partial(serve_control, controller, **options))
        assert ends.tcp is not None
        yield ends.tcp
        tg.cancel_scope.cancel()


class Client:
    """One kept-alive connection, several requests in turn."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def ask(
        self, method: str, target: str, *headers: tuple[str, str], token: bool = True
    ) -> Answer:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", "alpha"), *headers]
        if token:
            all_headers.append(("authorization", f"Bearer {TOKEN}"))
        request = h11.Request(method=method, target=target, headers=all_headers)
        await self.stream.send(
            (self.conn.send(request) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
        )
        return await read_answer(self.stream, self.conn)


async def ask(
    address: tuple[str, int],
    method: str,
    target: str,
    *headers: tuple[str, str],
    token: bool = True,
) -> Answer:
    """One request on a fresh connection."""
    async with await anyio.connect_tcp(*address) as stream:
        return await Client(stream).ask(method, target, *headers, token=token)


class Events:
    """Reads an event stream: the response head, then one SSE block at a time."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.buffer = b""
        self.response: h11.Response | None = None

    async def open(self, *headers: tuple[str, str]) -> h11.Response:
        all_headers = [("host", "alpha"), ("authorization", f"Bearer {TOKEN}"), *headers]
        request = h11.Request(method="GET", target="/v1/events", headers=all_headers)
        await self.stream.send(
            (self.conn.send(request) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
        )
        with anyio.fail_after(WAIT):
            while self.response is None:
                await self._pump()
        return self.response

    async def _pump(self) -> None:
        event = self.conn.next_event()
        if event is h11.NEED_DATA:
            self.conn.receive_data(await self.stream.receive())
        elif isinstance(event, h11.Response):
            self.response = event
        elif isinstance(event, h11.Data):
            self.buffer += bytes(event.data)
        else:
            raise AssertionError(f"the stream ended: {event!r}")

    async def block(self) -> bytes:
        """The next SSE block (an event or a comment), without its blank line."""
        with anyio.fail_after(WAIT):
            while b"\n\n" not in self.buffer:
                await self._pump()
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block

    async def status(self) -> dict[str, Any]:
        """The next ``status`` event's snapshot (comments and the retry line skipped)."""
        while True:
            block = await self.block()
            if block.startswith(b"event: status\n"):
                data = block.split(b"\ndata: ", 1)[1]
                result: dict[str, Any] = json.loads(data)
                return result


async def until_the_slot_is_freed(
    controller: Controller, changes: Changes, status_of_a_request: Callable[[], Awaitable[int]]
) -> None:
    """Push large changes at a stream that does not read while asking for another request
    (503 while the non-reader holds the one slot) until one is served."""
    with anyio.fail_after(30):  # a bound, never an expected duration
        n = 0
        while True:
            n += 1
            controller.reason = f"change {n} " + "x" * 16384
            changes.notify()
            status = await status_of_a_request()
            if status == 200:
                return
            assert status == 503
            await anyio.sleep(0.05)


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return (
                f"{path} is missing: scripts/system-deps.sh installs chromium and chromium-driver"
            )
    try:
        import selenium  # noqa: F401, PLC0415 (only to know whether it is there)
    except ImportError:
        return "selenium is missing: pip install -e '.[dev]'"
    return None

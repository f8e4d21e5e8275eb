"""A fake in-memory Controller, and helpers to serve it and to talk raw HTTP to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import h11

from failover.api.protocol import CommandResult
from failover.api.server import ControlEndpoints, serve_control
from failover.errors import UsageError

WAIT = 10.0  # generous upper bound on any wait in these tests; never a timing assert


class FakeController:
    """Holds a status and transition records in memory; commands are scripted."""

    def __init__(self) -> None:
        self.state = "primary"
        self.substatus = "ready"
        self.reason = "peer beta in sync"
        self.records: list[dict[str, Any]] = [
            {
                "time": 1_700_000_000.0 + i,
                "node": "alpha",
                "from": "wait" if i % 2 else "alone",
                "to": "alone" if i % 2 else "primary",
                "event": f"event{i}",
                "reason": f"reason {i}",
                "effects": [],
                "generation": "3:alpha",
            }
            for i in range(120)
        ]
        self.refusals: dict[str, str] = {}
        self.commands: list[str] = []
        self.bandwidths: list[int] = []
        self.verify_report: dict[str, Any] | None = None
        self.entered: anyio.Event | None = None  # set when a command arrives
        self.gate: anyio.Event | None = None  # a command waits on it when given
        self.broken = False
        self.links: list[dict[str, Any]] = [
            {"name": "lan", "transport": "udp", "up": True, "last_seen_ago": 0.1},
            {"name": "serial", "transport": "serial", "up": False, "last_seen_ago": 12.5},
        ]
        self.in_sync: bool | None = True  # None: the status does not say
        self.in_sync_reason: str | None = None
        self.peer_alive = True
        self.peer_state = "secondary"

    def status(self) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("secret internal detail")
        status: dict[str, Any] = {
            "schema": 2,
            "node": "alpha",
            "state": self.state,
            "substatus": self.substatus,
            "reason": self.reason,
            "generation": "3:alpha",
            "consistent": True,
            "cluster": "dispatch",
            "peer": {
                "node": "beta",
                "state": self.peer_state,
                "substatus": "ready",
                "generation": "3:alpha",
                "alive": self.peer_alive,
                "last_seen_ago": 0.25,
            },
            "links": [dict(link) for link in self.links],
            "frames": {"received": 1234, "dropped": {"bad_mac": 2, "replay": 1}},
            "uptime": 3723.0,
        }
        if self.in_sync is not None:
            status["in_sync"] = self.in_sync
            status["in_sync_reason"] = self.in_sync_reason
        return status

    def transitions(self, limit: int) -> list[dict[str, Any]]:
        return self.records[len(self.records) - limit :] if limit else []

    async def command(self, name: str) -> CommandResult:
        self.commands.append(name)
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if name in self.refusals:
            return CommandResult(False, self.refusals[name], self.state)
        return CommandResult(True, f"{name} done", self.state)

    async def verify(self) -> dict[str, Any]:
        if self.verify_report is None:
            raise UsageError("no replicated directories are configured")
        return self.verify_report

    async def set_bandwidth(self, rate: int) -> CommandResult:
        self.bandwidths.append(rate)
        if "bandwidth" in self.refusals:
            return CommandResult(False, self.refusals["bandwidth"], self.state)
        return CommandResult(True, f"bandwidth {rate}", self.state)


@asynccontextmanager
async def serving(controller: Any, **options: Any) -> AsyncIterator[ControlEndpoints]:
    """Run ``serve_control`` in the background for the body of the ``async with``."""
    async with anyio.create_task_group() as task_group:
        endpoints: ControlEndpoints = await task_group.start(
            partial(serve_control, controller, **options)
        )
        yield endpoints
        task_group.cancel_scope.cancel()


@contextmanager
def serving_in_thread(controller: Any, **options: Any) -> Iterator[ControlEndpoints]:
    """Run ``serve_control`` on its own event loop in a thread (for synchronous clients)."""
    with anyio.from_thread.start_blocking_portal() as portal:
        future, endpoints = portal.start_task(partial(serve_control, controller, **options))
        try:
            yield endpoints
        finally:
            future.cancel()


async def connect(endpoints: ControlEndpoints) -> anyio.abc.SocketStream:
    if endpoints.unix_path is not None:
        return await anyio.connect_unix(endpoints.unix_path)
    assert endpoints.tcp is not None
    return await anyio.connect_tcp(*endpoints.tcp)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_answer(stream: anyio.abc.SocketStream, conn: h11.Connection) -> Answer:
    """Read one response on ``conn`` (an h11 client connection)."""
    response: h11.Response | None = None
    body = b""
    with anyio.fail_after(WAIT):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    conn.receive_data(b"")
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                headers = {k.decode(): v.decode() for k, v in response.headers}
                return Answer(response.status_code, headers, body)
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise AssertionError(f"connection ended before a response: {event!r}")


async def request(
    endpoints: ControlEndpoints,
    method: str,
    target: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Answer:
    """One request on a fresh connection."""
    stream = await connect(endpoints)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        all_headers = [("host", "localhost"), *headers]
        if body or method == "POST":
            all_headers.append(("content-length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=target, headers=all_headers))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") if body else data
        await stream.send((data or b"") + (conn.send(h11.EndOfMessage()) or b""))
        return await read_answer(stream, conn)


async def raw_exchange(endpoints: ControlEndpoints, data: bytes, *, eof: bool = False) -> bytes:
    """Send ``data`` as is (then EOF if asked) and read until the server closes."""
    stream = await connect(endpoints)
    async with stream:
        await stream.send(data)
        if eof:
            await stream.send_eof()
        return await read_until_closed(stream)


async def read_until_closed(stream: anyio.abc.SocketStream) -> bytes:
    received = b""
    with anyio.fail_after(WAIT):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


def status_line(data: bytes) -> int:
    """The status code of the first response in ``data``."""
    return int(data.split(b"\r\n", 1)[0].split(b" ")[1])


CLUSTER = """\
cluster:
  name: dispatch
  insecure: true
links:
  - name: lan
    transport: udp
nodes:
  alpha:
    control:
      {control}
    links:
      lan: {{address: 127.0.0.1, port: 7401}}
  beta:
    links:
      lan: {{address: 127.0.0.1, port: 7402}}
"""


def write_cluster_file(path: Path, control: str) -> Path:
    """A two-node cluster file at ``path`` whose node alpha has ``control`` (YAML
    flow text, e.g. ``tcp: {...}``) as its control section."""
    path.write_text(CLUSTER.format(control=control))
    return path


def write_token(path: Path, token: str) -> Path:
    """A token file as the daemon accepts it (mode 0600)."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path

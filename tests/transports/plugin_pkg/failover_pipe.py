"""Heartbeats between two nodes of one host over Unix datagram sockets.

Endpoint options: ``{path: /run/failover/alpha.sock}``: the socket this node
binds; frames are sent to the peer's path. Datagram semantics on a local
socket: frames arrive whole and in order while both ends are open. Once the
peer's socket is gone, ``send`` raises ``TransportError``.
"""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from typing import Annotated

import anyio
from pydantic import BaseModel, ConfigDict, Field

from failover.errors import TransportError
from failover.transport import MAX_FRAME_SIZE, HeartbeatChannel


class PipeEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Annotated[str, Field(pattern=r"^/.{1,100}$")]


class PipeChannel:
    def __init__(self, sock: socket.socket, local: PipeEndpoint, remote: PipeEndpoint) -> None:
        self._sock, self._local, self._remote = sock, local.path, remote.path
        self._closed = False

    async def send(self, frame: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self._closed or len(frame) > MAX_FRAME_SIZE:
            raise TransportError(f"pipe {self._local}: closed or frame too large")
        try:
            self._sock.sendto(frame, self._remote)
        except OSError as exc:  # peer gone (ENOENT, ECONNREFUSED) or its queue is full
            raise TransportError(f"pipe {self._local}: send: {exc}") from exc

    async def receive(self) -> bytes:
        while not self._closed:
            try:
                await anyio.wait_readable(self._sock)
                return self._sock.recv(MAX_FRAME_SIZE)
            except BlockingIOError:
                continue
            except (OSError, anyio.ClosedResourceError) as exc:
                raise TransportError(f"pipe {self._local}: receive: {exc!r}") from exc
        raise TransportError(f"pipe {self._local}: closed")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self._sock)
            self._sock.close()
            with suppress(FileNotFoundError):
                os.unlink(self._local)
        await anyio.lowlevel.checkpoint()


class PipeTransport:
    name = "pipe"
    endpoint_model: type[BaseModel] = PipeEndpoint

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        assert isinstance(local, PipeEndpoint) and isinstance(remote, PipeEndpoint)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with suppress(FileNotFoundError):
                os.unlink(local.path)  # left behind by a crash
            sock.bind(local.path)
        except OSError as exc:
            sock.close()
            raise TransportError(f"pipe {local.path}: open: {exc}") from exc
        return PipeChannel(sock, local, remote)

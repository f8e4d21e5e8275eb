"""edge.accept_stream: what accept(2) failures do to a listener (campaign round 99)."""

from __future__ import annotations

import errno
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from failover.testing.transport_contract import WAIT_TIMEOUT
from failover_transports.edge import accept_stream


class FlakyAccept:
    """A listening socket whose next accept(2) calls fail with the given errnos."""

    def __init__(self, sock: socket.socket, failures: list[int]) -> None:
        self.sock = sock
        self.failures = failures

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            code = self.failures.pop(0)
            raise OSError(code, errno.errorcode[code])
        return self.sock.accept()


class Listener:
    """Just what accept_stream reads of an anyio SocketListener."""

    def __init__(self, raw: FlakyAccept) -> None:
        self.raw = raw

    def extra(self, attribute: object) -> FlakyAccept:
        assert attribute is SocketAttribute.raw_socket
        return self.raw


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failures",
    [[errno.ECONNABORTED], [errno.EMFILE], [errno.ENFILE, errno.EPROTO, errno.ENOBUFS]],
    ids=["aborted", "out-of-descriptors", "mixed"],
)
async def test_failures_of_one_connection_or_of_resources_never_end_the_listener(
    failures: list[int],
) -> None:
    """The connection still queued is taken once accept(2) works again."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        flaky = FlakyAccept(server, list(failures))
        with socket.create_connection(server.getsockname()) as client:
            with anyio.fail_after(WAIT_TIMEOUT):
                stream = await accept_stream(Listener(flaky))  # type: ignore[arg-type]
            async with stream:
                await stream.send(b"taken")
                assert client.recv(5) == b"taken"
        assert flaky.failures == []


@pytest.mark.anyio
async def test_a_failure_of_the_listening_socket_itself_is_raised() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        flaky = FlakyAccept(server, [errno.EBADF])
        with socket.create_connection(server.getsockname()), pytest.raises(OSError) as caught:
            await accept_stream(Listener(flaky))  # type: ignore[arg-type]
        assert caught.value.errno == errno.EBADF

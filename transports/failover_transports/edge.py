"""Where a transport's I/O errors become ``TransportError``.

Every built-in wraps its socket and device calls in ``map_errors`` instead of
repeating try/except blocks; third-party plugins may use it too (this package
ships in the same distribution as ``failover``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from failover.errors import TransportError
from failover.transport import MAX_FRAME_SIZE

IO_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # includes TimeoutError from anyio.fail_after and pyserial's SerialException
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _describe(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, anyio.ClosedResourceError):
        return "closed"
    if isinstance(exc, anyio.EndOfStream):
        return "closed by the peer"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Re-raise any I/O failure inside the block as ``TransportError("<what>: <cause>")``.

    The original exception is chained as ``__cause__``. Anything else
    (cancellation, programming errors) passes through unchanged.
    """
    try:
        yield
    except IO_ERRORS as exc:
        raise TransportError(f"{what}: {_describe(exc)}") from exc


_ACCEPT_AGAIN = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
"""accept(2) failures that concern only the connection that went away: take the next."""
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept(2) failures for want of descriptors or memory: pause, then take the next."""
ACCEPT_PAUSE = 0.1
"""Seconds the accept loop waits after running out of descriptors or memory (a
flood of connections): the pending connection stays queued meanwhile."""


async def accept_stream(listener: SocketListener) -> SocketStream:
    """The next connection on ``listener`` as an anyio stream (see ``accept_socket``)."""
    conn = await accept_socket(listener)
    try:
        with anyio.CancelScope(shield=True):  # the connection is ours: never lose it
            stream = await SocketStream.from_socket(conn)
    except BaseException:
        conn.close()
        raise
    return stream


async def accept_socket(listener: SocketListener) -> socket.socket:
    """The next connection on ``listener``, accepted from its raw socket once readable
    (non-blocking, ``TCP_NODELAY`` set).

    Not ``listener.accept()``: on asyncio (Python 3.11), an accept cancelled just
    as a connection arrives makes the event loop raise ``InvalidStateError`` and
    drops that connection. Here a cancellation only ever interrupts the wait for
    readability. A connection that went away before it was taken, and a lack of
    descriptors (a flood), never end the listener: the next one is taken. Raises
    OSError/anyio errors only when the listening socket itself fails or is closed.
    """
    sock = listener.extra(SocketAttribute.raw_socket)
    while True:
        await anyio.wait_readable(sock)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another task took it, or it went away
        except OSError as exc:
            if exc.errno in _ACCEPT_AGAIN:
                continue
            if exc.errno in _ACCEPT_EXHAUSTED:
                await anyio.sleep(ACCEPT_PAUSE)
                continue
            raise
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            continue  # it went away meanwhile
        return conn


def check_frame_size(frame: bytes, what: str) -> None:
    """Raise ``TransportError`` if ``frame`` is larger than MAX_FRAME_SIZE."""
    if len(frame) > MAX_FRAME_SIZE:
        raise TransportError(
            f"{what}: frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_SIZE}"
        )


def closed_error(what: str) -> TransportError:
    """The error every operation on a closed channel raises."""
    return TransportError(f"{what}: channel closed")

"""Where a transport's I/O errors become ``TransportError``.

Every built-in wraps its socket and device calls in ``map_errors`` instead of
repeating try/except blocks; third-party plugins may use it too (this package
ships in the same distribution as ``failover``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

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


def check_frame_size(frame: bytes, what: str) -> None:
    """Raise ``TransportError`` if ``frame`` is larger than MAX_FRAME_SIZE."""
    if len(frame) > MAX_FRAME_SIZE:
        raise TransportError(
            f"{what}: frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_SIZE}"
        )


def closed_error(what: str) -> TransportError:
    """The error every operation on a closed channel raises."""
    return TransportError(f"{what}: channel closed")

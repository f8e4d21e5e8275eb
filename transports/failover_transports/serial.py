"""Serial-line heartbeat transport (pyserial), e.g. a null-modem cable between the nodes.

pyserial opens and configures the device (raw mode, baud rate, an exclusive
lock so two daemons cannot share it); reads and writes then go straight to
its non-blocking file descriptor, awaited with ``anyio.wait_readable`` /
``wait_writable``, so no thread is involved.

Frames are COBS-encoded with a CRC-32 between zero delimiters
(``framing.encode_delimited``): line noise, a partial frame or a cable
plugged in mid-frame costs at most the frames it touches, and the reader
resynchronises at the next delimiter.

Guarantees: frames arrive in order, or are dropped if damaged. ``send`` waits
at most ``SEND_TIMEOUT`` plus twice the frame's time on the wire at the
configured baud rate, then raises ``TransportError`` (the frame may be cut
short; the peer drops it). When the device vanishes (USB adapter unplugged,
pty peer closed) ``receive`` raises ``TransportError`` at once. When the peer
merely stops reading, sent frames are silently lost.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Annotated

import anyio
import serial
from pydantic import BaseModel, ConfigDict, Field

from failover.errors import TransportError
from failover.transport import MAX_FRAME_SIZE, HeartbeatChannel
from failover_transports.edge import check_frame_size, closed_error, map_errors
from failover_transports.framing import DelimitedDecoder, encode_delimited

SEND_TIMEOUT = 0.1
_READ_SIZE = 4096
_BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


class SerialEndpoint(BaseModel):
    """One node's serial device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Annotated[str, Field(pattern=r"^/\S+$")]
    """Absolute path of the device, e.g. ``/dev/ttyS0`` or ``/dev/serial/by-id/...``."""
    baudrate: Annotated[int, Field(gt=0, le=4_000_000)] = 115200


class SerialChannel:
    """An open serial link; see the module docstring for its guarantees."""

    def __init__(self, port: serial.Serial, endpoint: SerialEndpoint) -> None:
        self._port = port
        self._fd: int = port.fileno()
        os.set_blocking(self._fd, False)
        self._baudrate = endpoint.baudrate
        self._what = f"serial {endpoint.device}"
        self._decoder = DelimitedDecoder(MAX_FRAME_SIZE)
        self._frames: deque[bytes] = deque()
        self._send_lock = anyio.Lock()
        self._closed = False

    @property
    def dropped(self) -> int:
        """Damaged or oversize frames discarded so far."""
        return self._decoder.dropped

    async def send(self, frame: bytes) -> None:
        """Write one frame; see the module docstring for the time bound.

        Raises TransportError when closed, oversize, or the device fails or stalls.
        """
        if self._closed:
            raise closed_error(self._what)
        check_frame_size(frame, self._what)
        data = memoryview(encode_delimited(frame))
        limit = SEND_TIMEOUT + 2 * len(data) * _BITS_PER_BYTE / self._baudrate
        with map_errors(f"{self._what}: send"), anyio.fail_after(limit):
            async with self._send_lock:
                while data:
                    try:
                        written = os.write(self._fd, data)
                    except BlockingIOError:
                        await anyio.wait_writable(self._fd)
                        continue
                    data = data[written:]

    async def receive(self) -> bytes:
        """Wait for the next valid frame.

        Raises TransportError when the channel is closed or the device
        reports an error or end of file (device gone).
        """
        while not self._frames:
            if self._closed:
                raise closed_error(self._what)
            with map_errors(f"{self._what}: receive"):
                await anyio.wait_readable(self._fd)
                try:
                    chunk = os.read(self._fd, _READ_SIZE)
                except BlockingIOError:
                    continue
            if not chunk:
                raise TransportError(f"{self._what}: device closed (end of file)")
            self._frames.extend(self._decoder.feed(chunk))
        return self._frames.popleft()

    async def aclose(self) -> None:
        """Close the device (idempotent); a pending receive or send raises TransportError."""
        if self._closed:
            return
        self._closed = True
        # Wake any task waiting on the descriptor before it is closed and reused.
        anyio.notify_closing(self._fd)
        self._port.close()
        await anyio.lowlevel.checkpoint()


class SerialTransport:
    """The ``serial`` entry point."""

    name = "serial"
    endpoint_model: type[BaseModel] = SerialEndpoint

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        """Open and lock ``local.device``; raises TransportError if that fails.

        ``remote`` (the peer's device path on its own machine) is not used.
        """
        if not isinstance(local, SerialEndpoint) or not isinstance(remote, SerialEndpoint):
            raise TypeError("serial endpoints must be SerialEndpoint instances")
        with map_errors(f"serial {local.device}: open"):
            port = serial.Serial(local.device, local.baudrate, timeout=0, exclusive=True)
        return SerialChannel(port, local)

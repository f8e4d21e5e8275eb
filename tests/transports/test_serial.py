"""The serial transport over a socat pty pair: the conformance suite, noise, cable pull."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import anyio
import pytest

from failover.errors import TransportError
from failover.testing.transport_contract import (
    WAIT_TIMEOUT,
    EndpointOptions,
    PtyPair,
    TransportContract,
    establish,
    open_pair,
    pumped,
    socat_pty_pair,
)
from failover_transports.framing import encode_delimited
from failover_transports.serial import SerialEndpoint, SerialTransport


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    with socat_pty_pair(tmp_path) as pair:
        yield pair


class TestSerialContract(TransportContract):
    transport_name = "serial"
    ordered = True
    after_peer_close = "drops"  # socat keeps the line up; nobody reads the far end
    bad_options = [
        {"device": "ttyS0"},  # relative path
        {"device": ""},
        {"device": "/dev/ttyS0", "baudrate": 0},
        {"device": "/dev/ttyS0", "baudrate": "fast"},
        {"baudrate": 9600},
    ]
    frame_count = 200

    @pytest.fixture
    def endpoint_options(self, ptys: PtyPair) -> EndpointOptions:
        return {"device": str(ptys.a)}, {"device": str(ptys.b), "baudrate": 115200}


def _endpoints(ptys: PtyPair) -> tuple[SerialEndpoint, SerialEndpoint]:
    return SerialEndpoint(device=str(ptys.a)), SerialEndpoint(device=str(ptys.b))


@pytest.mark.anyio
async def test_killing_socat_fails_receive_at_once(ptys: PtyPair) -> None:
    async with open_pair(SerialTransport(), *_endpoints(ptys)) as (a, b):
        await establish(a, b)
        ptys.cut()
        with anyio.fail_after(WAIT_TIMEOUT):
            await a.stopped.wait()
            await b.stopped.wait()
        assert isinstance(a.failure, TransportError)
        assert isinstance(b.failure, TransportError)
        with pytest.raises(TransportError):
            await a.channel.send(b"anyone?")


async def _write_all(path: Path, data: bytes) -> None:
    """Write all of ``data`` to the pty without blocking the event loop (cancellable)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        view = memoryview(data)
        while view:
            await anyio.wait_writable(fd)
            with suppress(BlockingIOError):
                view = view[os.write(fd, view) :]
    finally:
        anyio.notify_closing(fd)
        os.close(fd)


@pytest.mark.anyio
async def test_noise_and_partial_frames_are_skipped(ptys: PtyPair) -> None:
    a_end, _ = _endpoints(ptys)
    frame = encode_delimited(b"good frame")
    line_noise = [
        b"\x13\x37garbage with no delimiter",
        frame[: len(frame) // 2],  # cable pulled mid-frame
        b"\x00\x05abc\x00",  # a delimited body that is not valid COBS
        encode_delimited(b"corrupted")[:-3] + b"\xff\xff\x00",  # bad CRC
        bytes(range(1, 256)) * 300,  # longer than any frame, no delimiter
    ]
    async with pumped(await SerialTransport().open(a_end, a_end)) as a:
        with anyio.fail_after(WAIT_TIMEOUT):
            await _write_all(ptys.b, b"".join(noise + frame for noise in line_noise))
            got = [await a.next_frame() for _ in line_noise]
    assert got == [b"good frame"] * len(line_noise)


@pytest.mark.anyio
async def test_device_is_locked_against_a_second_opener(ptys: PtyPair) -> None:
    a_end, b_end = _endpoints(ptys)
    transport = SerialTransport()
    channel = await transport.open(a_end, b_end)
    try:
        with pytest.raises(TransportError, match="lock"):
            await transport.open(a_end, b_end)
    finally:
        await channel.aclose()


@pytest.mark.anyio
async def test_missing_device_fails_open(tmp_path: Path) -> None:
    missing = SerialEndpoint(device=str(tmp_path / "no-such-tty"))
    with pytest.raises(TransportError, match="no-such-tty"):
        await SerialTransport().open(missing, missing)

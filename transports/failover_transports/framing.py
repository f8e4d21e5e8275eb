"""Frame codecs for byte-stream links: pure functions and incremental decoders.

- Length prefix (TCP): a 4-byte big-endian length, then the payload. The
  stream is reliable, so a bad length means the peer is broken: the decoder
  raises and the caller drops the connection.
- COBS with CRC-32 (serial): ``00 cobs(payload + crc32) 00``. COBS removes
  every zero byte from the body, so ``00`` always marks a frame boundary:
  after noise, a cut cable or a partial frame the decoder resynchronises at
  the next ``00`` and drops whatever does not decode or fails its CRC.
"""

from __future__ import annotations

import struct
import zlib

_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")
DELIMITER = 0


class FramingError(Exception):
    """The peer sent a length prefix above the limit: the stream cannot be trusted."""


def encode_length_prefixed(payload: bytes) -> bytes:
    """``payload`` preceded by its length as 4 big-endian bytes."""
    return _LENGTH.pack(len(payload)) + payload


class LengthPrefixedDecoder:
    """Splits a byte stream of length-prefixed frames, keeping partial input across calls.

    ``max_payload`` may be raised between two frames (``push`` then ``pop``
    one at a time): a TCP link reads only handshake-sized messages until the
    other end proved the key, and frames of any allowed size after that.
    """

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame now complete, in order.

        Raises ``FramingError`` when a length prefix exceeds ``max_payload``;
        the decoder is then unusable (the stream has lost its framing).
        """
        self.push(data)
        frames: list[bytes] = []
        while (frame := self.pop()) is not None:
            frames.append(frame)
        return frames

    def push(self, data: bytes) -> None:
        """Add ``data``; take the frames it completes with ``pop``."""
        self._buffer += data

    def pop(self) -> bytes | None:
        """The next complete frame, or None until more data comes.

        Raises ``FramingError`` as soon as the next length prefix exceeds
        ``max_payload`` (before any of that frame is buffered or waited for).
        """
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self.max_payload:
            raise FramingError(
                f"peer announced a {length}-byte frame, the limit is {self.max_payload}"
            )
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return frame


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` rewritten without any zero byte."""
    out = bytearray(b"\x00")
    code_at = 0
    code = 1
    for byte in data:
        if byte == 0:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of ``cobs_encode``; ``None`` if ``data`` is not a valid encoding."""
    out = bytearray()
    index = 0
    while index < len(data):
        code = data[index]
        end = index + code
        if code == 0 or end > len(data):
            return None
        block = data[index + 1 : end]
        if DELIMITER in block:
            return None
        out += block
        index = end
        if index < len(data) and code != 0xFF:
            out.append(0)
    return bytes(out)


def encode_delimited(payload: bytes) -> bytes:
    """One serial frame: delimiter, COBS(payload + CRC-32), delimiter.

    The leading delimiter ends any garbage the line carried before this frame.
    """
    body = cobs_encode(payload + _CRC.pack(zlib.crc32(payload)))
    return b"\x00" + body + b"\x00"


def max_delimited_body(max_payload: int) -> int:
    """The longest COBS body a payload of ``max_payload`` bytes can produce."""
    raw = max_payload + _CRC.size
    return raw + raw // 254 + 1


class DelimitedDecoder:
    """Recovers frames from a noisy byte stream of ``encode_delimited`` output.

    Never raises on bad input: anything that is not a whole valid frame is
    dropped and counted in ``dropped``.
    """

    def __init__(self, max_payload: int) -> None:
        self._max_body = max_delimited_body(max_payload)
        self._buffer = bytearray()
        self._overflowed = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every valid frame now complete, in order."""
        frames: list[bytes] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            self._append(data[start:] if end < 0 else data[start:end])
            if end < 0:
                return frames
            frame = self._take()
            if frame is not None:
                frames.append(frame)
            start = end + 1

    def _append(self, part: bytes) -> None:
        if self._overflowed or not part:
            return
        self._buffer += part
        if len(self._buffer) > self._max_body:
            # Too long to be a frame: noise or a lost delimiter. Skip to the next one.
            self._buffer.clear()
            self._overflowed = True
            self.dropped += 1

    def _take(self) -> bytes | None:
        body = bytes(self._buffer)
        self._buffer.clear()
        if self._overflowed:
            self._overflowed = False
            return None
        if not body:
            return None  # two delimiters in a row: the normal gap between frames
        decoded = cobs_decode(body)
        if decoded is None or len(decoded) < _CRC.size:
            self.dropped += 1
            return None
        payload, (crc,) = decoded[: -_CRC.size], _CRC.unpack(decoded[-_CRC.size :])
        if zlib.crc32(payload) != crc:
            self.dropped += 1
            return None
        return payload

"""The byte-stream frame codecs: length prefix (TCP) and COBS + CRC (serial)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover_transports.framing import (
    DelimitedDecoder,
    FramingError,
    LengthPrefixedDecoder,
    cobs_decode,
    cobs_encode,
    encode_delimited,
    encode_length_prefixed,
)

MAX = 2000
payloads = st.lists(st.binary(max_size=MAX), max_size=8)
cuts = st.lists(st.integers(min_value=0), max_size=10)


def _split(data: bytes, cut_points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in cut_points})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.binary(max_size=1000))
def test_cobs_round_trips_without_zero_bytes(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data


def test_cobs_handles_runs_of_254_non_zero_bytes() -> None:
    for size in (253, 254, 255, 508, 509):
        data = b"\x01" * size
        assert cobs_decode(cobs_encode(data)) == data


@given(payloads, cuts)
def test_delimited_frames_survive_any_chunking(frames: list[bytes], cut_points: list[int]) -> None:
    decoder = DelimitedDecoder(MAX)
    stream = b"".join(encode_delimited(f) for f in frames)
    got = [f for chunk in _split(stream, cut_points) for f in decoder.feed(chunk)]
    assert got == frames
    assert decoder.dropped == 0


@given(st.binary(max_size=5000), payloads)
def test_delimited_decoder_resynchronises_after_garbage(
    garbage: bytes, frames: list[bytes]
) -> None:
    decoder = DelimitedDecoder(MAX)
    decoder.feed(garbage)
    got = decoder.feed(b"".join(encode_delimited(f) for f in frames))
    assert got == frames


@given(st.binary(max_size=5000))
def test_delimited_decoder_never_raises_on_noise(noise: bytes) -> None:
    DelimitedDecoder(MAX).feed(noise)


def test_delimited_decoder_drops_a_frame_with_a_flipped_bit() -> None:
    encoded = bytearray(encode_delimited(b"heartbeat"))
    encoded[3] ^= 0x04
    decoder = DelimitedDecoder(MAX)
    assert decoder.feed(bytes(encoded) + encode_delimited(b"next")) == [b"next"]
    assert decoder.dropped == 1


def test_delimited_decoder_drops_frames_over_the_limit() -> None:
    decoder = DelimitedDecoder(MAX)
    assert decoder.feed(encode_delimited(bytes(MAX + 300)) + encode_delimited(b"ok")) == [b"ok"]
    assert decoder.dropped == 1


@given(payloads, cuts)
def test_length_prefixed_frames_survive_any_chunking(
    frames: list[bytes], cut_points: list[int]
) -> None:
    decoder = LengthPrefixedDecoder(MAX)
    stream = b"".join(encode_length_prefixed(f) for f in frames)
    got = [f for chunk in _split(stream, cut_points) for f in decoder.feed(chunk)]
    assert got == frames


def test_length_prefix_over_the_limit_is_a_framing_error() -> None:
    decoder = LengthPrefixedDecoder(MAX)
    with pytest.raises(FramingError):
        decoder.feed((MAX + 1).to_bytes(4, "big"))


def test_the_limit_applies_to_each_frame_as_it_is_popped() -> None:
    # A proof and the first heartbeat in one segment: the heartbeat is read only
    # once the limit was raised, and the limit refuses a prefix before its body came.
    decoder = LengthPrefixedDecoder(4)
    decoder.push(encode_length_prefixed(b"tiny") + encode_length_prefixed(b"larger"))
    assert decoder.pop() == b"tiny"
    decoder.max_payload = MAX
    assert decoder.pop() == b"larger"
    assert decoder.pop() is None
    decoder = LengthPrefixedDecoder(4)
    decoder.push((5).to_bytes(4, "big"))
    with pytest.raises(FramingError):
        decoder.pop()

"""failover.codec: the bounded reader, the writer, and every format under hostile bytes.

The invariant: whatever the bytes, a decoder gives a value or raises a
``PeerProtocolError`` naming the format and the field; never an IndexError, a
struct.error, a UnicodeDecodeError, nor a value read past the buffer's end.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from codec_samples import CHANNEL_REENCODE, samples
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.codec import (
    U8,
    U16,
    U32,
    U64,
    DecodeError,
    EncodeError,
    Reader,
    Writer,
)
from failover.errors import PeerProtocolError, UsageError
from failover.replication import channel_wire, ops, resync_wire, tracking, verify
from failover.replication.tracking import ChangeSet, TrackingStateLost
from failover.replication.verify import TreeDigest
from failover.wire import FrameRejected

# --- the reader -----------------------------------------------------------------------------------


def test_a_read_past_the_end_names_format_field_and_offset() -> None:
    reader = Reader(b"\x00\x05abc", "sample")
    assert reader.number(U16, "length") == 5
    with pytest.raises(DecodeError) as caught:
        reader.take(5, "name")
    assert str(caught.value) == "sample.name: truncated: 5 bytes needed, 3 left (at byte 2)"
    assert isinstance(caught.value, PeerProtocolError)
    assert reader.pos == 2, "a failed read takes nothing"


def test_a_fixed_part_past_the_end_is_a_decode_error_not_a_struct_error() -> None:
    with pytest.raises(DecodeError, match=r"^sample\.header: truncated: 8 bytes needed, 7 left"):
        Reader(bytes(7), "sample").unpack(U64, "header")


def test_take_hands_out_views_without_a_copy() -> None:
    data = bytearray(b"abcdef")
    part = Reader(data, "sample").take(3, "x")
    data[0] = ord("z")
    assert bytes(part) == b"zbc"


def test_sized_refuses_a_length_beyond_its_limit_before_taking_anything() -> None:
    reader = Reader(U32.pack(2**32 - 1) + b"ab", "sample")
    with pytest.raises(DecodeError, match=r"sample\.blob: 4294967295 bytes, more than 10"):
        reader.sized(U32, "blob", 10)


def test_text_must_be_utf8_and_flags_zero_or_one() -> None:
    with pytest.raises(DecodeError, match=r"sample\.name: not UTF-8"):
        Reader(b"\x02\xff\xfe", "sample").text(U8, "name")
    with pytest.raises(DecodeError, match=r"sample\.full: 2 is not 0 or 1"):
        Reader(b"\x02", "sample").flag("full")


def test_end_refuses_trailing_bytes() -> None:
    reader = Reader(b"\x01\x02", "sample")
    reader.number(U8, "a")
    with pytest.raises(DecodeError, match=r"sample\.end: 1 trailing bytes after the last field"):
        reader.end()
    reader.rest()
    reader.end()


def test_reader_accepts_any_contiguous_buffer() -> None:
    words = memoryview(bytearray(b"\x00\x01\x00\x02")).cast("H")
    reader = Reader(words, "sample")
    assert reader.left == 4
    assert reader.number(U32, "x") in (0x00010002, 0x01000200)


_READS = st.lists(
    st.sampled_from(["u8", "u16", "u32", "u64", "flag", "take", "sized", "text", "end"]),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), _READS, st.integers(0, 50))
def test_any_reads_on_any_bytes_give_values_or_decode_errors(
    data: bytes, reads: list[str], size: int
) -> None:
    reader = Reader(data, "random")
    for read in reads:
        before = reader.pos
        try:
            if read == "u8":
                reader.number(U8, read)
            elif read == "u16":
                reader.number(U16, read)
            elif read == "u32":
                reader.number(U32, read)
            elif read == "u64":
                reader.number(U64, read)
            elif read == "flag":
                reader.flag(read)
            elif read == "take":
                assert len(reader.take(size, read)) == size
            elif read == "sized":
                reader.sized(U8, read, 30)
            elif read == "text":
                reader.text(U8, read)
            else:
                reader.end()
        except DecodeError as error:
            assert str(error).startswith(f"random.{read}"), error
        assert before <= reader.pos <= len(data)


# --- the writer -----------------------------------------------------------------------------------


def test_writer_parts_read_back_with_the_reader() -> None:
    writer = Writer("sample")
    writer.number(U8, "kind", 7)
    writer.sized(U16, "name", memoryview(b"alpha"))
    writer.text(U8, "root", "é")
    writer.pack(struct.Struct(">QI"), "fixed", 2**64 - 1, 3)
    reader = Reader(writer.getvalue(), "sample")
    assert reader.number(U8, "kind") == 7
    assert bytes(reader.sized(U16, "name")) == b"alpha"
    assert reader.text(U8, "root") == "é"
    assert reader.unpack(struct.Struct(">QI"), "fixed") == (2**64 - 1, 3)
    reader.end()


def test_a_value_that_does_not_fit_its_field_is_a_local_usage_error() -> None:
    writer = Writer("sample")
    with pytest.raises(EncodeError, match=r"^sample\.count: ") as caught:
        writer.number(U8, "count", 256)
    assert isinstance(caught.value, UsageError)
    with pytest.raises(EncodeError, match=r"^sample\.name length: "):
        writer.sized(U8, "name", b"x" * 256)
    assert writer.parts == []


def test_an_oversized_name_in_a_resync_item_is_refused_on_encode() -> None:
    with pytest.raises(UsageError, match=r"resync Dir\.child length"):
        resync_wire.encode_item(resync_wire.Dir("r", b"d", 0o755, (b"x" * 70_000,)))


# --- every format under hostile bytes -------------------------------------------------------------

_ALLOWED: tuple[type[Exception], ...] = (PeerProtocolError, TrackingStateLost)


def _decoders() -> dict[str, object]:
    out = {name: decode for name, (_, decode, _) in samples().items()}
    out["checkpoint"] = lambda data: tracking._decode_checkpoint(data, Path("checkpoint"))
    return out


DECODERS = _decoders()
ENCODED = {name: encode() for name, (encode, _, _) in samples().items()}
PEER_FORMATS = {
    "ops": ops.decode,
    "resync item": resync_wire.decode_item,
    "resync request": resync_wire.ResyncRequest.decode,
    "change set": ChangeSet.deserialise,
    "tree digest": TreeDigest.deserialise,
    "verify answer": verify.decode_answer,
}
_CHANNEL = channel_wire
PEER_FORMATS |= {  # the replication channel: every body, and the sealed message
    "channel HELLO": lambda b: _CHANNEL.decode_greeting(_CHANNEL.Kind.HELLO, memoryview(b)),
    "channel WELCOME": lambda b: _CHANNEL.decode_greeting(_CHANNEL.Kind.WELCOME, memoryview(b)),
    "channel ITEMS": lambda b: _CHANNEL.decode_items(memoryview(b), 1),
    "channel ACK": lambda b: _CHANNEL.decode_ack(memoryview(b)),
    "channel PROBE": lambda b: _CHANNEL.decode_probe(_CHANNEL.Kind.PROBE, memoryview(b)),
    "channel REPLY": lambda b: _CHANNEL.decode_reply(memoryview(b)),
    "channel message": lambda b: _CHANNEL.Opener(None).open(b, *_CHANNEL.Kind),
}


def _names_a_field(error: PeerProtocolError) -> bool:
    """``<format>.<field>: <problem>``: the part before the first colon has a dot."""
    return "." in str(error).split(":")[0]


def _decode(name: str, data: bytes) -> None:
    try:
        decoded = DECODERS[name](data)  # type: ignore[operator]
    except _ALLOWED as error:
        if name.startswith("channel-"):  # only a PeerProtocolError naming a field comes out
            assert isinstance(error, PeerProtocolError) and _names_a_field(error), error
    except AssertionError:
        assert name.startswith(("frame", "link")), name  # those samples' decode compares values
    else:
        if name in CHANNEL_REENCODE:  # accepted: exactly the bytes of what it decoded to
            assert CHANNEL_REENCODE[name](decoded) == data, f"{name}: {data.hex()}"


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_every_truncation_of_every_format_is_refused_cleanly(name: str) -> None:
    data = ENCODED[name]
    for cut in range(len(data)):
        _decode(name, data[:cut])


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_bytes_after_every_format_are_refused_or_read_as_its_own(name: str) -> None:
    for extra in (b"\x00", b"\x01\x00\x00\x00\x00", bytes(range(40))):
        _decode(name, ENCODED[name] + extra)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(ENCODED)), st.data())
def test_mutated_bytes_of_every_format_decode_or_are_refused_cleanly(
    name: str, data: st.DataObject
) -> None:
    raw = bytearray(ENCODED[name])
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decode(name, bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PEER_FORMATS)), st.binary(max_size=120))
def test_garbage_is_refused_by_every_peer_format_naming_a_field(name: str, blob: bytes) -> None:
    try:
        PEER_FORMATS[name](blob)  # type: ignore[operator]
    except PeerProtocolError as error:
        assert _names_a_field(error), f"no field named in {error}"


def test_a_verify_answer_naming_a_directory_twice_is_refused() -> None:
    tree = verify.TreeDigest(4096, {})
    once = verify.encode_answer({"r": tree})
    assert verify.decode_answer(once) == {"r": tree}
    with pytest.raises(DecodeError, match=r"verify answer\.name: 'r' answered twice"):
        verify.decode_answer(once + once)


def test_a_frame_refusal_is_still_a_frame_rejected() -> None:
    with pytest.raises(FrameRejected):
        DECODERS["frame"](ENCODED["frame"][:-1])  # type: ignore[operator]

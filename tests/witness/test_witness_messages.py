"""The witness's payloads: exact round trips, every out-of-bounds field refused by name."""

from __future__ import annotations

import pytest

from failover.codec import DecodeError, EncodeError
from failover.core.state import Generation
from failover.witness.messages import (
    MAX_REASON,
    Answer,
    Op,
    Outcome,
    Request,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
    release_of,
    witness_key,
)

REQUEST = Request(Op.ACQUIRE, 6.0, Generation(7, "beta"), Generation(6, "alpha"), True)
ANSWER = Answer("beta", 12, Outcome.GRANTED, Generation(8, "beta"), 5.5, "ok")


def test_round_trips() -> None:
    assert decode_request(encode_request(REQUEST)) == REQUEST
    assert decode_request(encode_request(Request(Op.RELEASE))) == Request(Op.RELEASE)
    named = release_of(Generation(7, "beta"), 2**64 - 1)
    assert decode_request(encode_request(named)) == named
    assert encode_request(named)[0] == 3  # its own payload type; acquire/renew keep type 1
    assert encode_request(Request(Op.RELEASE))[0] == 1  # the layout older nodes send
    assert decode_answer(encode_answer(ANSWER)) == ANSWER


def test_a_long_reason_is_cut_to_its_bound() -> None:
    answer = decode_answer(encode_answer(Answer("a", 1, Outcome.DENIED, reason="é" * MAX_REASON)))
    assert len(answer.reason.encode()) <= MAX_REASON


def test_the_witness_key_is_not_the_cluster_key() -> None:
    assert witness_key(b"k" * 32) != b"k" * 32
    assert witness_key(b"k" * 32) != witness_key(b"l" * 32)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"", "type"),
        (b"\x02" + encode_request(REQUEST)[1:], "type"),
        (b"\x01\x07" + encode_request(REQUEST)[2:], "op"),
        (b"\x01\x01\x02" + encode_request(REQUEST)[3:], "forced"),
        (b"\x01\x01\x00\x00\x00\x00\x00" + encode_request(REQUEST)[7:], "ttl_ms"),
        (b"\x01\x01\x00\xff\xff\xff\xff" + encode_request(REQUEST)[7:], "ttl_ms"),
        (encode_request(REQUEST)[:-1], "base.origin"),
        (encode_request(REQUEST) + b"\x00", "end"),
        (encode_request(release_of(Generation(7, "beta"), 5))[:-1], "grant_seq"),
        (
            b"\x03" + encode_request(release_of(Generation(7, "beta"), 5))[1:-8] + bytes(8),
            "grant_seq",
        ),
        (encode_request(release_of(Generation(7, "beta"), 5)) + b"\x00", "end"),
    ],
)
def test_bad_requests_name_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_request(payload)
    assert caught.value.field == field


def test_bad_answers_name_the_field() -> None:
    data = encode_answer(ANSWER)
    with pytest.raises(DecodeError, match="outcome"):
        decode_answer(data[:14] + b"\x09" + data[15:])  # type, node "beta", seq: 14 bytes
    with pytest.raises(DecodeError, match="end"):
        decode_answer(data + b"!")


def test_a_ttl_out_of_bounds_is_this_nodes_bug() -> None:
    with pytest.raises(EncodeError, match="ttl_ms"):
        encode_request(Request(Op.ACQUIRE, 7200.0))

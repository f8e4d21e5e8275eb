"""The heartbeat payload: round trip, strict validation, and properties over any input."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_fuzz_corpus import bad_payloads, codec

from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.errors import PeerProtocolError
from failover.wire import (
    _FIELDS,
    MAX_REASON,
    FrameKind,
    FrameRejected,
    Reason,
    decode_heartbeat,
    encode_heartbeat,
    printable_reason,
)

names = st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)
counters = st.integers(min_value=0, max_value=2**63 - 1)
generations = st.builds(Generation, counters, st.one_of(st.just(""), names))
statuses = st.builds(
    PeerStatus,
    node=names,
    state=st.sampled_from(State),
    substatus=st.sampled_from(SubStatus),
    generation=generations,
    synced_generation=generations,
    consistent=st.booleans(),
    fingerprint=st.from_regex(r"[A-Za-z0-9._:+/=-]{0,128}", fullmatch=True),
    handover=st.booleans(),
    has_data=st.booleans(),
    can_serve=st.booleans(),
    reason=st.text(
        st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
        | st.just(" "),
        max_size=MAX_REASON,
    ).filter(str.isprintable),
)

BASE = PeerStatus(
    node="alpha",
    state=State.PRIMARY,
    substatus=SubStatus.READY,
    generation=Generation(3, "alpha"),
    synced_generation=Generation(2, "beta"),
    consistent=True,
    fingerprint="0f" * 32,
    handover=False,
    reason="",
    view=(1733390000000000000, 7),
    peer_view=(1733390000000000001, 4),
)


def bad_payload(payload: bytes) -> None:
    with pytest.raises(FrameRejected) as caught:
        decode_heartbeat(payload)
    assert caught.value.reason == Reason.BAD_PAYLOAD


def document(**changes: object) -> bytes:
    doc = json.loads(encode_heartbeat(BASE))
    doc.update(changes)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_payload_is_compact_json_with_sorted_keys() -> None:
    assert encode_heartbeat(BASE) == (
        b'{"can_serve":true,"consistent":true,"fingerprint":"'
        + b"0f" * 32
        + b'","generation":[3,"alpha"],'
        b'"handover":false,"has_data":false,"last_state":null,"node":"alpha",'
        b'"peer_view":[1733390000000000001,4],"reason":"","state":"primary",'
        b'"substatus":"ready","synced_generation":[2,"beta"],"view":[1733390000000000000,7]}'
    )


def test_has_data_travels_and_must_be_a_boolean() -> None:
    # a first start: the peer learns whether our replicated directories held anything
    status = replace(BASE, has_data=True)
    assert decode_heartbeat(encode_heartbeat(status)) == status
    for bad in (1, "yes", None):
        with pytest.raises(FrameRejected, match="has_data is not a boolean"):
            decode_heartbeat(document(has_data=bad))


WIRE_DOC = Path(__file__).resolve().parents[2] / "docs" / "wire.md"


def test_the_documented_payload_is_the_decoders() -> None:
    """docs/wire.md's field table and example name exactly the fields decoded (a field
    added to the code but not to the table, as ``can_serve`` once was, fails here)."""
    section = WIRE_DOC.read_text(encoding="utf-8").split("## Heartbeat payload", 1)[1]
    table = set(re.findall(r"^\| `([a-z_]+)` \|", section.split("\n## ", 1)[0], re.M))
    assert table == _FIELDS
    example = re.search(r"^```json\n(.*)\n```", section, re.M)
    assert example is not None
    assert set(json.loads(example[1])) == _FIELDS
    words = {12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen", 16: "sixteen"}
    assert f"exactly these {words[len(_FIELDS)]} fields:" in section


def test_last_state_travels_and_rejects_unknown_states() -> None:
    status = PeerStatus(
        node="alpha",
        state=State.WAIT,
        substatus=SubStatus.READY,
        generation=Generation(2, "beta"),
        synced_generation=Generation(2, "beta"),
        consistent=True,
        fingerprint="",
        last_state=State.PRIMARY,
    )
    payload = encode_heartbeat(status)
    assert decode_heartbeat(payload).last_state is State.PRIMARY
    with pytest.raises(FrameRejected):
        decode_heartbeat(payload.replace(b'"last_state":"primary"', b'"last_state":"boss"'))


def test_round_trip_of_a_typical_status() -> None:
    status = PeerStatus(
        node="alpha",
        state=State.WAIT,
        substatus=SubStatus.TRANSIENT,
        generation=Generation(),
        synced_generation=Generation(),
        consistent=False,
        fingerprint="",
        handover=True,
        reason="données incohérentes: resync interrompu",
    )
    assert decode_heartbeat(encode_heartbeat(status)) == status


def test_whether_the_sender_can_serve_travels() -> None:
    # the serving node hands over only to a peer that announces it can serve
    status = replace(BASE, can_serve=False)
    payload = encode_heartbeat(status)
    assert b'"can_serve":false' in payload
    assert decode_heartbeat(payload).can_serve is False
    assert decode_heartbeat(encode_heartbeat(BASE)).can_serve is True


def test_the_document_helper_rebuilds_the_canonical_form() -> None:
    assert document() == encode_heartbeat(BASE)  # so the cases below differ only where meant


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"\xff",
        b"{" * 50_000,
        b"[" * 50_000,
        b"9" * 10_000,
        b"{}",
        document(node="Alpha"),
        document(node=""),
        document(node="a" * 65),
        document(node=1),
        document(state="serving"),
        document(state=None),
        document(substatus="READY"),
        document(generation=[-1, "alpha"]),
        document(generation=[2**63, "alpha"]),
        document(generation=[1.0, "alpha"]),
        document(generation=[True, "alpha"]),
        document(generation=[1, "alpha", 0]),
        document(generation={"counter": 1, "origin": "alpha"}),
        document(generation=[1, "Alpha"]),
        document(synced_generation=[1]),
        document(view=[1]),
        document(view=[1, 2, 3]),
        document(view=[-1, 2]),
        document(view=[1, 2**64]),
        document(view=[1, 2.0]),
        document(view=[False, 2]),
        document(view=None),
        document(peer_view={"epoch": 1, "counter": 2}),
        document(peer_view=[2**64, 0]),
        document(peer_view="1,2"),
        document(consistent=1),
        document(consistent="true"),
        document(handover=None),
        document(can_serve=None),
        document(can_serve="false"),
        encode_heartbeat(BASE).replace(b'"can_serve":true,', b""),
        encode_heartbeat(BASE).replace(b'"has_data":false,', b""),
        document(fingerprint="x" * 129),
        document(fingerprint="a b"),
        document(fingerprint=5),
        document(reason="r" * (MAX_REASON + 1)),
        document(reason="line\nbreak"),
        document(reason="bell\x07"),
        document(reason=["not", "text"]),
        document(extra=1),
        encode_heartbeat(BASE).replace(b',"reason":""', b""),
        encode_heartbeat(BASE).replace(b":", b": "),
        encode_heartbeat(BASE) + b"\n",
        encode_heartbeat(BASE).replace(b'"ready"', b'"\\u0072eady"'),
        b'{"node":"x",' + encode_heartbeat(BASE)[1:],
        encode_heartbeat(BASE).replace(b'"consistent":true', b'"consistent":NaN'),
        encode_heartbeat(BASE).replace(b"[3,", b"[Infinity,"),
        encode_heartbeat(BASE).replace(b"[3,", b"[1e400,"),
    ],
)
def test_a_malformed_payload_is_bad_payload(payload: bytes) -> None:
    bad_payload(payload)


def test_the_fuzz_corpus_bad_payloads_are_all_refused() -> None:
    source = bad_payloads(random.Random(1))
    for _ in range(300):
        payload = next(source)
        with pytest.raises(FrameRejected) as caught:
            status = decode_heartbeat(payload)
            if status.node != "alpha":  # the one mutation only Inbound can catch
                raise FrameRejected(Reason.BAD_PAYLOAD, "other node")
        assert caught.value.reason == Reason.BAD_PAYLOAD


def test_reason_is_made_printable_and_cut_on_the_way_out() -> None:
    assert printable_reason("ok: fine") == "ok: fine"
    assert printable_reason("two\nlines\x00") == "two lines "
    assert printable_reason("x" * 300) == "x" * MAX_REASON
    status = replace(BASE, reason="a\tb\ud800" + "y" * 400)
    decoded = decode_heartbeat(encode_heartbeat(status))
    assert decoded.reason == "a b " + "y" * (MAX_REASON - 4)


@pytest.mark.parametrize(
    "change",
    [
        {"node": "Alpha"},
        {"node": "a" * 65},
        {"fingerprint": "not hex!"},
        {"generation": Generation(-1, "alpha")},
        {"synced_generation": Generation(2**63, "alpha")},
        {"generation": Generation(1, "Bad")},
        {"view": (-1, 0)},
        {"peer_view": (0, 2**64)},
        {"view": (1,)},
    ],
)
def test_encode_refuses_a_status_no_peer_would_accept(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_heartbeat(replace(BASE, **change))  # type: ignore[arg-type]


@settings(max_examples=300)
@given(statuses)
def test_property_round_trip_of_any_valid_status(status: PeerStatus) -> None:
    assert decode_heartbeat(encode_heartbeat(status)) == status


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_property_decode_heartbeat_of_any_bytes_raises_only_bad_payload(data: bytes) -> None:
    try:
        decode_heartbeat(data)
    except FrameRejected as rejected:
        assert rejected.reason == Reason.BAD_PAYLOAD


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in json.loads(encode_heartbeat(BASE))  # the right keys, arbitrary values
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, json_values), st.booleans())
def test_property_decode_of_any_json_raises_only_bad_payload(value: object, sort: bool) -> None:
    payload = json.dumps(value, sort_keys=sort, separators=(",", ":")).encode()
    try:
        decode_heartbeat(payload)
    except FrameRejected as rejected:
        assert rejected.reason == Reason.BAD_PAYLOAD


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_property_frame_decode_of_any_bytes_raises_only_peer_protocol_error(data: bytes) -> None:
    try:
        codec().decode(data)
    except PeerProtocolError as rejected:
        assert isinstance(rejected, FrameRejected) and rejected.reason in set(Reason)


@settings(max_examples=500)
@given(
    st.binary(min_size=2, max_size=2),
    st.binary(min_size=1, max_size=1),
    st.binary(max_size=300),
)
def test_property_frame_decode_behind_a_valid_magic_raises_only_peer_protocol_error(
    kind_flags: bytes, version: bytes, rest: bytes
) -> None:
    try:
        codec().decode(b"FOVR" + version + kind_flags + rest)
    except PeerProtocolError as rejected:
        assert isinstance(rejected, FrameRejected)


@settings(max_examples=200)
@given(statuses, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_property_frame_round_trip_of_any_status(status: PeerStatus, inc: int, seq: int) -> None:
    payload = encode_heartbeat(status)
    frame = codec().decode(codec().encode(FrameKind.HEARTBEAT, status.node, inc, seq, payload))
    assert (frame.sender, frame.incarnation, frame.seq) == (status.node, inc, seq)
    assert decode_heartbeat(frame.payload) == status

"""Resync pieces without a network: the item and request codec, the pending-work rules."""

from __future__ import annotations

import contextlib

import pytest

from failover.errors import PeerProtocolError
from failover.replication.ops import Create, Rename, SetXattr, Write
from failover.replication.resync_pending import Pending
from failover.replication.resync_wire import (
    Absent,
    Begin,
    Chunk,
    Dir,
    End,
    File,
    FileCheck,
    Item,
    Link,
    Meta,
    ResyncRequest,
    ZoneChecks,
    decode_item,
    encode_item,
)
from failover.replication.tracking import ChangeSet, record_all

ZONE = 4096
CHANGES = record_all(
    [
        Write("r", b"a/f", 10_000, b"x" * 9000),
        Create("r", b"n", 0o644),
        SetXattr("r", b"m", b"user.a", b"1", 0),
    ],
    ZONE,
)
ITEMS: list[Item] = [
    Begin(False, ("r", "s"), CHANGES),
    Absent("r", b"gone"),
    Dir("r", b"", 0o755, (b"a", b"b c")),
    Link("r", b"l", b"../t"),
    File("r", b"a/f", 0o600),
    Chunk("r", b"a/f", 2, 5, 30_000, ((8192, b"data"), (16384, b"more"))),
    Meta("r", b"a", 0o700, 0, 0, -5, 10**18, ((b"user.a", b""), (b"user.b", b"v"))),
    End(),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_every_item_survives_a_round_trip(item: Item) -> None:
    assert decode_item(encode_item(item)) == item


@pytest.mark.parametrize("item", ITEMS[1:], ids=lambda item: type(item).__name__)
def test_damaged_items_are_only_ever_a_peer_error(item: Item) -> None:
    data = encode_item(item)
    for cut in range(len(data)):
        with pytest.raises(PeerProtocolError):
            decode_item(data[:cut])
    with pytest.raises(PeerProtocolError, match="after the last field"):
        decode_item(data + b"\0")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (encode_item(Absent("r", b"ok"))[:-2] + b"..", "path"),
        (encode_item(Dir("r", b"d", 0o755, (b"x",)))[:-1] + b"/", "child"),
        (encode_item(Link("r", b"l", b"t"))[:-1] + b"\0", "target"),
        (b"\x09", "unknown tag"),
    ],
)
def test_hostile_fields_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(PeerProtocolError, match=problem):
        decode_item(data)


def test_the_request_round_trips_and_rejects_garbage() -> None:
    request = ResyncRequest("gen-7", False, CHANGES)
    assert ResyncRequest.decode(request.encode()) == request
    with pytest.raises(PeerProtocolError, match="magic"):
        ResyncRequest.decode(b"XXXX" + request.encode()[4:])
    with pytest.raises(PeerProtocolError):
        ResyncRequest.decode(request.encode()[:-3])


def test_a_request_with_checks_round_trips_and_every_bad_field_is_named() -> None:
    digest = bytes(range(32))
    checks = ZoneChecks(
        ZONE,
        {
            ("r", b"a/f"): FileCheck(30_000, False, {2: digest, 3: digest, 6: digest}),
            ("r", b"n"): FileCheck(5000, True, {0: digest, 1: digest}),
        },
    )
    request = ResyncRequest("gen-7", False, CHANGES, checks)
    decoded = ResyncRequest.decode(request.encode())
    assert decoded == request
    assert decoded.checks is not None and decoded.checks.files == checks.files
    wire = request.encode()
    with pytest.raises(PeerProtocolError, match="truncated"):
        ResyncRequest.decode(wire[:-1])
    for bad, problem in [
        (FileCheck(30_000, False, {8: digest}), "run"),  # zone 8 is past the end
        (FileCheck(5000, True, {0: digest}), "whole"),  # whole, one zone missing
    ]:
        broken = ResyncRequest("g", False, CHANGES, ZoneChecks(ZONE, {("r", b"x"): bad}))
        with pytest.raises(PeerProtocolError, match=problem):
            ResyncRequest.decode(broken.encode())
    other_zone = ResyncRequest("g", False, CHANGES, ZoneChecks(8192, {}))
    with pytest.raises(PeerProtocolError, match="zone size"):
        ResyncRequest.decode(other_zone.encode())


def test_a_damaged_request_with_checks_is_only_ever_a_peer_error() -> None:
    """Every truncation and every single-byte change of a request with checks either
    decodes or raises ``PeerProtocolError`` (never another exception)."""
    digest = bytes(range(32))
    checks = ZoneChecks(
        ZONE, {("r", b"a/f"): FileCheck(9000, True, {0: digest, 1: digest, 2: digest})}
    )
    data = ResyncRequest("g", False, CHANGES, checks).encode()
    for cut in range(len(data)):
        with pytest.raises(PeerProtocolError):
            ResyncRequest.decode(data[:cut])
    for at in range(len(data)):
        for value in (0, 1, 0x7F, 0xFF):
            damaged = data[:at] + bytes([value]) + data[at + 1 :]
            with contextlib.suppress(PeerProtocolError):
                ResyncRequest.decode(damaged)


def planned() -> Pending:
    return Pending.planned("r", CHANGES, full=False)


def test_the_plan_lists_names_zones_and_metadata_and_the_order_is_names_files_meta() -> None:
    pending = planned()
    assert pending.names == {b"n"}
    assert list(pending.files) == [b"a/f"]
    assert pending.meta == {b"a/f", b"m"}
    assert pending.next_work() == ("name", b"n")
    pending.entry_done(b"n", File)
    assert pending.next_work() == ("file", b"a/f")
    pending.chunk_done(b"a/f", 2, 5, 30_000)
    pending.chunk_done(b"n", 0, 8, 30_000)
    assert pending.next_work() == ("meta", b"n")


def test_a_live_op_touching_pending_work_makes_its_paths_names_on_both_ends() -> None:
    pending = planned()
    assert not pending.live(Write("r", b"a/f", 0, b"x"))  # a planned file: applies strictly
    assert not pending.live(Create("r", b"other", 0o644))
    assert pending.live(Rename("r", b"a", b"b", 0))  # a directory holding planned zones
    assert {b"a", b"b"} <= pending.names
    assert pending.live(Write("r", b"b/f", 0, b"x"))  # under a pending name: best effort


def test_a_directory_reconciled_as_a_file_drops_the_work_beneath_it() -> None:
    pending = planned()
    pending.add_name(b"a")
    pending.entry_done(b"a", File)
    assert b"a/f" not in pending.files
    assert pending.files[b"a"].first() == (0, None)
    assert b"a/f" not in pending.meta


def test_zones_beyond_the_end_of_the_file_are_done_once_its_size_is_sent() -> None:
    pending = Pending.planned(
        "r",
        record_all([Write("r", b"f", 0, b"x"), Write("r", b"f", 1 << 20, b"y")], ZONE),
        full=False,
    )
    pending.chunk_done(b"f", 0, 1, 100)  # the file shrank to 100 bytes meanwhile
    assert b"f" not in pending.files


def test_a_full_plan_is_the_root_directory_itself() -> None:
    pending = Pending.planned("r", ChangeSet(ZONE), full=True)
    assert pending.next_work() == ("name", b"")
    pending.entry_done(b"", Dir, (b"x", b"y"))
    assert pending.names == {b"x", b"y"}
    assert not pending.meta

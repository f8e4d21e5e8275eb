"""Replication op records: codec round trip, the documented layout, every rejection."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.errors import PeerProtocolError, UsageError
from failover.replication import ops
from failover.replication.ops import (
    OP_CODES,
    OP_TYPES,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Link,
    Op,
    PathRejected,
    Rename,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
    decode,
    encode,
    encode_parts,
    paths_of,
    validate_path,
)

# --- strategies (also used by the applier fuzz test) ----------------------------------------------

roots = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1).filter(
    lambda s: len(s.encode()) <= ops.MAX_ROOT_NAME
)
components = st.binary(min_size=1, max_size=12).filter(
    lambda c: b"/" not in c and 0 not in c and c not in (b".", b"..")
)
long_components = st.sampled_from([b"n" * ops.MAX_COMPONENT, "é".encode() * 127])
paths = st.lists(components | long_components, min_size=1, max_size=6).map(b"/".join)
offsets = st.integers(0, 2**40) | st.just(0)
u32 = st.integers(0, 2**32 - 1)
ids = st.integers(-1, 2**32 - 2)
perms = st.integers(0, ops.MAX_PERMISSIONS)
times = st.integers(-(2**63), 2**63 - 1)
xattr_names = st.sampled_from([b"user.a", b"user.tag", b"trusted.t"]) | st.binary(
    min_size=1, max_size=ops.MAX_XATTR_NAME
).map(lambda b: b.replace(b"\0", b"_"))
targets = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\0", b"/"))
fallocate_modes = st.sampled_from(
    [
        0,
        ops.FALLOC_FL_KEEP_SIZE,
        ops.FALLOC_FL_PUNCH_HOLE | ops.FALLOC_FL_KEEP_SIZE,
        ops.FALLOC_FL_ZERO_RANGE,
        ops.FALLOC_FL_COLLAPSE_RANGE,
        ops.FALLOC_FL_INSERT_RANGE,
    ]
)


flags3 = st.sampled_from([0, 1, 2])


def ops_of(root: st.SearchStrategy[str], path: st.SearchStrategy[bytes]) -> st.SearchStrategy[Op]:
    """Every op type, on the given roots and paths."""
    return st.one_of(
        st.builds(ops.Create, root, path, perms),
        st.builds(ops.Write, root, path, offsets, st.binary(max_size=300)),
        st.builds(ops.Truncate, root, path, offsets),
        st.builds(ops.Fallocate, root, path, fallocate_modes, offsets, st.integers(1, 2**20)),
        st.builds(ops.Unlink, root, path),
        st.builds(ops.Rename, root, path, path, flags3),
        st.builds(ops.Mkdir, root, path, perms),
        st.builds(ops.Rmdir, root, path),
        st.builds(ops.Symlink, root, path, targets),
        st.builds(ops.Link, root, path, path),
        st.builds(ops.Chmod, root, path, perms),
        st.builds(ops.Chown, root, path, ids, ids),
        st.builds(ops.Utimens, root, path, times, times),
        st.builds(ops.SetXattr, root, path, xattr_names, st.binary(max_size=200), flags3),
        st.builds(ops.RemoveXattr, root, path, xattr_names),
        st.builds(ops.Fsync, root, path, st.booleans()),
    )


any_op = ops_of(roots, paths)


def rejection(data: bytes) -> PeerProtocolError:
    with pytest.raises(PeerProtocolError) as caught:
        decode(data)
    return caught.value


def encoded(code: int, fmt: str, *head: int, tail: bytes = b"") -> bytes:
    """A record built by hand, bypassing encode's checks."""
    return struct.pack(">B" + fmt, code, *head) + tail


# --- round trip and layout ------------------------------------------------------------------------


@given(any_op)
def test_every_op_type_round_trips(op: Op) -> None:
    data = encode(op)
    assert decode(data) == op
    assert type(decode(data)) is type(op)
    assert b"".join(encode_parts(op)) == data


@given(any_op)
def test_decode_accepts_memoryview_and_bytearray(op: Op) -> None:
    data = encode(op)
    assert decode(memoryview(data)) == op
    assert decode(bytearray(data)) == op


def test_each_type_has_its_own_op_code() -> None:
    assert set(OP_CODES) == set(OP_TYPES)
    assert len(set(OP_CODES.values())) == len(OP_TYPES)
    assert all(encode(op)[0] == OP_CODES[type(op)] for op in [Unlink("r", b"x")])


def test_write_layout_is_code_then_fixed_part_then_root_path_and_raw_data() -> None:
    data = encode(Write("db", b"a/f", 7, b"xyz"))
    assert data == b"\x02" + struct.pack(">BHQI", 2, 3, 7, 3) + b"db" + b"a/f" + b"xyz"


def test_chown_carries_unchanged_id_as_all_ones() -> None:
    data = encode(Chown("r", b"f", -1, 5))
    assert data == b"\x0c" + struct.pack(">BHII", 1, 1, 0xFFFFFFFF, 5) + b"rf"
    assert decode(data) == Chown("r", b"f", -1, 5)


def test_write_data_from_a_memoryview_is_sent_without_a_copy() -> None:
    payload = memoryview(bytearray(b"0123456789"))[2:8]
    parts = encode_parts(Write("r", b"f", 0, payload))  # type: ignore[arg-type]
    assert parts[-1] is payload
    assert decode(b"".join(parts)) == Write("r", b"f", 0, b"234567")


def test_paths_of_lists_both_paths_of_rename_and_link() -> None:
    assert paths_of(Rename("r", b"a", b"b", 0)) == (b"a", b"b")
    assert paths_of(Link("r", b"a", b"c/d")) == (b"a", b"c/d")
    assert paths_of(Fsync("r", b"x", False)) == (b"x",)


# --- framing rejections ---------------------------------------------------------------------------


def test_empty_buffer_is_rejected() -> None:
    assert "empty" in str(rejection(b""))


@pytest.mark.parametrize("code", [0, 17, 255])
def test_unknown_op_code_is_rejected(code: int) -> None:
    assert f"unknown op code {code}" in str(rejection(bytes([code]) + b"\x01" * 20))


def test_every_truncation_is_rejected() -> None:
    data = encode(SetXattr("root", b"dir/file", b"user.k", b"value", 0))
    for cut in range(1, len(data)):
        error = rejection(data[:cut])
        assert str(error).startswith("SetXattr.") and ": truncated" in str(error), cut


def test_trailing_bytes_are_rejected() -> None:
    assert "SetXattr.end: 1 trailing bytes after the last field" in str(
        rejection(encode(SetXattr("r", b"f", b"n", b"v", 0)) + b"\x00")
    )


def test_declared_length_beyond_the_buffer_is_truncation_not_allocation() -> None:
    data = encoded(2, "BHQI", 1, 1, 0, 2**32 - 1, tail=b"rf")
    assert "Write.data: truncated: 4294967295 bytes needed, 0 left" in str(rejection(data))


def test_oversized_write_data_is_rejected() -> None:
    size = ops.MAX_WRITE + 1
    data = encoded(2, "BHQI", 1, 1, 0, size, tail=b"rf" + bytes(size))
    assert "Write.data: data of" in str(rejection(data))


# --- field rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (b"", "empty root name"),
        (b"x" * 65, "more than 64"),
        (b"a/b", "'/' or NUL"),
        (b"a\x00", "'/' or NUL"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_invalid_root_names_are_rejected(name: bytes, problem: str) -> None:
    error = rejection(encoded(5, "BH", len(name), 1, tail=name + b"f"))
    assert str(error).startswith("Unlink.root: ") and problem in str(error)


def test_root_name_of_64_utf8_bytes_is_accepted() -> None:
    root = "é" * 32
    assert decode(encode(Unlink(root, b"f"))) == Unlink(root, b"f")


BAD_PATHS = [
    (b"", "empty path"),
    (b"/etc/passwd", "absolute"),
    (b"a/../../x", "component b'..'"),
    (b"..", "component b'..'"),
    (b"./a", "component b'.'"),
    (b"a//b", "component b''"),
    (b"a/", "component b''"),
    (b"a\x00b", "NUL"),
    (b"n" * 256, "256 bytes"),
    (b"a/" * 2048 + b"a", "more than 4096"),
]


@pytest.mark.parametrize(("path", "problem"), BAD_PATHS)
def test_validate_path_rejects(path: bytes, problem: str) -> None:
    with pytest.raises(PathRejected, match=problem.replace(".", r"\.")):
        validate_path(path)


@pytest.mark.parametrize(("path", "problem"), BAD_PATHS)
def test_decode_rejects_bad_paths_naming_the_field(path: bytes, problem: str) -> None:
    data = encoded(6, "BHHI", 1, 1, len(path), 0, tail=b"r" + b"a" + path)
    error = rejection(data)
    assert isinstance(error, PathRejected)
    assert str(error).startswith("Rename.new: ") and problem in str(error)


@pytest.mark.parametrize(
    "path", [b"a", b"a/b/c", b"...", b".a/b..", b"n" * 255, b"a/" * 2047 + b"ab", b"\xff/\x01"]
)
def test_validate_path_accepts(path: bytes) -> None:
    validate_path(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encoded(3, "BHQ", 1, 1, 2**63, tail=b"rf"), "Truncate.size: 9223372036854775808 outside"),
        (encoded(3, "BHQ", 1, 1, 2**64 - 1, tail=b"rf"), "Truncate.size: "),
        (encoded(1, "BHI", 1, 1, 0o10000, tail=b"rf"), "Create.mode: 4096 outside"),
        (encoded(6, "BHHI", 1, 1, 1, 3, tail=b"rab"), "Rename.flags: 3 is not one of"),
        (encoded(6, "BHHI", 1, 1, 1, 4, tail=b"rab"), "Rename.flags: 4 is not one of"),
        (encoded(4, "BHIQQ", 1, 1, 0x04, 0, 1, tail=b"rf"), "Fallocate.mode: unknown flags 0x4"),
        (encoded(4, "BHIQQ", 1, 1, 0, 2**63 - 1, 2, tail=b"rf"), "Fallocate.offset: ends at"),
        (encoded(2, "BHQI", 1, 1, 2**63 - 1, 2, tail=b"rfxy"), "Write.offset: ends at"),
        (encoded(14, "BHBII", 1, 1, 1, 0, 3, tail=b"rfn"), "SetXattr.flags: 3 is not one of"),
        (encoded(14, "BHBII", 1, 1, 0, 0, 0, tail=b"rf"), "SetXattr.name: empty xattr name"),
        (encoded(15, "BHB", 1, 1, 2, tail=b"rfa\x00"), "RemoveXattr.name: NUL byte"),
        (encoded(9, "BHH", 1, 1, 0, tail=b"rf"), "Symlink.target: empty symlink target"),
        (encoded(9, "BHH", 1, 1, 2, tail=b"rf/\x00"), "Symlink.target: NUL byte"),
        (encoded(16, "BHB", 1, 1, 2, tail=b"rf"), "Fsync.datasync: 2 is not 0 or 1"),
        (
            encoded(14, "BHBII", 1, 1, 1, ops.MAX_XATTR_VALUE + 1, 0, tail=b"rfn" + bytes(65537)),
            "SetXattr.value: xattr value of 65537 bytes",
        ),
    ],
)
def test_out_of_range_fields_are_rejected_naming_the_field(data: bytes, message: str) -> None:
    error = rejection(data)
    assert str(error).startswith(message), str(error)
    assert not isinstance(error, PathRejected)


def test_symlink_target_may_point_anywhere() -> None:
    for target in [b"/etc/passwd", b"../../..", b"a//b/./c"]:
        assert decode(encode(Symlink("r", b"l", target))) == Symlink("r", b"l", target)


def test_negative_times_are_valid_before_the_epoch() -> None:
    op = Utimens("r", b"f", -1, -(10**18))
    assert decode(encode(op)) == op


# --- encode refuses what decode would reject ------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Truncate("r", b"f", -1), "Truncate.size: -1 outside"),
        (Truncate("r", b"f", 2**63), "Truncate.size: "),
        (Create("r", b"/abs", 0o644), "Create.path: absolute"),
        (Create("", b"f", 0o644), "Create.root: empty root name"),
        (Create("r", "f", 0o644), "Create.path: expected bytes, got str"),  # type: ignore[arg-type]
        (Create("r", b"f", True), "Create.mode: expected int, got bool"),
        (Chown("r", b"f", -2, 0), "Chown.uid: -2 outside"),
        (Chown("r", b"f", 0, 2**32 - 1), "Chown.gid: "),
        (Fsync("r", b"f", 1), "Fsync.datasync: expected bool"),  # type: ignore[arg-type]
        (Fallocate("r", b"f", 0, 2**62, 2**62), "Fallocate.offset: ends at"),
        (Write("r", b"f", 0, "text"), "Write.data: expected bytes"),  # type: ignore[arg-type]
        (Utimens("r", b"f", 2**63, 0), "Utimens.atime_ns: "),
    ],
)
def test_encode_refuses_invalid_records_as_usage_errors(op: Op, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        encode(op)
    assert str(caught.value).startswith(message), str(caught.value)


def test_encode_refuses_what_is_not_an_op() -> None:
    with pytest.raises(UsageError, match="not a replication op: str"):
        encode("Write")  # type: ignore[arg-type]


# --- hostile input --------------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_peer_protocol_errors(data: bytes) -> None:
    try:
        op = decode(data)
    except PeerProtocolError:
        return
    assert decode(encode(op)) == op


@given(any_op, st.data())
def test_mutated_records_decode_to_valid_ops_or_are_rejected(op: Op, data: st.DataObject) -> None:
    raw = bytearray(encode(op))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        mutated = decode(bytes(raw))
    except PeerProtocolError:
        return
    for path in paths_of(mutated):
        validate_path(path)
    assert encode(mutated) == bytes(raw)


def test_check_rejects_what_decode_would_naming_the_field() -> None:
    with pytest.raises(PathRejected, match=r"^Write\.path: component b'\.\.'"):
        ops.check(Write("r", b"a/../b", 0, b""))
    with pytest.raises(PeerProtocolError, match=r"^Chown\.uid: -5 outside"):
        ops.check(Chown("r", b"f", -5, 0))
    with pytest.raises(PeerProtocolError, match="not a replication op: bytes"):
        ops.check(b"\x02")  # type: ignore[arg-type]
    ops.check(Write("r", b"a/b", 0, b""))

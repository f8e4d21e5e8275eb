"""verify's wire form under hostile bytes: only ever a PeerProtocolError naming the field."""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.errors import PeerProtocolError
from failover.replication.verify import EntryDigest, Kind, TreeDigest, digest_tree

Z = 512


def _sample() -> bytes:
    with tempfile.TemporaryDirectory() as top:
        root = Path(top)
        (root / "d" / "e").mkdir(parents=True)
        (root / "d" / "f").write_bytes(os.urandom(3 * Z + 1))
        (root / "g").write_bytes(b"")
        os.symlink("d/f", root / "l")
        os.setxattr(root / "d" / "f", "user.a", b"1")
        os.setxattr(root / "d" / "f", "user.b", b"2")
        return digest_tree(root, Z).serialise()


SAMPLE = _sample()


def decode_or_peer_error(data: bytes) -> None:
    try:
        tree = TreeDigest.deserialise(data)
    except PeerProtocolError as error:
        assert str(error).startswith("tree digest.")
        return
    # Anything accepted encodes back to the very same bytes (canonical form).
    assert tree.serialise(zones=tree.has_zones) == data


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_digests_give_only_peer_errors(data: st.DataObject) -> None:
    raw = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw) - 1))
        raw[where] = data.draw(st.integers(0, 255))
    decode_or_peer_error(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1))
def test_truncated_digests_give_only_peer_errors(cut: int) -> None:
    with pytest.raises(PeerProtocolError):
        TreeDigest.deserialise(SAMPLE[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_gives_only_peer_errors(blob: bytes) -> None:
    decode_or_peer_error(blob)
    decode_or_peer_error(SAMPLE[:30] + blob)


def forged(entries: dict[bytes, EntryDigest], zone_size: int = Z) -> bytes:
    """A well-formed encoding (correct summary) of whatever entries are given."""
    return TreeDigest(zone_size, entries).serialise()


DIR = EntryDigest(Kind.DIR, 0o755, 0, 0, 0, 0)
EMPTY = hashlib.blake2b(b"", digest_size=16).digest()
FILE = EntryDigest(Kind.FILE, 0o644, 0, 0, 1, 0, content=EMPTY)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({b"a/b": FILE}, "parent is not a directory"),
        ({b"a": FILE, b"a/b": FILE}, "parent is not a directory"),
        ({b"a": EntryDigest(Kind.DIR, 0o755, 0, 0, 2, 0)}, "link count"),
        ({b"a": EntryDigest(Kind.FIFO, 0o644, 0, 0, 1, 5)}, "size: 5 for a fifo"),
        ({b"a": EntryDigest(Kind.SYMLINK, 0o777, 0, 0, 1, 3)}, "target: missing"),
        ({b"a": EntryDigest(Kind.FILE, 0o644, 0, 0, 1, 1, rdev=3)}, "device"),
        ({b"a": EntryDigest(Kind.FILE, 0o644, 0, 0, 1, 10, zones=b"")}, "zones: truncated"),
        ({b"a": EntryDigest(Kind.DIR, 0o755, 0, 0, 0, 0, xattrs=((b"", b"0" * 16),))}, "name"),
    ],
)
def test_inconsistent_digests_are_refused_by_field(
    entries: dict[bytes, EntryDigest], message: str
) -> None:
    with pytest.raises(PeerProtocolError, match=message):
        TreeDigest.deserialise(forged(entries))


def test_header_fields_are_named() -> None:
    raw = bytearray(SAMPLE)
    with pytest.raises(PeerProtocolError, match="bad magic"):
        TreeDigest.deserialise(b"XXXX" + SAMPLE[4:])
    raw[4] = 9
    with pytest.raises(PeerProtocolError, match="unknown version 9"):
        TreeDigest.deserialise(bytes(raw))
    raw = bytearray(SAMPLE)
    raw[6:10] = struct.pack(">I", 100)
    with pytest.raises(PeerProtocolError, match="zone size 100"):
        TreeDigest.deserialise(bytes(raw))
    with pytest.raises(PeerProtocolError, match="trailing"):
        TreeDigest.deserialise(SAMPLE + b"\0")
    summary_at = 4 + 1 + 1 + 4 + 4 + 4
    raw = bytearray(SAMPLE)
    raw[summary_at] ^= 1
    with pytest.raises(PeerProtocolError, match="summary"):
        TreeDigest.deserialise(bytes(raw))


def test_hostile_paths_are_refused() -> None:
    for path in (b"/etc", b"../x", b"a/./b", b"a\0b", b"a//b"):
        raw = forged({b"p": FILE}).replace(b"\x00\x01p", struct.pack(">H", len(path)) + path)
        with pytest.raises(PeerProtocolError, match="path"):
            TreeDigest.deserialise(raw)

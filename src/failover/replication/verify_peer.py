"""Verify: both copies compared by digest, only digests crossing the network.

The primary asks (``verify_peer``) through its live ``ReplicationSender``: a
verify control record (``verify_request``) goes down the replication stream,
and the secondary answers it (``answer_verify``) with the digests of its copy at
the record's place in the stream. ``PeerVerifier`` checks that a session to
the peer runs and keeps the last verdict for ``status`` (until a clean verify
or a resync).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

import anyio

from failover.errors import PeerProtocolError, UsageError
from failover.replication.channel import ReplicationSender
from failover.replication.directories import Directories
from failover.replication.sending import Sending
from failover.replication.verify import (
    Differences,
    TreeDigest,
    compare,
    decode_answer,
    digest_tree,
    encode_answer,
)


class PeerVerifier:
    """Verify through ``sending``'s live session; ``last`` is the last verdict."""

    def __init__(self, sending: Sending, directories: Directories, zone_size: int) -> None:
        self.sending, self.directories, self.zone_size = sending, directories, zone_size
        self.last: dict[str, Any] | None = None

    async def verify(self) -> dict[str, Any]:
        """The report of ``verify_peer``; raises ``UsageError`` when no session
        to the peer runs."""
        sender = self.sending.sender
        if sender is None or sender.broken is not None:
            raise UsageError(
                "verify needs a replicating primary: this node sends nothing to its peer"
            )
        report, differences = await verify_peer(
            sender, self.directories, self.zone_size, self.sending.peer
        )
        self.last = {"at": report["at"], "in_sync": report["in_sync"], "differences": differences}
        return report

    def forget(self) -> None:
        """The peer was just made equal: an older verdict is moot."""
        self.last = None

    def status(self) -> dict[str, Any]:
        return {"verified": self.last}


async def verify_peer(
    sender: ReplicationSender, directories: Directories, zone_size: int, peer: str
) -> tuple[dict[str, Any], int]:
    """Compare both copies by digest: the report, and how many paths differ.

    Pass 1 digests everything on both sides, the peer at the request's place
    in the replication stream; a path written meanwhile may differ only
    because the two digests were taken at different moments, so pass 2
    digests the differing paths again with every change held back while
    the request is queued and the local digest taken. What still differs
    is reported.
    """
    first = await _verify_pass(sender, directories, zone_size, peer, None)
    suspects = {name: d.paths() for name, d in first.items() if d}
    final = (
        await _verify_pass(sender, directories, zone_size, peer, suspects) if suspects else first
    )
    differences = {name: d for name, d in final.items() if d}
    report = {
        "at": time.time(),
        "in_sync": not differences,
        "directories": {name: d.to_dict() for name, d in final.items()},
        "text": "\n".join(d.render(name) for name, d in sorted(final.items()) if d)
        or "both copies are identical",
    }
    return report, sum(len(d.paths()) for d in differences.values())


async def _verify_pass(
    sender: ReplicationSender,
    directories: Directories,
    zone_size: int,
    peer: str,
    subset: Mapping[str, tuple[bytes, ...]] | None,
) -> dict[str, Differences]:
    request = verify_request(subset)
    locks = list(directories.order_locks().values())
    fds = directories.backing_fds()

    def local() -> tuple[int, dict[str, TreeDigest]]:
        with contextlib.ExitStack() as held:
            if subset is not None:  # small: hold every change back meanwhile
                for lock in locks:
                    held.enter_context(lock)
            seq = sender.ask(request)
            if subset is None:
                held.close()
            mine = {
                name: digest_tree(
                    fd, zone_size, paths=None if subset is None else subset.get(name, ())
                )
                for name, fd in fds.items()
            }
        return seq, mine

    seq, mine = await anyio.to_thread.run_sync(local)
    answer = await anyio.to_thread.run_sync(sender.answer, seq, VERIFY_TIMEOUT)
    if answer is None:
        raise UsageError(f"verify: {peer} did not answer (session {sender.broken or 'alive'})")
    theirs = decode_answer(answer)
    if set(theirs) != set(mine):
        raise PeerProtocolError(f"verify: {peer} digested {sorted(theirs)}, not {sorted(mine)}")
    return {name: compare(mine[name], theirs[name]) for name in mine}


VERIFY_TIMEOUT = 600.0
"""Seconds the peer may take to digest its copy (about 1 GiB/s of hashing)."""
VERIFY_TAG = b"FOVF1"


def verify_request(subset: Mapping[str, tuple[bytes, ...]] | None) -> bytes:
    """A verify control record: everything, or these paths of these directories."""
    if subset is None:
        return VERIFY_TAG + b"*"
    body = {name: [path.hex() for path in paths] for name, paths in subset.items()}
    return VERIFY_TAG + json.dumps(body, sort_keys=True).encode()


def answer_verify(roots: Mapping[str, int], zone_size: int, record: bytes) -> bytes:
    """The secondary's answer to a verify record: the digests of its copy, at the
    record's place in the stream. Bad records are the peer's protocol error."""
    if not record.startswith(VERIFY_TAG):
        raise PeerProtocolError(f"control record {record[:16]!r} is not a verify request")
    rest = record[len(VERIFY_TAG) :]
    subset: dict[str, tuple[bytes, ...]] | None = None
    if rest != b"*":
        try:
            parsed = json.loads(rest)
            subset = {str(n): tuple(bytes.fromhex(p) for p in ps) for n, ps in parsed.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise PeerProtocolError(f"verify request: malformed subset ({exc})") from None
        unknown = set(subset) - set(roots)
        if unknown:
            raise PeerProtocolError(f"verify request: unknown directories {sorted(unknown)}")
    digests = {}
    for name, fd in sorted(roots.items()):
        try:
            paths = None if subset is None else subset.get(name, ())
            digests[name] = digest_tree(fd, zone_size, paths=paths)
        except UsageError as exc:
            raise PeerProtocolError(f"verify request for {name}: {exc}") from None
    return encode_answer(digests)

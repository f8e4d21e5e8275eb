"""Hostile datagrams get no grant, change nothing, and are logged with what and where."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from failover.core.state import Generation
from failover.wire import FrameCodec, FrameKind
from failover.witness.messages import MAX_DATAGRAM, Op, Outcome, Request, encode_request
from failover.witness.service import LOG_BURST, LOG_WINDOW, MAX_NODES, Witness
from failover.witness.store import ClusterStore

from .witness_support import (
    KEY,
    OTHER_KEY,
    SOURCE,
    TTL,
    acquire,
    make_witness,
    release,
    session,
)

G1 = Generation(1, "alpha")
ACQUIRE = Request(Op.ACQUIRE, TTL, G1)


def refused(witness: Witness, data: bytes, reason: str) -> None:
    """``data`` is dropped unanswered, logged with ``reason`` and the source, and the
    record (memory and disk) is as before."""
    before = witness.cluster("prod").record
    on_disk = ClusterStore(witness.state_dir, "prod").read()
    with capture_logs() as logs:
        assert witness.handle(data, SOURCE, 1.0) is None
    assert witness.stats[reason] >= 1
    assert any(
        entry["event"] == "witness request refused"
        and entry["reason"] == reason
        and entry["source"] == SOURCE
        for entry in logs
    ), logs
    assert witness.cluster("prod").record == before
    assert ClusterStore(witness.state_dir, "prod").read() == on_disk


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 100, b"FOVR", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256))]
)
def test_garbage(tmp_path: Path, data: bytes) -> None:
    witness = make_witness(tmp_path)
    reason = "truncated" if data in (b"", b"FOVR") else "bad_magic"
    refused(witness, data, reason)


def test_oversize(tmp_path: Path) -> None:
    refused(make_witness(tmp_path), b"FOVR" + b"\x00" * MAX_DATAGRAM, "too_large")


def test_another_key_gets_nothing(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    _, data = session("alpha", key=OTHER_KEY).frame(ACQUIRE)
    refused(witness, data, "bad_mac")


def test_a_heartbeat_frame_under_the_cluster_key_is_no_request(tmp_path: Path) -> None:
    """Witness frames are signed with a key derived from the cluster key: a frame
    signed with the cluster key itself (a heartbeat) does not verify."""
    witness = make_witness(tmp_path)
    data = FrameCodec("prod", KEY).encode(
        FrameKind.HEARTBEAT, "alpha", 1, 1, encode_request(ACQUIRE), echo=witness.incarnation
    )
    refused(witness, data, "bad_mac")


def test_unknown_cluster(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    _, data = session("alpha", cluster="other").frame(ACQUIRE)
    refused(witness, data, "unknown_cluster")


def test_authentic_frame_with_a_bad_payload(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    client = session("alpha")
    client.echo = witness.incarnation
    for n, payload in enumerate((b"", b"\x01\x09", encode_request(ACQUIRE) + b"x"), start=1):
        data = client.codec.encode(
            FrameKind.HEARTBEAT, "alpha", 1, n, payload, echo=witness.incarnation
        )
        refused(witness, data, "bad_payload")


def test_replayed_request(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    client = session("alpha")
    client.echo = witness.incarnation
    seq, data = client.frame(ACQUIRE)
    reply = witness.handle(data, SOURCE, 0.0)
    assert reply is not None and client.accept(reply, seq) is not None
    release(witness, client, 0.5)
    refused(witness, data, "replayed")  # the recorded grant request does not take it again
    assert witness.cluster("prod").record.holder is None


def test_a_release_recorded_before_a_restart_frees_nothing(tmp_path: Path) -> None:
    """The replay guard forgets at a restart; the echo does not: a request made
    for the previous run of the witness is answered "ask again", nothing else."""
    witness = make_witness(tmp_path)
    alpha = session("alpha")
    acquire(witness, alpha, 0.0, wanted=G1)
    seq, recorded = alpha.frame(Request(Op.RELEASE))  # captured on the way, never delivered
    restarted = make_witness(tmp_path, now=100.0)
    reply = restarted.handle(recorded, SOURCE, 100.0)
    assert reply is not None
    answer = alpha.accept(reply, seq)
    assert answer is not None and answer.outcome is Outcome.RETRY
    assert restarted.cluster("prod").record.holder == "alpha"
    saved = ClusterStore(tmp_path, "prod").read()
    assert saved is not None and saved.record.holder == "alpha"


def test_an_answer_is_taken_only_by_the_request_it_answers(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    alpha.echo = beta.echo = witness.incarnation
    seq, data = alpha.frame(ACQUIRE)
    reply = witness.handle(data, SOURCE, 0.0)
    assert reply is not None
    assert beta.accept(reply, seq) is None  # addressed to another node (same incarnation)
    assert alpha.accept(reply + b"x", seq) is None  # damaged
    assert alpha.accept(reply, seq) is not None
    assert alpha.accept(reply, seq) is None  # replayed
    _, data = alpha.frame(ACQUIRE)
    reply = witness.handle(data, SOURCE, 0.5)
    assert reply is not None
    assert alpha.accept(reply, seq) is None  # the answer to another request


def test_too_many_nodes(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    for n in range(MAX_NODES):
        assert acquire(witness, session(f"node-{n}"), 0.0, wanted=G1) is not None
    _, data = session("one-more").frame(ACQUIRE)
    refused(witness, data, "too_many_nodes")


def test_a_flood_is_counted_whole_and_logged_in_part(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    with capture_logs() as logs:
        for _ in range(LOG_BURST * 5):
            assert witness.handle(b"junk", SOURCE, 1.0) is None
        _, data = session("alpha").frame(ACQUIRE)
        assert witness.handle(data, SOURCE, 1.0) is not None  # still answers the nodes
        assert witness.handle(b"junk", SOURCE, 1.0 + LOG_WINDOW) is None
    assert witness.stats["bad_magic"] == LOG_BURST * 5 + 1
    refusals = [entry for entry in logs if entry["event"] == "witness request refused"]
    assert len(refusals) == LOG_BURST + 1
    [summary] = [entry for entry in logs if entry["event"] == "witness refusals not logged"]
    assert summary["reason"] == "bad_magic" and summary["count"] == LOG_BURST * 4

"""The witness grants by the core's rule only, durably, and keeps its grant across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.core.state import INITIAL, Generation
from failover.witness.messages import Op, Outcome, Request, release_of
from failover.witness.store import ClusterStore, WitnessStateError

from .witness_support import SOURCE, TTL, acquire, make_witness, release, renew, send, session

G1 = Generation(1, "alpha")


def test_one_grant_at_a_time_for_two_nodes(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    granted = acquire(witness, alpha, 0.0, wanted=G1)
    assert granted is not None and granted.outcome is Outcome.GRANTED
    assert granted.generation == G1
    refused = acquire(witness, beta, 1.0, wanted=Generation(1, "beta"), base=INITIAL)
    assert refused is not None and refused.outcome is Outcome.DENIED
    assert "held by alpha" in refused.reason
    # even with the newest data, beta waits until alpha's lease ran out
    refused = acquire(witness, beta, TTL - 0.01, wanted=Generation(2, "beta"), base=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED
    later = acquire(witness, beta, TTL, wanted=Generation(2, "beta"), base=G1)
    assert later is not None and later.outcome is Outcome.GRANTED
    assert later.generation == Generation(2, "beta")
    assert witness.cluster("prod").record.holder == "beta"


def test_a_node_behind_is_refused_even_when_the_lease_is_free(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    assert release(witness, alpha, 1.0) is not None
    stale = acquire(witness, beta, 2.0, wanted=Generation(1, "beta"), base=INITIAL)
    assert stale is not None and stale.outcome is Outcome.DENIED
    assert "not the newest" in stale.reason
    forced = acquire(witness, beta, 2.0, wanted=Generation(1, "beta"), forced=True)
    assert forced is not None and forced.outcome is Outcome.GRANTED
    assert forced.generation > G1  # above the newest ever granted


def test_renewal_extends_the_holders_lease_only(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    acquire(witness, alpha, 0.0, wanted=G1)
    renewed = renew(witness, alpha, 4.0)
    assert renewed is not None and renewed.outcome is Outcome.GRANTED
    assert renewed.expires_in == pytest.approx(TTL)
    assert renewed.generation == G1
    lost = renew(witness, beta, 4.5)
    assert lost is not None and lost.outcome is Outcome.LOST
    # alpha's renewal at 4 holds the lease until 10: beta is refused at 9
    refused = acquire(witness, beta, 9.0, wanted=Generation(2, "beta"), base=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED


def test_release_frees_the_lease_of_its_holder_only(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    acquire(witness, alpha, 0.0, wanted=G1)
    assert release(witness, beta, 1.0) is not None
    assert witness.cluster("prod").record.holder == "alpha"
    done = release(witness, alpha, 1.0)
    assert done is not None and done.outcome is Outcome.RELEASED
    granted = acquire(witness, beta, 1.5, wanted=Generation(2, "beta"), base=G1)
    assert granted is not None and granted.outcome is Outcome.GRANTED


def test_a_release_delayed_past_a_new_grant_frees_nothing(tmp_path: Path) -> None:
    """S1: a release names the grant it ends. One delayed (past the node's
    wait) until the same node was granted again leaves that node holding,
    so the peer is still refused while the node serves."""
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    ending = alpha.release()
    assert ending is not None and ending.grant_seq == alpha.seq and ending.wanted == G1
    _, delayed = alpha.frame(ending)  # the network holds it
    again = acquire(witness, alpha, 2.5, wanted=G1, base=G1)
    assert again is not None and again.outcome is Outcome.GRANTED
    assert witness.handle(delayed, SOURCE, 3.0) is not None  # it arrives now
    assert witness.cluster("prod").record.holder == "alpha"
    refused = acquire(witness, beta, 3.5, wanted=Generation(2, "beta"), base=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED
    assert "held by alpha" in refused.reason
    done = release(witness, alpha, 4.0)  # the release of the grant alpha holds
    assert done is not None and done.outcome is Outcome.RELEASED
    assert witness.cluster("prod").record.holder is None


@pytest.mark.parametrize(
    "names",
    [
        "nothing",  # an older node's release (type-1 layout)
        "another generation",  # the right seq, another generation
        "another run",  # the right grant's numbers, from another run of the node
    ],
)
def test_a_release_that_does_not_name_the_grant_held_changes_nothing(
    tmp_path: Path, names: str
) -> None:
    witness = make_witness(tmp_path)
    alpha = session("alpha")
    alpha.echo = witness.incarnation
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    assert alpha.grant == (1, G1)
    before = witness.cluster("prod").record
    sender, request = alpha, release_of(G1, 1)
    if names == "nothing":
        request = Request(Op.RELEASE)
    elif names == "another generation":
        request = release_of(Generation(2, "alpha"), 1)
    else:
        sender = session("alpha", run=2)
        sender.echo = witness.incarnation
    answer = send(witness, sender, request, 1.0)
    assert answer is not None and answer.outcome is Outcome.LOST
    assert "not yours any more" in answer.reason
    assert witness.cluster("prod").record == before
    saved = ClusterStore(tmp_path, "prod").read()
    assert saved is not None and saved.record.holder == "alpha"


def test_a_delayed_retry_of_an_acquire_keeps_the_grant_the_node_heard(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha = session("alpha")
    alpha.echo = witness.incarnation
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    seq, early = alpha.frame(Request(Op.ACQUIRE, TTL, G1, G1))  # its answer is lost
    assert acquire(witness, alpha, 0.5, wanted=G1, base=G1) is not None  # the retry is heard
    assert alpha.grant == (seq + 1, G1)
    assert witness.handle(early, SOURCE, 0.6) is not None  # the first try arrives late
    done = release(witness, alpha, 1.0)
    assert done is not None and done.outcome is Outcome.RELEASED


def test_a_restarted_witness_frees_the_grant_its_holder_names(tmp_path: Path) -> None:
    witness = make_witness(tmp_path)
    alpha = session("alpha")
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    restarted = make_witness(tmp_path, now=500.0)
    done = release(restarted, alpha, 501.0)
    assert done is not None and done.outcome is Outcome.RELEASED
    assert restarted.cluster("prod").record.holder is None


def test_a_restarted_witness_keeps_the_grant(tmp_path: Path) -> None:
    """The grant is on disk when its answer leaves: a witness restarted right
    after it (a new monotonic clock) still refuses the peer for a whole ttl."""
    witness = make_witness(tmp_path)
    alpha, beta = session("alpha"), session("beta")
    assert acquire(witness, alpha, 0.0, wanted=G1) is not None
    restarted = make_witness(tmp_path, now=500.0)
    assert restarted.incarnation > witness.incarnation
    refused = acquire(restarted, beta, 500.0 + TTL - 0.01, wanted=Generation(2, "beta"), base=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED
    assert "held by alpha" in refused.reason
    renewed = renew(restarted, alpha, 503.0)  # the holder renews through the restart
    assert renewed is not None and renewed.outcome is Outcome.GRANTED
    granted = acquire(restarted, beta, 503.0 + TTL, wanted=Generation(2, "beta"), base=G1)
    assert granted is not None and granted.outcome is Outcome.GRANTED


def test_a_grant_that_cannot_be_saved_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = make_witness(tmp_path)
    alpha = session("alpha")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise WitnessStateError("disk full")

    monkeypatch.setattr(ClusterStore, "save", disk_full)
    refused = acquire(witness, alpha, 0.0, wanted=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED
    assert "cannot save" in refused.reason
    assert witness.cluster("prod").record.holder is None
    monkeypatch.undo()
    assert ClusterStore(tmp_path, "prod").read() is None


def test_clusters_are_independent(tmp_path: Path) -> None:
    witness = make_witness(tmp_path, prod=b"p" * 32, test=b"t" * 32)
    prod = session("alpha", cluster="prod", key=b"p" * 32)
    test = session("alpha", cluster="test", key=b"t" * 32)
    other = session("beta", cluster="test", key=b"t" * 32)
    assert acquire(witness, prod, 0.0, wanted=G1) is not None
    granted = acquire(witness, other, 0.0, wanted=Generation(1, "beta"))
    assert granted is not None and granted.outcome is Outcome.GRANTED
    refused = acquire(witness, test, 0.0, wanted=G1)
    assert refused is not None and refused.outcome is Outcome.DENIED
    assert ClusterStore(tmp_path, "prod").read() is not None
    assert ClusterStore(tmp_path, "test").read() is not None

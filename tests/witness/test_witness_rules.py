"""The witness grants by the core's rule only, durably, and keeps its grant across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.core.state import INITIAL, Generation
from failover.witness.messages import Outcome
from failover.witness.store import ClusterStore, WitnessStateError

from .witness_support import TTL, acquire, make_witness, release, renew, session

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

"""LinkHandshake: a connection's mutual proof of the cluster key (docs/wire.md).

Invariants: an end is ``proven`` only after the other end sent, on this
connection, an HMAC under the cluster key over both of this connection's
nonces, both node names and the other end's role; any other message fails
the handshake; and an acceptor proves nothing to an end that has not proved
the key first.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from wire_fuzz_corpus import CLUSTER, KEY, OTHER_KEY, codec

from failover.errors import PeerProtocolError
from failover.wire import (
    HELLO_SIZE,
    LINK_MAGIC,
    PROOF_SIZE,
    HandshakeFailed,
    LinkAuth,
    LinkHandshake,
    cluster_id,
)

N1, N2, N3 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def auth(
    local: str = "alpha", peer: str = "beta", key: bytes = KEY, cluster: str = CLUSTER
) -> LinkAuth:
    made = codec(key, cluster).link_auth(local, peer)
    assert made is not None
    return made


def run(dialer: LinkHandshake, acceptor: LinkHandshake) -> tuple[bytes, bytes]:
    """Both ends exchange hellos, then the dialer proves, then the acceptor: the two proofs."""
    assert acceptor.receive(dialer.hello) is None  # nothing for a stranger but the hello
    proof_d = dialer.receive(acceptor.hello)
    assert proof_d is not None
    proof_a = acceptor.receive(proof_d)
    assert proof_a is not None and acceptor.proven
    assert dialer.receive(proof_a) is None
    return proof_d, proof_a


def test_two_nodes_of_one_cluster_prove_the_key_to_each_other() -> None:
    dialer = auth("alpha", "beta").handshake(dialer=True)
    acceptor = auth("beta", "alpha").handshake(dialer=False)
    assert not dialer.proven and not acceptor.proven
    run(dialer, acceptor)
    assert dialer.proven and acceptor.proven


def test_messages_have_the_documented_layout() -> None:
    alpha = auth().handshake(dialer=True, nonce=N1)
    assert alpha.hello == LINK_MAGIC + bytes([1, 1]) + cluster_id(CLUSTER) + N1
    assert len(alpha.hello) == HELLO_SIZE
    proof = alpha.receive(auth("beta", "alpha").handshake(dialer=False, nonce=N2).hello)
    signed = (
        b"failover heartbeat link proof\x00"
        + cluster_id(CLUSTER)
        + b"D"
        + N2  # the verifier's nonce
        + N1  # the prover's nonce
        + b"\x05alpha\x04beta"
    )
    assert proof == LINK_MAGIC + bytes([1, 2]) + hmac.new(KEY, signed, hashlib.sha256).digest()
    assert len(proof) == PROOF_SIZE


def test_another_key_never_proves() -> None:
    # Another key at the acceptor: it refuses the dialer's proof and gives none.
    dialer = auth("alpha", "beta").handshake(dialer=True)
    acceptor = auth("beta", "alpha", key=OTHER_KEY).handshake(dialer=False)
    assert acceptor.receive(dialer.hello) is None
    proof_d = dialer.receive(acceptor.hello)
    assert proof_d is not None
    with pytest.raises(HandshakeFailed):
        acceptor.receive(proof_d)
    # Another key at the dialer: the acceptor's proof (made with the right key) fails there.
    acceptor = auth("beta", "alpha").handshake(dialer=False, nonce=N2)
    _, acceptors_proof = run(auth().handshake(dialer=True, nonce=N1), acceptor)
    dialer = auth("alpha", "beta", key=OTHER_KEY).handshake(dialer=True, nonce=N1)
    dialer.receive(acceptor.hello)
    with pytest.raises(HandshakeFailed):
        dialer.receive(acceptors_proof)
    assert not dialer.proven


def test_a_recorded_proof_is_useless_on_another_connection() -> None:
    beta = auth("beta", "alpha")
    first = auth().handshake(dialer=True, nonce=N1)
    recorded_hello = first.hello
    acceptor = beta.handshake(dialer=False, nonce=N2)
    acceptor.receive(recorded_hello)
    recorded_proof = first.receive(acceptor.hello)
    assert recorded_proof is not None
    # A new connection from the recorder: beta picks a new nonce, the old proof fails.
    again = beta.handshake(dialer=False, nonce=N3)
    again.receive(recorded_hello)
    with pytest.raises(HandshakeFailed, match="does not verify"):
        again.receive(recorded_proof)


def test_an_acceptor_gives_no_proof_to_an_end_that_has_not_proved_the_key() -> None:
    acceptor = auth("beta", "alpha").handshake(dialer=False)
    stranger = auth("alpha", "beta", key=OTHER_KEY).handshake(dialer=True)
    assert acceptor.receive(stranger.hello) is None
    with pytest.raises(HandshakeFailed):
        acceptor.receive(stranger.receive(acceptor.hello) or b"")


def test_a_proof_made_as_an_acceptor_does_not_pass_as_a_dialers() -> None:
    # What a relay between two accepted connections would need (the role is signed):
    # alpha's proof as an acceptor over nonces (N2, N1), shown to beta accepting with N2.
    alpha = auth().handshake(dialer=False, nonce=N1)
    beta_dialling = auth("beta", "alpha").handshake(dialer=True, nonce=N2)
    _, acceptors_proof = run(beta_dialling, alpha)
    beta = auth("beta", "alpha").handshake(dialer=False, nonce=N2)
    beta.receive(alpha.hello)
    with pytest.raises(HandshakeFailed, match="does not verify"):
        beta.receive(acceptors_proof)


def test_a_node_cannot_be_made_to_prove_to_itself() -> None:
    alpha = auth().handshake(dialer=False, nonce=N1)
    with pytest.raises(HandshakeFailed, match="own nonce"):
        alpha.receive(alpha.hello)
    # alpha dialling and reflected back to alpha accepting: the proof names alpha as prover.
    other = auth().handshake(dialer=True, nonce=N2)
    mine = auth().handshake(dialer=False, nonce=N1)
    mine.receive(other.hello)
    proof = other.receive(mine.hello)
    assert proof is not None
    with pytest.raises(HandshakeFailed):
        mine.receive(proof)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"FOVA",
        b"FOVR\x02" + bytes(60),  # a heartbeat frame before the proof
        LINK_MAGIC + bytes([2, 1]) + cluster_id(CLUSTER) + N2,  # another version
        LINK_MAGIC + bytes([1, 2]) + bytes(32),  # a proof before the hello
        LINK_MAGIC + bytes([1, 9]) + bytes(40),  # an unknown message
        LINK_MAGIC + bytes([1, 1]) + cluster_id("other") + N2,  # another cluster
        LINK_MAGIC + bytes([1, 1]) + cluster_id(CLUSTER) + N2 + b"x",  # too long
    ],
)
def test_anything_but_a_hello_first_fails(message: bytes) -> None:
    with pytest.raises(HandshakeFailed) as caught:
        auth().handshake(dialer=True, nonce=N1).receive(message)
    assert isinstance(caught.value, PeerProtocolError)


def test_after_the_hello_only_a_proof_and_after_the_proof_nothing() -> None:
    dialer = auth().handshake(dialer=True)
    acceptor = auth("beta", "alpha").handshake(dialer=False)
    dialer.receive(acceptor.hello)
    with pytest.raises(HandshakeFailed, match="expected a proof"):
        dialer.receive(acceptor.hello)
    dialer = auth().handshake(dialer=True)
    acceptor = auth("beta", "alpha").handshake(dialer=False)
    run(dialer, acceptor)
    with pytest.raises(HandshakeFailed, match="over"):
        dialer.receive(acceptor.hello)


def test_insecure_codecs_have_no_link_proof_and_bad_arguments_are_refused() -> None:
    assert codec(key=None).link_auth("alpha", "beta") is None
    with pytest.raises(ValueError):
        auth("alpha", "alpha")
    with pytest.raises(ValueError):
        auth("Alpha", "beta")
    with pytest.raises(ValueError):
        auth().handshake(dialer=True, nonce=b"short")
    with pytest.raises(ValueError):
        LinkAuth(b"", cluster_id(CLUSTER), "alpha", "beta")


def test_fresh_nonces_differ() -> None:
    hellos = {auth().handshake(dialer=True).hello for _ in range(100)}
    assert len(hellos) == 100

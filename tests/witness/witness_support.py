"""A witness and its clients, driven datagram by datagram (no sockets, no clock)."""

from __future__ import annotations

from pathlib import Path

from failover.core.state import INITIAL, Generation
from failover.runtime.arbitrator import WitnessSession
from failover.witness.messages import Answer, Op, Outcome, Request, witness_codec
from failover.witness.service import Witness

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TTL = 6.0
SOURCE = "192.0.2.7:40000"


def make_witness(state: Path, now: float = 0.0, **keys: bytes) -> Witness:
    return Witness(state, keys or {"prod": KEY}, now=now)


def session(node: str, *, cluster: str = "prod", key: bytes = KEY, run: int = 1) -> WitnessSession:
    return WitnessSession(witness_codec(cluster, key), node, run)


def send(witness: Witness, client: WitnessSession, request: Request, now: float) -> Answer | None:
    """One request, its answer (a RETRY is asked again once, as the client does)."""
    for _ in range(2):
        seq, data = client.frame(request)
        reply = witness.handle(data, SOURCE, now)
        if reply is None:
            return None
        answer = client.accept(reply, seq)
        assert answer is not None, "an answer the client does not take"
        if answer.outcome is not Outcome.RETRY:
            return answer
    return answer


def acquire(
    witness: Witness,
    client: WitnessSession,
    now: float,
    *,
    wanted: Generation,
    base: Generation = INITIAL,
    forced: bool = False,
) -> Answer | None:
    return send(witness, client, Request(Op.ACQUIRE, TTL, wanted, base, forced), now)


def renew(witness: Witness, client: WitnessSession, now: float) -> Answer | None:
    return send(witness, client, Request(Op.RENEW, TTL), now)


def release(witness: Witness, client: WitnessSession, now: float) -> Answer | None:
    """The release of the grant ``client`` holds (as the node sends it), or an
    unnamed one (an older node's) when it holds none."""
    return send(witness, client, client.release() or Request(Op.RELEASE), now)

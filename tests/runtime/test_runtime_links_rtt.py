"""The heartbeat round trip of a link (``RoundTrip``, docs/wire.md "Round trip").

The invariant: a sample is ``now - sent_at(seq) - held`` for a seq this link
sent in this run and that was not answered yet, within ``[0, MAX_RTT]``, and
only frames ``Inbound`` accepted feed it. The estimator is tested with an
explicit clock; the hostile cases go through a real ``LinkRunner`` receive
loop and ``Inbound`` on trio's virtual clock, so every time is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from test_runtime_links import HB, POLL, cluster, paired
from trio.testing import MockClock

from failover.core import events as ev
from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.errors import TransportError
from failover.runtime import daemon
from failover.runtime.links import MAX_RTT, LinkRunner, RoundTrip
from failover.wire import (
    MAX_HELD_US,
    OLDEST_VERSION,
    PROBES,
    Frame,
    FrameCodec,
    FrameKind,
    FrameRejected,
    Inbound,
    Outbound,
    Reason,
)

CLUSTER = "rtt"
KEY = bytes(range(32))
ALPHA_RUN = 1_000
BETA_RUN = 2_000


def frame(incarnation: int, seq: int) -> Frame:
    return Frame(FrameKind.HEARTBEAT, "alpha", incarnation, seq, b"")


# --- the estimator, on an explicit clock ---------------------------------------------------


def test_a_sample_is_the_time_since_the_send_minus_the_peer_s_hold() -> None:
    rtt = RoundTrip()
    rtt.sent(1, 10.0)
    rtt.sent(2, 10.5)
    assert rtt.answer(1, 2_000, 10.012) == pytest.approx(0.010)
    assert rtt.answer(2, 100_000, 10.7) == pytest.approx(0.1)
    assert rtt.latest == pytest.approx(0.1) and rtt.samples == 2 and not rtt.dropped


def test_a_hold_rounded_up_to_the_microsecond_is_a_round_trip_of_zero() -> None:
    rtt = RoundTrip()
    rtt.sent(1, 0.0)
    rtt.sent(2, 1.0)
    assert rtt.answer(1, 1_000, 0.0009996) == 0.0  # held 999.6 µs, sent as 1000
    assert rtt.answer(2, 1_000, 1.000998) is None  # 2 µs short: more than rounding
    assert dict(rtt.dropped) == {"negative": 1}


def test_nothing_echoed_is_no_sample_and_no_drop() -> None:
    rtt = RoundTrip()
    rtt.sent(1, 0.0)
    assert rtt.answer(0, 0, 1.0) is None
    assert rtt.samples == 0 and not rtt.dropped


def test_each_bad_echo_is_dropped_under_its_reason() -> None:
    rtt = RoundTrip(ring=4, max_rtt=MAX_RTT)
    for seq in range(1, 7):
        rtt.sent(seq, float(seq))
    assert rtt.answer(99, 0, 7.0) is None  # never sent
    assert rtt.answer(2, 0, 7.0) is None  # sent, but older than the ring of 4
    assert rtt.answer(5, 3_000_000, 7.0) is None  # held 3 s of a 2 s round trip
    assert rtt.answer(6, 0, 6.0 + MAX_RTT + 0.5) is None  # past MAX_RTT
    assert rtt.answer(6, 0, 6.25) == pytest.approx(0.25)
    assert rtt.answer(6, 0, 6.5) is None  # answered already
    assert rtt.answer(5, 0, 6.5) is None  # older than one answered
    assert dict(rtt.dropped) == {"unknown_seq": 2, "negative": 1, "absurd": 1, "repeated": 2}
    assert rtt.samples == 1 and rtt.latest == pytest.approx(0.25)


def test_the_echo_sent_is_the_newest_frame_heard_and_its_hold() -> None:
    rtt = RoundTrip()
    assert rtt.echo(1.0, ALPHA_RUN) == (0, 0)  # nothing heard yet
    rtt.heard(frame(ALPHA_RUN, 7), 5.0)
    rtt.heard(frame(ALPHA_RUN, 6), 5.1)  # an older frame, late on this link: not newer
    assert rtt.echo(5.25, ALPHA_RUN) == (7, 250_000)
    rtt.heard(frame(ALPHA_RUN, 9), 6.0)
    assert rtt.echo(6.0, ALPHA_RUN) == (9, 0)
    # The peer restarted (its seqs start again): a seq of its previous run is not echoed.
    assert rtt.echo(6.5, ALPHA_RUN + 1) == (0, 0)
    rtt.heard(frame(ALPHA_RUN + 1, 1), 7.0)
    assert rtt.echo(7.5, ALPHA_RUN + 1) == (1, 500_000)
    # A hold too long for the field is not sent rather than cut.
    assert rtt.echo(7.0 + (MAX_HELD_US + 1) / 1e6, ALPHA_RUN + 1) == (0, 0)


# --- hostile frames through a link's receive loop and Inbound -------------------------------


class Script:
    """A channel whose frames come from callables, each after its delay (virtual time)."""

    def __init__(self, steps: list[tuple[float, Callable[[], bytes]]]) -> None:
        self.steps = list(steps)

    async def receive(self) -> bytes:
        if not self.steps:
            raise TransportError("end of the script")
        delay, make = self.steps.pop(0)
        await anyio.sleep(delay)
        return make()

    async def send(self, frame: bytes) -> None:
        raise AssertionError("not sent in this test")

    async def aclose(self) -> None:
        pass


def status(node: str) -> PeerStatus:
    return PeerStatus(
        node=node,
        state=State.SECONDARY,
        substatus=SubStatus.READY,
        generation=Generation(1, "alpha"),
        synced_generation=Generation(1, "alpha"),
        consistent=True,
        fingerprint="",
    )


class Pair:
    """beta's link ``lan`` (the runner under test) and alpha, its peer, as frames."""

    def __init__(self) -> None:
        codec = FrameCodec(CLUSTER, KEY)
        self.beta = Outbound(codec, "beta", BETA_RUN, echo=ALPHA_RUN)
        self.inbound = Inbound(codec, self.beta, peer="alpha")
        self.alpha = Outbound(codec, "alpha", ALPHA_RUN, echo=BETA_RUN)
        self.forger = Outbound(FrameCodec(CLUSTER, bytes(32)), "alpha", ALPHA_RUN, echo=BETA_RUN)
        self.events: list[ev.Event] = []
        self.samples: list[float] = []
        self.runner = LinkRunner(
            "lan",
            cast(Any, None),
            cast(Any, None),
            cast(Any, None),
            inbound=self.inbound,
            report=self._report,
            send_timeout=1.0,
        )
        self.runner.on_rtt = self.samples.append

    async def _report(self, event: ev.Event) -> None:
        self.events.append(event)

    def beta_sends(self) -> int:
        """beta builds and offers its next frame on lan now; returns its seq."""
        echo = self.runner.rtt_echo(self.beta.echo)
        frames = self.beta.heartbeats(status("beta"), ["lan"], {"lan": echo})
        self.runner.offer(frames["lan"], self.beta.link_seqs["lan"])
        return self.beta.link_seqs["lan"]

    def alpha_echoes(self, seq: int, held_us: int, sender: Outbound | None = None) -> bytes:
        out = self.alpha if sender is None else sender
        return out.heartbeats(status("alpha"), ["lan"], {"lan": (seq, held_us)})["lan"]

    async def play(self, steps: list[tuple[float, Callable[[], bytes]]]) -> None:
        with pytest.raises(TransportError):
            await self.runner._receive_loop(cast(Any, Script(steps)))


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.mark.anyio
async def test_hostile_echoes_and_replayed_or_forged_frames_give_no_sample() -> None:
    pair = Pair()
    seq = pair.beta_sends()
    replayed: list[bytes] = []

    def valid() -> bytes:  # a 25 ms round trip: 10 ms on the way, 5 ms held, 10 ms back
        data = pair.alpha_echoes(seq, 5_000)
        replayed.append(data)
        return data

    never_sent = seq + 1_000
    steps: list[tuple[float, Callable[[], bytes]]] = [
        (0.001, lambda: pair.alpha_echoes(never_sent, 0)),  # a seq beta never sent
        (0.001, lambda: pair.alpha_echoes(seq, MAX_HELD_US)),  # held longer than it exists
        (0.001, lambda: pair.alpha_echoes(seq, 1, sender=pair.forger)),  # another key
        (0.022, valid),  # accepted 25 ms after the send
        (0.010, lambda: replayed[0]),  # the same frame again: refused by Inbound
        (0.001, lambda: pair.alpha_echoes(seq, 0)),  # the seq again: answered already
    ]
    await pair.play(steps)
    assert pair.samples == [pytest.approx(0.020)]
    assert pair.runner.rtt.latest == pytest.approx(0.020)
    assert dict(pair.runner.rtt.dropped) == {"unknown_seq": 1, "negative": 1, "repeated": 1}
    assert pair.inbound.stats.as_dict() == {"accepted": 4, "bad_mac": 1, "replayed": 1}
    # Every accepted frame still reached the core: the round trip only watches.
    assert len(pair.events) == 4


@pytest.mark.anyio
async def test_an_echo_answered_after_more_than_max_rtt_is_absurd() -> None:
    pair = Pair()
    seq = pair.beta_sends()
    await pair.play([(MAX_RTT + 1.0, lambda: pair.alpha_echoes(seq, 0))])
    assert pair.samples == [] and dict(pair.runner.rtt.dropped) == {"absurd": 1}


@pytest.mark.anyio
async def test_the_echo_beta_sends_is_alpha_s_frame_held_until_the_send() -> None:
    pair = Pair()
    await pair.play([(0.0, lambda: pair.alpha_echoes(0, 0))])
    heard = pair.alpha.link_seqs["lan"]
    await anyio.sleep(0.0375)
    pair.beta_sends()
    decoded = pair.inbound.codec.decode(cast(bytes, pair.runner._pending))
    assert (decoded.rtt_seq, decoded.rtt_held_us) == (heard, 37_500)


# --- a rolling upgrade: two real daemons, one of them speaking version 4 only ----------------


class _Version4Outbound(Outbound):
    def _version(self, seq: int) -> int:
        return OLDEST_VERSION


class _Version4Inbound(Inbound):
    def accept(self, data: bytes) -> tuple[Frame, PeerStatus] | None:
        if data[4:5] != bytes((OLDEST_VERSION,)):  # what a version 4 decoder does
            self._drop(FrameRejected(Reason.BAD_VERSION, f"version {data[4]}"))
            return None
        return super().accept(data)


def _beta_speaks_version_4(monkeypatch: pytest.MonkeyPatch) -> None:
    def outbound(codec: FrameCodec, name: str, incarnation: int) -> Outbound:
        kind = _Version4Outbound if name == "beta" else Outbound
        return kind(codec, name, incarnation)

    def inbound(codec: FrameCodec, local: Outbound, *, peer: str) -> Inbound:
        kind = _Version4Inbound if local.sender == "beta" else Inbound
        return kind(codec, local, peer=peer)

    monkeypatch.setattr(daemon, "Outbound", outbound)
    monkeypatch.setattr(daemon, "Inbound", inbound)


@pytest.mark.anyio
async def test_a_daemon_of_version_5_and_one_of_version_4_pair_and_keep_their_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _beta_speaks_version_4(monkeypatch)
    async with cluster(tmp_path) as c:
        alpha = await c.start("alpha")
        beta = await c.start("beta")
        await paired(c)
        # beta drops alpha's frames made before alpha heard it, then PROBES probes at most
        at_pairing = beta.status()["frames"]["dropped"]["bad_version"]
        down: set[tuple[str, str]] = set()
        end = anyio.current_time() + 60 * HB  # past alpha's probes (8 seqs apart, 2 links)
        while anyio.current_time() < end:
            for node in (alpha, beta):
                for link in node.status()["links"]:
                    if not link["up"]:
                        down.add((node.name, link["name"]))
            await anyio.sleep(POLL)
        assert down == set(), "a link went down during the mixed-version run"
        probes = beta.status()["frames"]["dropped"]["bad_version"] - at_pairing
        print(f"\nbeta dropped {at_pairing} frames until paired, then {probes} probes")
        assert 0 <= probes <= PROBES
        received = beta.status()["frames"]["received"]
        await anyio.sleep(20 * HB)
        assert beta.status()["frames"]["received"] > received + 20
        assert beta.status()["frames"]["dropped"] == {"bad_version": at_pairing + probes}
        assert set(alpha.status()["frames"]["dropped"]) <= {"wrong_echo"}
        for link in alpha.status()["links"]:  # a version 4 peer echoes nothing
            assert link["rtt"] is None and link["rtt_dropped"] == {}, link

"""Regressions for what issue 9 saw an operator hit, replayed on two real cores
in the simulated cluster (each fails on the table before issue 9).

The harness plays the part of a naive runtime on purpose: the TCP checker of
the application's virtual IP and port runs on both nodes all the time, so it
is down wherever the application does not run (the runtime of issue 9 runs a
``serving`` checker only where the application started; the core must be
right whatever arrives when). A start script can be made to fail on a node.
Only the API that existed before issue 9 is used, so the file runs on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import CheckerPolicy, State
from failover.model.sim import NAMES, Cluster, ClusterConfig, StepInfo

WEB = CheckerPolicy("web", when="serving", action="restart")  # TCP connect to VIP:port


@dataclass
class Pair:
    """The simulated pair, with the naive checker and start scripts that fail."""

    broken: set[int] = field(default_factory=set)
    checkers: tuple[CheckerPolicy, ...] = (WEB,)
    cluster: Cluster = field(init=False)
    reported_down: list[bool] = field(default_factory=lambda: [False, False])
    records: list[fx.TransitionRecord] = field(default_factory=list)
    generations_seen: set[tuple[int, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.cluster = Cluster(ClusterConfig())
        for node in self.cluster.nodes:
            node.settings = replace(node.settings, checkers=self.checkers)
        original = self.cluster._execute

        def execute(k: int, effect: fx.Effect, info: StepInfo) -> ev.Event | None:
            if isinstance(effect, fx.StartApp | fx.RestartApp) and k in self.broken:
                self.cluster._set_host(k, app_running=False)
                return ev.AppFailed("start script exited 1")
            return original(k, effect, info)

        self.cluster._execute = execute  # type: ignore[method-assign]
        self.cluster.load(self.cluster.booted())
        self.check()

    def _absorb(self, info: StepInfo) -> None:
        self.records.extend(info.records)
        for host in self.cluster.world.hosts:
            if host.core is not None:
                generation = host.core.metadata.generation
                self.generations_seen.add((generation.counter, generation.origin))

    def handle(self, i: int, event: ev.Event) -> None:
        info = StepInfo(f"{event.kind} {NAMES[i]}")
        self.cluster._handle(i, event, info)
        self._absorb(info)

    def check(self) -> None:
        """The checker reports where its state changed: down where nothing runs."""
        for i, host in enumerate(self.cluster.world.hosts):
            if not self.checkers:
                return
            down = not host.app_running
            if host.core is not None and down != self.reported_down[i]:
                self.reported_down[i] = down
                self.handle(i, ev.CheckerDown("web", "refused") if down else ev.CheckerUp("web"))

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            self._absorb(self.cluster.apply("tick"))
            self.check()

    def apply(self, label: str) -> None:
        self._absorb(self.cluster.apply(label))
        self.check()

    def kill_for_good(self, i: int) -> None:
        """The application dies on ``i`` and can no longer start there."""
        self.broken.add(i)
        self.cluster._set_host(i, app_running=False)
        self.handle(i, ev.AppFailed("killed"))
        self.check()

    def state(self, i: int) -> State | None:
        return self.cluster.state(i)

    def serving_with_app(self) -> list[int]:
        return [
            i
            for i, host in enumerate(self.cluster.world.hosts)
            if host.core is not None and host.core.state.serving and host.app_running
        ]

    def describe(self) -> str:
        return ", ".join(
            f"{name}={'down' if h.core is None else f'{h.core.state.value} ({h.core.reason})'}"
            for name, h in zip(NAMES, self.cluster.world.hosts, strict=True)
        )


def test_the_tcp_checker_of_the_virtual_ip_cannot_keep_both_nodes_waiting() -> None:
    pair = Pair()
    pair.run(20)
    assert {pair.state(0), pair.state(1)} == {State.PRIMARY, State.SECONDARY}, pair.describe()
    assert len(pair.serving_with_app()) == 1, pair.describe()


def test_a_start_script_failing_on_one_node_does_not_loop_and_the_peer_serves() -> None:
    # (no checker: the start script is missing on alpha, which check-config accepted)
    pair = Pair(broken={0}, checkers=())  # alpha wins the first tie by name
    pair.run(60)
    assert pair.serving_with_app() == [1], pair.describe()
    assert pair.state(0) is State.SECONDARY, pair.describe()
    # bounded work: a handful of generations and records, not one per round
    assert len(pair.generations_seen) <= 3, sorted(pair.generations_seen)
    assert len(pair.records) <= 40, len(pair.records)
    # and it stays put: no record in the last half
    before = len(pair.records)
    pair.run(30)
    assert len(pair.records) == before, [r.reason for r in pair.records[before:]]


def test_killing_the_application_after_a_forced_prim_moves_service_to_the_peer() -> None:
    pair = Pair()
    pair.run(5)
    pair.apply("prim alpha")  # what an operator did to get out of the deadlock
    pair.run(10)
    [server] = pair.serving_with_app()
    other = 1 - server
    pair.kill_for_good(server)
    pair.run(30)
    assert pair.serving_with_app() == [other], pair.describe()
    assert State.WAIT not in (pair.state(0), pair.state(1)), pair.describe()

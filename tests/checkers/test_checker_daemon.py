"""How the daemon tells its checkers what the node does: after each decision of
the core, whether it serves and whether its application is started, as the
core's effects (StartApp, RestartApp, StopApp) and the outcomes it handled
(AppStarted, AppFailed, AppStopped) say."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from failover.config import load_config
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import State
from failover.runtime.daemon import Daemon


class Phases:
    """Stands for the CheckerSet: records what the daemon tells it."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def update(self, *, serving: bool, app_started: bool) -> None:
        self.seen.append((serving, app_started))


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    document = {
        "cluster": {"name": "t", "insecure": True, "state_dir": str(tmp_path)},
        "links": [{"name": "lan", "transport": "udp"}],
        "nodes": {
            node: {"links": {"lan": {"address": "127.0.0.1", "port": port}}}
            for node, port in (("alpha", 7801), ("beta", 7802))
        },
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(document))
    made = Daemon(load_config(path), "alpha", handle_signals=False)
    made.node = SimpleNamespace(state=State.ALONE)  # type: ignore[assignment]
    made.checkers = Phases()  # type: ignore[assignment]
    return made


STEPS: list[tuple[ev.Event, list[fx.Effect], bool]] = [
    # event handled, effects of that step -> the application counts as started
    (ev.Start(), [fx.StartApp()], False),
    (ev.Timer(), [], False),  # the start script runs
    (ev.AppStarted(), [], True),
    (ev.CheckerDown("app", "dead"), [fx.RestartApp()], False),  # a restart stops them
    (ev.AppStarted(), [], True),
    (ev.AppFailed("it died"), [], False),  # the application died
    (ev.Timer(), [fx.StartApp()], False),
    (ev.Swap(), [fx.StopApp()], False),  # a stop queued behind the start
    (ev.AppStarted(), [], False),  # the start's late outcome: it is being stopped
    (ev.AppStopped(), [], False),
    (ev.Timer(), [fx.StartApp()], False),
    (ev.AppFailed("start script failed"), [], False),
    (ev.Timer(), [fx.StartApp()], False),
    (ev.AppStarted(), [fx.StopApp()], False),  # started, and stopped in the same step
]


def test_the_application_counts_as_started_from_its_start_until_a_stop_or_restart(
    daemon: Daemon,
) -> None:
    phases = daemon.checkers
    assert isinstance(phases, Phases)
    for event, effects, _ in STEPS:
        daemon._follow_application(event, effects)
    assert [started for _, started in phases.seen] == [started for *_, started in STEPS]
    assert all(serving for serving, _ in phases.seen)


def test_a_node_that_does_not_serve_tells_its_checkers_so(daemon: Daemon) -> None:
    phases = daemon.checkers
    assert isinstance(phases, Phases)
    daemon.node = SimpleNamespace(state=State.SECONDARY)  # type: ignore[assignment]
    daemon._follow_application(ev.Timer(), [])
    assert phases.seen == [(False, False)]

"""How the daemon tells its checkers what the node does: after each decision of
the core, whether it serves and whether its application has started with
nothing under way, both read from the core (``State.serving``,
``Node.app_started``: tests/core/test_app_failures.py shows when that holds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from failover.config import load_config
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
    made.checkers = Phases()  # type: ignore[assignment]
    return made


CORE_SAYS = [
    # the core's state, whether its application has started -> what the checkers hear
    (State.ALONE, False, (True, False)),
    (State.ALONE, True, (True, True)),
    (State.PRIMARY, True, (True, True)),
    (State.PRIMARY, False, (True, False)),
    (State.SECONDARY, False, (False, False)),
    (State.WAIT, False, (False, False)),
]


def test_the_checkers_hear_what_the_core_says(daemon: Daemon) -> None:
    phases = daemon.checkers
    assert isinstance(phases, Phases)
    for state, app_started, _ in CORE_SAYS:
        daemon.node = SimpleNamespace(state=state, app_started=app_started)  # type: ignore[assignment]
        daemon._follow_application()
    assert phases.seen == [heard for *_, heard in CORE_SAYS]

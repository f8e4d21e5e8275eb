"""structlog configuration: JSON lines with the transition fields an operator reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from failover.runtime.logging import configure_logging


@pytest.fixture(autouse=True)
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_a_transition_is_one_json_line_with_from_event_to(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "node.log"
    configure_logging(log_file)
    log = structlog.get_logger("test").bind(node="beta")
    log.info(
        "transition",
        core_event="peer_lost",
        to="alone",
        effects=["start_app"],
        reason="alpha lost on every link: taking over",
        generation="2:beta",
        substatus="transient",
        **{"from": "secondary"},
    )
    log.debug("not written at info level")
    [line] = log_file.read_text().splitlines()
    record = json.loads(line)
    assert list(record)[:7] == ["timestamp", "level", "msg", "node", "from", "event", "to"]
    assert record["msg"] == "transition" and record["event"] == "peer_lost"
    assert record["level"] == "info" and record["effects"] == ["start_app"]


def test_debug_level_writes_debug_records(tmp_path: Path) -> None:
    log_file = tmp_path / "node.log"
    configure_logging(log_file, level="debug")
    structlog.get_logger().debug("heartbeat not sent", link="lan")
    assert json.loads(log_file.read_text())["link"] == "lan"


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="verbose")

"""Logs under systemd: with stdout the journal's stream (``JOURNAL_STREAM``), each line
carries its syslog priority and no timestamp of its own; structured fields stay
readable ``key=value``. A stdout that is not that stream keeps the JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from failover.runtime.logging import PRIORITIES

PROGRAM = """
import structlog
from failover.runtime.logging import configure_logging
configure_logging(level="debug", console=CONSOLE)
log = structlog.get_logger("t").bind(node="alpha")
log.debug("probe", link="lan")
log.info("transition", core_event="PeerDead", **{"from": "secondary", "to": "alone"})
log.warning("link down", link="lan")
log.error("cannot write", file="/x y", problems=["a", "b"])
try:
    1 / 0
except ZeroDivisionError:
    log.exception("the core failed")
"""


def _run(journal: str | None, console: bool | None = None) -> list[str]:
    """Run PROGRAM with stdout on a pipe whose device and inode are known, and
    ``JOURNAL_STREAM`` set to ``journal`` (``"pipe"``: that pipe's)."""
    read, write = os.pipe()
    info = os.fstat(write)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal is not None:
        env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}" if journal == "pipe" else journal
    with os.fdopen(read, "rb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROGRAM.replace("CONSOLE", repr(console))],
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
        )
        os.close(write)
        _, stderr = proc.communicate(timeout=60)
        text = out.read()
    assert proc.returncode == 0, stderr.decode()
    return text.decode().splitlines()


@pytest.mark.parametrize("console", [None, False])  # (False: the watchdog process's call)
def test_each_line_carries_its_priority_and_no_timestamp(console: bool | None) -> None:
    lines = _run("pipe", console)
    assert all(line[:3] in {"<7>", "<6>", "<4>", "<3>"} for line in lines), lines
    debug, transition, warning, error, exception = lines[:5]
    assert debug.startswith(f"<{PRIORITIES['debug']}>") and "probe" in debug
    assert transition.startswith("<6>") and "from=secondary" in transition
    assert "to=alone" in transition and "event=PeerDead" in transition
    assert warning.startswith("<4>") and "link=lan" in warning and "node=alpha" in warning
    assert error.startswith("<3>") and "problems=['a', 'b']" in error
    assert exception.startswith("<3>") and "the core failed" in exception
    # the traceback's lines are errors too: journalctl -p err shows them all
    trace = lines[5:]
    assert trace and all(line.startswith("<3>") for line in trace), trace
    assert any("ZeroDivisionError" in line for line in trace)
    assert not any("timestamp" in line or "202" in line[:30] for line in lines), lines
    assert not any("\x1b[" in line for line in lines), "no colours in the journal"


@pytest.mark.parametrize("journal", [None, "1:2", "garbage"])
def test_json_lines_when_stdout_is_not_the_journal(journal: str | None) -> None:
    lines = _run(journal)
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["debug", "info", "warning", "error", "error"]
    assert all("timestamp" in r for r in records)

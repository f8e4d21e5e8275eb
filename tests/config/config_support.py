"""Shared data for the configuration tests (a module name unique across tests/)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.config import load_config
from failover.errors import ConfigError

# A valid configuration using every section. Tests derive bad ones from it by
# replacing one exact piece of text, so each case changes one thing.
BASE = """\
cluster:
  name: dispatch
  key_file: cluster.key
  profile: default
  timing:
    heartbeat_interval: 0.5
    dead_timeout: 2.0
  failback: none
links:
  - name: lan
    transport: udp
  - name: admin
    transport: tcp
nodes:
  alpha:
    links:
      lan: {address: 127.0.0.1, port: 7401}
      admin: {address: 127.0.0.1, port: 7411}
  beta:
    links:
      lan: {address: 127.0.0.1, port: 7402}
      admin: {address: 127.0.0.1, port: 7412}
application:
  start: /bin/true
  stop: /bin/true
virtual_ip:
  address: 10.0.0.100/24
  interface: eth0
checkers:
  - name: db
    command: /bin/true
    interval: 5
    timeout: 3
"""

KEY = b"k" * 40

WriteConfig = Callable[..., Path]


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with the single occurrence of ``old`` replaced (fails if not exactly one)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


# BASE with a replication section and each node's replication endpoint.
ALPHA_REPLICATION = "    replication: {address: 127.0.0.1, port: 7421}\n"
BETA_REPLICATION = "    replication: {address: 127.0.0.1, port: 7422}\n"
REPLICATION = """\
replication:
  transport: tcp-replication
  ack: written
  zone_size: 65536
  quarantine_dir: /srv/quarantine
  directories:
    - name: spool
      path: /srv/spool
    - name: db
      path: /srv/db
"""
REPLICATED = (
    replace_once(BASE, "  beta:\n", ALPHA_REPLICATION + "  beta:\n")
    .replace("application:\n", BETA_REPLICATION + "application:\n", 1)
    .replace("application:\n", REPLICATION + "application:\n", 1)
)


def edited(base: str, edits: tuple[tuple[str, str], ...]) -> str:
    """``base`` with each (old, new) of ``edits`` applied in turn, each old occurring once."""
    text = base
    for old, new in edits:
        text = replace_once(text, old, new)
    return text


@dataclass(frozen=True)
class Bad:
    """A config made from ``base`` by ``edits``, and the problem it must produce.

    ``at`` is a piece of text of the edited file and which occurrence of it
    (1-based): the problem must name the line where it occurs.
    """

    edits: tuple[tuple[str, str], ...]
    key: str
    at: tuple[str, int]
    gist: tuple[str, ...]
    base: str = BASE


def bad(
    old: str,
    new: str,
    key: str,
    at: str | tuple[str, int],
    *gist: str,
    more: tuple[tuple[str, str], ...] = (),
    base: str = BASE,
) -> Bad:
    return Bad(((old, new), *more), key, at if isinstance(at, tuple) else (at, 1), gist, base)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def line_of(text: str, marker: str, occurrence: int) -> int:
    """1-based line of the ``occurrence``-th line of ``text`` that contains ``marker``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if marker in line]
    assert len(hits) >= occurrence, f"{marker!r} occurs {len(hits)} times"
    return hits[occurrence - 1]


def assert_reported(write_config: WriteConfig, case: Bad) -> None:
    """The config of ``case`` is rejected with a problem at its file, line and key."""
    text = edited(case.base, case.edits)
    path = write_config(text)
    expected = f"{path}:{line_of(text, *case.at)}: {case.key}: "
    problems = problems_of(path)
    matching = [p for p in problems if p.startswith(expected)]
    assert matching, f"no problem starts with {expected!r}; got:\n" + "\n".join(problems)
    for gist in case.gist:
        assert any(gist in p for p in matching), f"{gist!r} not in {matching}"
    assert all("Traceback" not in p and "\n" not in p for p in problems)

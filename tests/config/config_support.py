"""Shared data for the configuration tests (a module name unique across tests/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

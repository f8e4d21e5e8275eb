"""The witness's durable record, one small JSON file per cluster.

``<state_dir>/clusters/<cluster>.json`` holds the cluster's ``LeaseRecord``
(holder, generation, who was granted it, from which base), the lease's
``ttl`` and which grant the holder holds (``grant``: the incarnation and seq
of the node's acquire request, the identity a release must name);
``expires_wall`` (wall clock) is written for ``failover witness status``
only. Every save is ``write_atomic`` (temporary file, fsync, rename, fsync
of the directory): a crash leaves the old record or the new
one, never a mix, and a record saved is on disk when ``save`` returns.

The record's ``expires_at`` lives on the witness's monotonic clock, which
means nothing to the next run: ``load`` gives a held lease ``now + ttl``
(invariant 4 of ``failover.witness``), never less than it can have had left.
A record that cannot be read or parsed stops the witness with an error
naming the file: guessing "free" could grant a lease another node holds.

Schema 2 added ``grant``. A schema-1 file (written before) still loads, with
no grant: a lease it holds cannot be released by name and runs out at its
ttl (never freed by a release it cannot match). A witness of schema 1 refuses
a schema-2 file with an error naming it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover.core.arbitration import LeaseRecord
from failover.core.state import INITIAL, Generation
from failover.errors import UsageError
from failover.fsutil import describe_error, write_atomic
from failover.witness.messages import MAX_TTL_MS

SCHEMA = 2
MAX_TTL = MAX_TTL_MS / 1000
"""The longest ttl a record may hold: what a node may ask for (a larger one, or
Infinity, which JSON also reads, would keep a lease past every restart)."""
READABLE = (1, 2)
"""Schemas ``read`` accepts (1: before ``grant``)."""


class WitnessStateError(UsageError):
    """A record on disk cannot be read, parsed or written."""


@dataclass(frozen=True, order=True)
class Grant:
    """Which grant a holder holds: the ``incarnation`` and ``seq`` of the node's
    acquire request that was granted (a node's seq grows within a run, its
    incarnation at every start, so the pair names one grant of that node)."""

    incarnation: int
    seq: int


@dataclass(frozen=True)
class Saved:
    """A cluster's record as ``failover witness status`` shows it."""

    cluster: str
    record: LeaseRecord
    ttl: float
    expires_wall: float | None
    grant: Grant | None = None


def _generation(value: Any, where: str) -> Generation:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or type(value[0]) is not int
        or value[0] < 0
        or not isinstance(value[1], str)
    ):
        raise ValueError(f"{where} must be [counter, origin], not {value!r}")
    return Generation(value[0], value[1])


def _grant(value: Any, where: str) -> Grant | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(type(part) is not int or not 0 <= part < 2**64 for part in value)
    ):
        raise ValueError(f"{where} must be [incarnation, seq] or null, not {value!r}")
    return Grant(value[0], value[1])


def _optional_name(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where} must be a node name or null, not {value!r}")
    return value


class ClusterStore:
    """The durable record of one cluster."""

    def __init__(self, state_dir: Path, cluster: str) -> None:
        self.cluster = cluster
        self.path = state_dir / "clusters" / f"{cluster}.json"

    def save(
        self, record: LeaseRecord, ttl: float, *, now: float, grant: Grant | None = None
    ) -> None:
        """Write ``record`` and the ``grant`` its holder holds durably (``now``: the
        monotonic time ``record.expires_at`` counts on). Raises
        ``WitnessStateError``; the old record then stays."""
        expires_wall = (
            None
            if record.expires_at is None or record.holder is None
            else time.time() + (record.expires_at - now)
        )
        document = {
            "schema": SCHEMA,
            "cluster": self.cluster,
            "holder": record.holder,
            "generation": [record.generation.counter, record.generation.origin],
            "granted_to": record.granted_to,
            "granted_from": [record.granted_from.counter, record.granted_from.origin],
            "ttl": ttl,
            "expires_wall": expires_wall,
            "grant": None if grant is None else [grant.incarnation, grant.seq],
        }
        data = (json.dumps(document, sort_keys=True) + "\n").encode()
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise WitnessStateError(f"{self.path}: cannot save: {describe_error(exc)}") from exc

    def read(self) -> Saved | None:
        """The saved record as written (None when the cluster never had one)."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise WitnessStateError(f"{self.path}: cannot read: {exc}") from exc
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("schema") not in READABLE:
                schema = document.get("schema") if isinstance(document, dict) else None
                raise ValueError(
                    f"schema {schema!r} is not one this witness reads "
                    f"({', '.join(map(str, READABLE))}): a newer witness wrote it?"
                )
            if document.get("cluster") != self.cluster:
                raise ValueError(f"record of cluster {document.get('cluster')!r}")
            ttl = document["ttl"]
            if type(ttl) not in (int, float) or not 0 <= ttl <= MAX_TTL:
                raise ValueError(f"ttl must be a number of seconds in 0..{MAX_TTL:g}, not {ttl!r}")
            expires_wall = document["expires_wall"]
            if expires_wall is not None and type(expires_wall) not in (int, float):
                raise ValueError(f"expires_wall must be a number or null, not {expires_wall!r}")
            record = LeaseRecord(
                holder=_optional_name(document["holder"], "holder"),
                generation=_generation(document["generation"], "generation"),
                granted_to=_optional_name(document["granted_to"], "granted_to"),
                granted_from=_generation(document["granted_from"], "granted_from"),
            )
            grant = _grant(document.get("grant"), "grant") if document["schema"] >= 2 else None
        except (ValueError, KeyError, TypeError) as exc:
            raise WitnessStateError(f"{self.path}: not a valid witness record: {exc}") from None
        return Saved(self.cluster, record, float(ttl), expires_wall, grant)

    def load(self, *, now: float) -> tuple[LeaseRecord, float, Grant | None]:
        """The record to serve from after a (re)start, its ttl and its holder's
        grant: a held lease runs ``ttl`` from ``now`` (this run's monotonic clock)."""
        saved = self.read()
        if saved is None:
            return LeaseRecord(generation=INITIAL), 0.0, None
        record = saved.record
        if record.holder is not None:
            record = LeaseRecord(
                holder=record.holder,
                expires_at=now + saved.ttl,
                generation=record.generation,
                granted_to=record.granted_to,
                granted_from=record.granted_from,
            )
        return record, saved.ttl, saved.grant if record.holder is not None else None

"""Crash-safe persistence of the core's metadata and of the daemon's incarnation.

Both files are small JSON documents with a schema version, replaced atomically:
the new content is written to a temporary file in the same directory, flushed
and fsynced, renamed over the old file with ``os.replace``, and the directory
is fsynced so the rename itself survives a power cut. A crash at any point
leaves either the old or the new content, never a mix; a temporary file left
behind by a crash is ignored by ``load`` and removed by the next ``save``.

A file that exists but cannot be read back is never silently reset: the
metadata decides whether this node may serve, so a guess could promote stale
data. ``load`` raises ``UsageError`` naming the file instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from failover.core.state import Generation, Metadata, State
from failover.errors import UsageError
from failover.fsutil import describe_error, write_atomic

METADATA_SCHEMA = 1
INCARNATION_SCHEMA = 1


def unwritable(directory: Path, exc: OSError) -> UsageError:
    """The one line an operator gets when the state directory cannot be written."""
    return UsageError(f"cannot write the state directory {directory}: {describe_error(exc)}")


def _read_document(path: Path, schema: int, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(path, what, f"not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise _corrupt(path, what, "not a JSON object")
    found = document.get("schema")
    if found != schema:
        raise _corrupt(path, what, f"schema {found!r} is not the supported schema {schema}")
    return document


_ADVICE = {
    "metadata": (
        "it was not reset automatically because it decides whether this node may "
        "serve: restore it, or remove it to start as a fresh node (the peer's data "
        "is then taken as the newest)"
    ),
    "incarnation": "remove it: the next start writes a new one",
}


def _corrupt(path: Path, what: str, detail: str) -> UsageError:
    return UsageError(f"{what} file {path} is unreadable: {detail}; {_ADVICE[what]}")


def _generation_to_json(generation: Generation) -> dict[str, Any]:
    return {"counter": generation.counter, "origin": generation.origin}


def _generation_from_json(value: Any) -> Generation:
    if not isinstance(value, dict) or set(value) != {"counter", "origin"}:
        raise ValueError(f"generation must be {{counter, origin}}, not {value!r}")
    counter, origin = value["counter"], value["origin"]
    if type(counter) is not int or counter < 0 or not isinstance(origin, str):
        raise ValueError(f"invalid generation {value!r}")
    return Generation(counter, origin)


def metadata_to_json(metadata: Metadata) -> dict[str, Any]:
    """The JSON document ``MetadataStore.save`` writes (schema ``METADATA_SCHEMA``)."""
    return {
        "schema": METADATA_SCHEMA,
        "generation": _generation_to_json(metadata.generation),
        "synced_generation": _generation_to_json(metadata.synced_generation),
        "consistent": metadata.consistent,
        "last_state": metadata.last_state.value if metadata.last_state is not None else None,
        "peer_generation": _generation_to_json(metadata.peer_generation),
    }


def metadata_from_json(document: dict[str, Any]) -> Metadata:
    """Parse a document written by ``metadata_to_json``; ValueError if it is not one."""
    expected = {
        "schema",
        "generation",
        "synced_generation",
        "consistent",
        "last_state",
        "peer_generation",
    }
    if set(document) != expected:
        raise ValueError(f"keys {sorted(document)} are not {sorted(expected)}")
    consistent = document["consistent"]
    if not isinstance(consistent, bool):
        raise ValueError(f"consistent must be a boolean, not {consistent!r}")
    last_state = document["last_state"]
    return Metadata(
        generation=_generation_from_json(document["generation"]),
        synced_generation=_generation_from_json(document["synced_generation"]),
        consistent=consistent,
        last_state=State(last_state) if last_state is not None else None,
        peer_generation=_generation_from_json(document["peer_generation"]),
    )


class MetadataStore:
    """The core's ``Metadata`` in one JSON file, saved crash-safely.

    ``save`` returns only once the new content is durable (fsync of the file
    and of its directory); it blocks the calling thread for that long.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> Metadata:
        """The saved metadata; a fresh ``Metadata()`` if the file does not exist.

        Raises ``UsageError`` naming the file when it exists but is unreadable,
        not JSON, of another schema or holds invalid values.
        """
        document = _read_document(self.path, METADATA_SCHEMA, "metadata")
        if document is None:
            return Metadata()
        try:
            return metadata_from_json(document)
        except ValueError as exc:
            raise _corrupt(self.path, "metadata", str(exc)) from exc

    def save(self, metadata: Metadata) -> None:
        """Durably replace the saved metadata (see ``write_atomic``)."""
        data = json.dumps(metadata_to_json(metadata), indent=2, sort_keys=True) + "\n"
        write_atomic(self.path, data.encode())


class IncarnationStore:
    """A counter that increases at every daemon start, saved before it is used.

    The wire layer puts the incarnation in every frame so that the peer can
    tell a restarted daemon (whose sequence numbers start again) from a replay.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def current(self) -> int:
        """The last incarnation handed out (0 if none). ``UsageError`` if corrupt."""
        document = _read_document(self.path, INCARNATION_SCHEMA, "incarnation")
        if document is None:
            return 0
        value = document.get("incarnation")
        if type(value) is not int or value < 0 or set(document) != {"schema", "incarnation"}:
            raise _corrupt(self.path, "incarnation", f"invalid incarnation {value!r}")
        return value

    def next(self) -> int:
        """A value larger than any handed out before, saved durably, then returned.

        The wall clock in nanoseconds is used when it is ahead of the saved
        counter, so that a node whose state directory was lost still starts
        with an incarnation its peer has not seen (the peer refuses older ones
        until it restarts itself). Only uniqueness hangs on it, no decision.
        """
        value = max(time.time_ns(), self.current() + 1)
        data = json.dumps({"schema": INCARNATION_SCHEMA, "incarnation": value}) + "\n"
        try:
            write_atomic(self.path, data.encode())
        except OSError as exc:
            # Not used unless saved: the daemon cannot start (a full or read-only disk).
            raise unwritable(self.path.parent, exc) from exc
        return value

"""Read a YAML configuration file and remember where every key is.

PyYAML's ``safe_load`` forgets line numbers and silently keeps the last of two
equal keys in a mapping. This module composes the node tree first, indexes
the line of every mapping key and sequence item by its path from the root,
rejects duplicate and non-string keys, and only then builds plain Python data.

A hostile file costs little: ``read_document`` reads at most ``max_bytes``,
and aliases may repeat at most ``MAX_ALIAS_NODES`` nodes and
``MAX_ALIAS_BYTES`` bytes of text in all (an alias bomb, nine aliases of nine
aliases of..., or a few hundred aliases of one long string, is refused after
that much instead of being expanded into gigabytes for the checks to work
through); an alias inside the node it names is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from failover.config.problems import Loc, Problem, describe_value, line_for

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_ALIAS_NODES = 10_000
"""How many nodes aliases may repeat in one document (anchors used as intended,
a few merged defaults, need tens)."""

MAX_ALIAS_BYTES = 256 * 1024
"""How many bytes of text aliases may repeat in one document: the data a
document expands to is then at most this much larger than the file."""


class ConfigSyntaxError(Exception):
    """The file cannot be turned into data. ``messages`` are complete one-line reports."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass
class LocatedDocument:
    """Plain data from a YAML file, with the 1-based line of every path in it.

    ``lines`` maps a path (mapping keys and sequence indices from the root) to
    the line of its key (or of the item, in a sequence). ``()`` is the line
    where the top-level mapping starts.
    """

    data: object
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        """Line of ``loc``, or of its nearest ancestor present in the file.

        A missing key is thus reported at the line of the mapping that should
        hold it.
        """
        return line_for(self.lines, loc)


# Stands for a list or mapping used as a key, which this schema never allows.
_COMPLEX_KEY = object()


class _Refused(Exception):
    """Stops the walk of a document that aliases would blow up."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that indexes lines by path and finds bad keys before constructing.

    Keys are compared as constructed values (so ``1`` and ``0x1`` are one key);
    keys pulled in by a YAML merge (``<<: *anchor``) may be overridden by an
    explicit key of the same name, as YAML allows.

    The walk follows aliases, so it counts the nodes it reaches a second time
    (through an alias) and stops at ``MAX_ALIAS_NODES`` of them.
    """

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # An alias composes to the very node it names, which keeps the anchor's
        # line: remember where the alias itself is written, for sequence items
        # (``index`` is the item's index there; a mapping passes its key node).
        if self.check_event(yaml.AliasEvent) and isinstance(index, int) and parent is not None:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            self._alias_lines[(id(parent), index)] = event.start_mark.line + 1
        return super().compose_node(parent, index)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._alias_lines: dict[tuple[int, int], int] = {}
        self._reached: set[int] = set()
        self._repeated = 0
        self._repeated_bytes = 0
        self._alias_path: Loc | None = None

    def locate_keys(self, root: yaml.Node) -> tuple[dict[Loc, int], list[Problem]]:
        lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        problems: list[Problem] = []
        try:
            self._walk(root, (), lines, problems, active=set())
        except _Refused as exc:
            problems.append(exc.problem)
        return lines, problems

    def _walk(
        self,
        node: yaml.Node,
        path: Loc,
        lines: dict[Loc, int],
        problems: list[Problem],
        active: set[int],
    ) -> None:
        if id(node) in active:
            # &a [*a]: the data would contain itself (no configuration needs that).
            raise _Refused(Problem(path, "this alias refers to a node that contains it"))
        outermost = False
        if id(node) in self._reached:
            # Reached again: through an alias. Blame the outermost alias being followed.
            outermost = self._alias_path is None
            if outermost:
                self._alias_path = path
            self._repeated += 1
            if isinstance(node, yaml.ScalarNode):
                self._repeated_bytes += len(node.value)
            if self._repeated > MAX_ALIAS_NODES or self._repeated_bytes > MAX_ALIAS_BYTES:
                raise _Refused(
                    Problem(
                        self._alias_path or path,
                        f"aliases repeat more than {MAX_ALIAS_NODES} nodes or "
                        f"{MAX_ALIAS_BYTES} bytes in all: write the values out instead",
                    )
                )
        else:
            self._reached.add(id(node))
        active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._walk_mapping(node, path, lines, problems, active)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    line = self._alias_lines.get((id(node), i), item.start_mark.line + 1)
                    lines.setdefault((*path, i), line)
                    self._walk(item, (*path, i), lines, problems, active)
        finally:
            active.discard(id(node))
            if outermost:
                self._alias_path = None

    def _walk_mapping(
        self,
        node: yaml.MappingNode,
        path: Loc,
        lines: dict[Loc, int],
        problems: list[Problem],
        active: set[int],
    ) -> None:
        seen: dict[object, int] = {}
        merged: list[tuple[str, yaml.Node, int]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node))
                continue
            key = self._key_of(key_node)
            if not isinstance(key, str):
                problems.append(_non_string_key(path, key_node, key, line))
                continue
            if key in seen:
                problems.append(
                    Problem(
                        (*path, key),
                        f"duplicate key (first defined at line {seen[key]})",
                        line=line,
                    )
                )
                continue
            seen[key] = line
            lines[(*path, key)] = line
            self._walk(value_node, (*path, key), lines, problems, active)
        for key, value_node, line in merged:
            # An explicit key wins over a merged one, and the first merge source
            # wins over later ones: both as YAML's merge rule says.
            if key not in seen:
                seen[key] = line
                lines[(*path, key)] = line
                self._walk(value_node, (*path, key), lines, problems, active)

    def _merge_sources(self, value_node: yaml.Node) -> Iterator[tuple[str, yaml.Node, int]]:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if isinstance(source, yaml.MappingNode):
                for key_node, item in source.value:
                    if key_node.tag == _MERGE_TAG:
                        continue  # a merge in the source: its keys were checked where it is
                    key = self._key_of(key_node)
                    if isinstance(key, str):
                        yield key, item, key_node.start_mark.line + 1

    def _key_of(self, key_node: yaml.Node) -> object:
        if isinstance(key_node, yaml.ScalarNode):
            return self.construct_object(key_node)
        return _COMPLEX_KEY


def _non_string_key(path: Loc, key_node: yaml.Node, key: object, line: int) -> Problem:
    if isinstance(key_node, yaml.ScalarNode):
        text = str(key_node.value)
        return Problem(
            (*path, text),
            f"this key is read as {describe_value(key)}, not as a name: quote it ('{text}')",
            line=line,
        )
    return Problem((*path, "?"), "a list or mapping cannot be a key", line=line)


def _mark_line(exc: yaml.YAMLError) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return int(mark.line) + 1 if mark is not None else 1


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem is None:
        return str(exc).splitlines()[0]
    # PyYAML phrases these as "<context>, <problem>": "while scanning a quoted scalar,
    # found unexpected end of stream".
    return f"{context}, {problem}" if context else str(problem)


def read_document(path: Path, shown: str, *, max_bytes: int | None = None) -> LocatedDocument:
    """Read and parse ``path``; ``shown`` is the file name used in messages.

    Raises ``ConfigSyntaxError`` (one-line messages) when the file cannot be
    read or decoded (the line and column of the first byte that is not
    UTF-8), is larger than ``max_bytes`` (when given), is not YAML, holds
    several documents, has duplicate or non-string keys, or aliases that
    would blow it up. Reads the file once (at most ``max_bytes`` + 1 bytes);
    no other I/O.
    """
    try:
        with path.open("rb") as file:
            raw = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigSyntaxError([f"{shown}: cannot read the file: {exc.strerror}"]) from exc
    if max_bytes is not None and len(raw) > max_bytes:
        raise ConfigSyntaxError(
            [f"{shown}: the file is larger than {_size(max_bytes)}, the most it may hold"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigSyntaxError(
            [
                f"{shown}:{line}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at column "
                f"{column} ({exc.reason})"
            ]
        ) from None
    return parse_document(text, shown)


def _size(count: int) -> str:
    """``262144`` -> ``256 KiB``; other counts in bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


def parse_document(text: str, shown: str) -> LocatedDocument:
    """Parse YAML ``text``; as ``read_document`` without the file access."""
    loader = _LineLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return LocatedDocument(None, {(): 1})
        lines, problems = loader.locate_keys(root)
        if problems:
            raise ConfigSyntaxError([p.render(shown, lines) for p in problems])
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        line = _mark_line(exc)
        raise ConfigSyntaxError(
            [f"{shown}:{line}: invalid YAML: {_describe_yaml_error(exc)}"]
        ) from exc
    except RecursionError:
        # PyYAML composes and constructs recursively: absurd nesting ends here.
        raise ConfigSyntaxError([f"{shown}: invalid YAML: nested too deeply"]) from None
    finally:
        loader.dispose()
    return LocatedDocument(data, lines)

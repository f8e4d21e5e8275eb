"""Read a YAML configuration file and remember where every key is.

PyYAML's ``safe_load`` forgets line numbers and silently keeps the last of two
equal keys in a mapping. This module composes the node tree first, indexes
the line of every mapping key and sequence item by its path from the root,
rejects duplicate and non-string keys, and only then builds plain Python data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from failover.config.problems import Loc, Problem, describe_value, line_for

_MERGE_TAG = "tag:yaml.org,2002:merge"


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


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that indexes lines by path and finds bad keys before constructing.

    Keys are compared as constructed values (so ``1`` and ``0x1`` are one key);
    keys pulled in by a YAML merge (``<<: *anchor``) may be overridden by an
    explicit key of the same name, as YAML allows.
    """

    def locate_keys(self, root: yaml.Node) -> tuple[dict[Loc, int], list[Problem]]:
        lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        problems: list[Problem] = []
        self._walk(root, (), lines, problems, active=set())
        return lines, problems

    def _walk(
        self,
        node: yaml.Node,
        path: Loc,
        lines: dict[Loc, int],
        problems: list[Problem],
        active: set[int],
    ) -> None:
        # A recursive alias (&a [*a]) would loop forever: stop at a node already
        # on the current path.
        if id(node) in active:
            return
        active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._walk_mapping(node, path, lines, problems, active)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    lines.setdefault((*path, i), item.start_mark.line + 1)
                    self._walk(item, (*path, i), lines, problems, active)
        finally:
            active.discard(id(node))

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


def read_document(path: Path, shown: str) -> LocatedDocument:
    """Read and parse ``path``; ``shown`` is the file name used in messages.

    Raises ``ConfigSyntaxError`` (one-line messages) when the file cannot be
    read or decoded, is not YAML, holds several documents, or has duplicate
    or non-string keys. Reads the whole file once; no other I/O.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigSyntaxError([f"{shown}: not a UTF-8 text file ({exc.reason})"]) from exc
    except OSError as exc:
        raise ConfigSyntaxError([f"{shown}: cannot read the file: {exc.strerror}"]) from exc
    return parse_document(text, shown)


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

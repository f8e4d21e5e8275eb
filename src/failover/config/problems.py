"""One problem in a configuration file, and how it is shown to the operator.

Every problem reads ``<file>:<line>: <dotted.key>: <reason>``. The key is the
path from the top of the file (``cluster.timing.dead_timeout``, ``links[1].name``);
the line is where that key is written, or, for a missing key, where the
mapping that should hold it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

TOP_LEVEL = "(top level)"


def format_key(loc: Loc) -> str:
    """``('links', 0, 'name')`` -> ``links[0].name``; the empty path is ``(top level)``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or TOP_LEVEL


def line_for(lines: Mapping[Loc, int], loc: Loc) -> int:
    """Line of ``loc`` in ``lines``, or of its nearest ancestor present; 1 if none is."""
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return 1


@dataclass(frozen=True)
class Problem:
    """A reason attached to a path; ``line`` overrides the line looked up from the path."""

    loc: Loc
    reason: str
    line: int | None = None

    def render(self, shown: str, lines: Mapping[Loc, int]) -> str:
        line = self.line if self.line is not None else line_for(lines, self.loc)
        return f"{shown}:{line}: {format_key(self.loc)}: {self.reason}"


def describe_value(value: object) -> str:
    """A short YAML-flavoured description of a value the operator wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


_CONTAINER_REASONS = {
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}


def reason_of(error: ErrorDetails) -> str:
    """Turn one pydantic error into a reason phrased for a configuration file."""
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _CONTAINER_REASONS:
        return f"{_CONTAINER_REASONS[kind]}, not {describe_value(value)}"
    if kind == "too_short":
        least = error.get("ctx", {}).get("min_length", 1)
        return f"must hold at least {least} item{'s' if least != 1 else ''}"
    if kind == "string_too_short":
        return "must not be empty"
    message = error["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    for subject in ("value is ", "Input is ", "input is "):
        if message.startswith(subject):
            # "value is not a valid IPv4 address" -> "'10.0.0.300' is not a valid IPv4 address"
            return f"{describe_value(value)} is {message.removeprefix(subject)}"
    if kind.endswith("_parsing"):
        # "..., unable to parse string as an integer": the value shown says it better.
        message = message.split(", ", 1)[0]
    if message.startswith("Input should "):
        message = "must " + message.removeprefix("Input should ")
    elif message and message[0].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    if not isinstance(value, dict | list | tuple):
        message += f", not {describe_value(value)}"
    return message


def problems_from(
    exc: ValidationError,
    data: object,
    prefix: Loc = (),
    suggest: Callable[[Loc], str | None] | None = None,
) -> list[Problem]:
    """One ``Problem`` per key pydantic rejected in ``data``, located under ``prefix``.

    The names pydantic adds to a location for the members of a union are
    removed, and the errors of one key (one per union member) become one
    problem. ``suggest`` may add a hint to an unknown key.
    """
    reasons: dict[Loc, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = _keys_only(error["loc"], data)
        reason = reason_of(error)
        if error["type"] == "extra_forbidden" and suggest is not None:
            hint = suggest((*prefix, *loc))
            if hint:
                reason = f"{reason}; {hint}"
        reasons.setdefault(loc, []).append(reason)
    return [Problem((*prefix, *loc), _either(texts)) for loc, texts in reasons.items()]


def _keys_only(loc: tuple[str | int, ...], data: object) -> Loc:
    """``loc`` without the union-member names pydantic puts between real keys.

    A part is a real key when ``data`` at that point holds it, or when it is
    the last part (a missing or unknown key).
    """
    kept: list[str | int] = []
    current = data
    for n, part in enumerate(loc):
        last = n == len(loc) - 1
        if isinstance(current, dict) and (part in current or (last and isinstance(part, str))):
            kept.append(part)
            current = current.get(part)
        elif isinstance(current, list | tuple) and isinstance(part, int) and part < len(current):
            kept.append(part)
            current = current[part]
    return tuple(kept)


def _either(reasons: list[str]) -> str:
    """Join alternative reasons, sharing their common first words.

    ["'x' is not a valid IPv4 address", "'x' is not a valid IPv6 address"]
    -> "'x' is not a valid IPv4 address or IPv6 address"
    """
    unique = list(dict.fromkeys(reasons))
    if len(unique) == 1:
        return unique[0]
    split = [reason.split(" ") for reason in unique]
    common = 0
    while all(len(words) > common + 1 for words in split) and all(
        words[common] == split[0][common] for words in split
    ):
        common += 1
    head = " ".join(split[0][:common])
    tails = " or ".join(" ".join(words[common:]) for words in split)
    return f"{head} {tails}" if head else tails

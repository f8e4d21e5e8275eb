"""Hostile configuration files: alias bombs, huge files, bytes that are not UTF-8.

Each is refused with one clear line, in bounded time and memory, by the one
loader that ``check-config``, ``run`` and a SIGHUP reload all use.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from config_support import BASE, WriteConfig, line_of, problems_of, replace_once

from failover.config.loader import MAX_CONFIG_BYTES
from failover.config.yamlsource import (
    MAX_ALIAS_BYTES,
    MAX_ALIAS_NODES,
    ConfigSyntaxError,
    parse_document,
)


def alias_bomb(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level lists ``width`` aliases of the level below."""
    text = "a0: &a0 [" + ", ".join(["lol"] * width) + "]\n"
    for level in range(1, levels):
        text += f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]\n"
    return text


def test_an_alias_bomb_is_refused_at_the_key_that_uses_it() -> None:
    # Five levels expand to 9**5 = 59049 nodes: enough to exceed the bound,
    # small enough that an unbounded loader would finish (and accept it).
    text = alias_bomb(5)
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_document(text, "bomb.yaml")
    (message,) = caught.value.messages
    assert message.startswith(f"bomb.yaml:{line_of(text, 'a4:', 1)}: a4[")
    assert f"aliases repeat more than {MAX_ALIAS_NODES} nodes" in message


def test_aliases_of_one_long_string_are_bounded_by_bytes() -> None:
    # Few nodes, much text: 300 aliases of a 2000-byte string expand to 600 kB,
    # which the checks (shlex on every command) would then work through.
    text = "long: &s " + "x" * 2000 + "\nmany:\n" + "  - *s\n" * 300
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_document(text, "long.yaml")
    (message,) = caught.value.messages
    assert message.startswith("long.yaml:"), message
    assert f"{MAX_ALIAS_BYTES} bytes in all" in message


def test_a_long_duplicate_name_is_shown_short(write_config: WriteConfig) -> None:
    long = "n" * 5000
    twice = f"  - name: {long}\n    command: /bin/true\n" * 2
    path = write_config(replace_once(BASE, "  - name: db\n    command: /bin/true\n", twice))
    (problem,) = [p for p in problems_of(path) if "duplicate name" in p]
    assert len(problem) < 300, "the value is described, not echoed whole"


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigSyntaxError) as caught:
        parse_document("cluster:\n  name: x\nloop: &l [1, *l]\n", "loop.yaml")
    assert caught.value.messages == [
        "loop.yaml:3: loop[1]: this alias refers to a node that contains it"
    ]


def test_merges_of_merges_stay_small() -> None:
    """Nine merges of nine merges of...: every level holds the same nine keys, so
    the document stays small, and is read (not refused, not expanded)."""
    text = "m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}\n"
    for level in range(1, 30):
        text += f"m{level}: &m{level} {{<<: [" + ", ".join([f"*m{level - 1}"] * 9) + "]}\n"
    document = parse_document(text, "merges.yaml")
    assert isinstance(document.data, dict)
    assert document.data["m29"] == {f"k{i}": i for i in range(9)}


def test_aliases_within_the_bound_still_work() -> None:
    document = parse_document(alias_bomb(3), "small.yaml")
    assert isinstance(document.data, dict)
    assert len(document.data["a2"]) == 9


def _limit_memory() -> None:
    # 1 GiB of address space: an expanded bomb needs several.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_check_config_refuses_a_full_alias_bomb_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    text = alias_bomb(10)  # 9**10 nodes once expanded
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "failover", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,  # a bound on the subprocess, not the property
        preexec_fn=_limit_memory,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"{path}:{line_of(text, 'a4:', 1)}: a4[0]: ")
    assert "aliases repeat more than" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_over_the_size_limit_is_refused_unparsed(write_config: WriteConfig) -> None:
    padding = "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)
    path = write_config(BASE + padding)
    assert problems_of(path) == [f"{path}: the file is larger than 256 KiB, the most it may hold"]


def test_a_file_just_under_the_size_limit_is_read(write_config: WriteConfig) -> None:
    text = BASE + "#" * (MAX_CONFIG_BYTES - len(BASE) - 1) + "\n"
    assert len(text.encode()) == MAX_CONFIG_BYTES
    path = write_config(text)
    # It loads as far as the key file (which the fixture provides): no size problem.
    from failover.config import load_config  # noqa: PLC0415

    assert load_config(path).cluster.name == "dispatch"


def test_a_byte_that_is_not_utf8_is_located(write_config: WriteConfig) -> None:
    path = write_config()
    raw = replace_once(BASE, "  interface: eth0\n", "  interface: eth\xff0\n").encode("latin-1")
    path.write_bytes(raw)
    line = line_of(BASE, "interface: eth0", 1)
    assert problems_of(path) == [
        f"{path}:{line}: not UTF-8 text: byte 0xff at column 17 (invalid start byte)"
    ]

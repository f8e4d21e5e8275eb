"""The codec's speed: every binary format's decode and encode, and struct against the alternatives.

    .venv/bin/python bench/codec.py [--seconds 0.2]

Part 1 times decode and encode of the fixed sample of every format
(tests/codec/codec_samples.py, the golden-bytes samples) with whatever
``failover`` is first on the path: run it once on a tree before a change and
once after to compare. Part 2 decodes the same fixed part (an op's header, the
change set's header) and the same heartbeat payload several ways in this one
process and prints each as a ratio to the precompiled ``struct.Struct`` (or to
the standard ``json``): ``construct`` and ``msgspec`` are measured only when
importable (they are not dependencies; add them to PYTHONPATH to compare).
"""

from __future__ import annotations

import argparse
import importlib
import json
import struct
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "codec"))

from codec_samples import STATUS, samples

from failover.wire import decode_heartbeat, encode_heartbeat


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of this process, best of five runs of about ``seconds``
    each (CPU time, not wall-clock: steadier on a machine shared with other work)."""
    timer = timeit.Timer(call, timer=time.process_time)
    number, _ = timer.autorange()
    number = max(1, int(number * seconds / 0.2))
    best = min(timer.repeat(repeat=5, number=number))
    return number / best


def formats(seconds: float) -> None:
    print(f"{'format':<22} {'bytes':>6} {'decode/s':>12} {'encode/s':>12}")
    for name, (encode, decode, _) in samples().items():
        data = encode()
        decoded = rate(lambda decode=decode, data=data: decode(data), seconds)
        encoded = rate(encode, seconds)
        print(f"{name:<22} {len(data):>6} {decoded:>12,.0f} {encoded:>12,.0f}")


def _fixed_part_readers() -> dict[str, Callable[[bytes], object]]:
    fmt = ">BBHQI"  # a Write's code and fixed part: root len, path len, offset, data len
    compiled = struct.Struct(fmt)
    readers: dict[str, Callable[[bytes], object]] = {
        "struct.Struct (precompiled)": compiled.unpack_from,
        "struct.unpack_from (format string)": lambda data: struct.unpack_from(fmt, data),
        "int.from_bytes on slices": lambda data: (
            data[0],
            data[1],
            int.from_bytes(data[2:4], "big"),
            int.from_bytes(data[4:12], "big"),
            int.from_bytes(data[12:16], "big"),
        ),
    }
    try:
        c: Any = importlib.import_module("construct")
    except ImportError:
        print("construct: not installed, skipped")
    else:
        header = c.Struct(
            "code" / c.Int8ub,
            "root" / c.Int8ub,
            "path" / c.Int16ub,
            "offset" / c.Int64ub,
            "length" / c.Int32ub,
        )
        readers["construct.Struct"] = header.parse
        readers["construct.Struct (compiled)"] = header.compile().parse
    return readers


def _json_decoders() -> dict[str, Callable[[bytes], object]]:
    decoders: dict[str, Callable[[bytes], object]] = {
        "json.loads": json.loads,
        "decode_heartbeat (json + checks + canonical)": decode_heartbeat,
    }
    try:
        msgspec: Any = importlib.import_module("msgspec")
    except ImportError:
        print("msgspec: not installed, skipped")
    else:
        decoders["msgspec.json.decode (untyped)"] = msgspec.json.decode
    return decoders


def compare(seconds: float) -> None:
    data = bytes.fromhex("02010300000000000000070000000300")
    readers = _fixed_part_readers()
    results = {name: rate(lambda read=read: read(data), seconds) for name, read in readers.items()}
    base = results["struct.Struct (precompiled)"]
    print(f"\n{'fixed part (16 bytes, 5 integers)':<46} {'decode/s':>12} {'vs Struct':>9}")
    for name, value in results.items():
        print(f"{name:<46} {value:>12,.0f} {value / base:>8.2f}x")

    payload = encode_heartbeat(STATUS)
    decoders = _json_decoders()
    results = {name: rate(lambda dec=dec: dec(payload), seconds) for name, dec in decoders.items()}
    base = results["json.loads"]
    print(
        f"\n{f'heartbeat payload ({len(payload)} bytes JSON)':<46} {'decode/s':>12} {'vs json':>9}"
    )
    for name, value in results.items():
        print(f"{name:<46} {value:>12,.0f} {value / base:>8.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="per timing run")
    args = parser.parse_args()
    formats(args.seconds)
    compare(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

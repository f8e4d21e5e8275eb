"""Feed N hostile and valid frames to Inbound; print outcome counts and frames/s.

    .venv/bin/python bench/wire_fuzz.py [-n 1000000] [--seed 1]

The frames come from tests/wire/wire_fuzz_corpus.py (the same stream the fuzz
test uses, with the expected outcome of each frame). Generating them is
timed apart from feeding them, so frames/s measures Inbound.accept alone; it is
printed per wall-clock second and per CPU second of this process (the second is
the one to compare on a machine shared with other work).
Exits 1 if any frame got an outcome other than the expected one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "wire"))

from wire_fuzz_corpus import ACCEPTED, Corpus, receiver

BATCH = 100_000  # frames generated, then fed, at a time (bounds memory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    inbound = receiver()
    corpus = iter(Corpus(args.seed, args.frames))
    expected: Counter[str] = Counter()
    mismatches: Counter[tuple[str, str]] = Counter()
    fed = 0
    feeding = 0.0
    cpu = 0.0
    started = time.perf_counter()
    while True:
        batch = list(islice(corpus, BATCH))
        if not batch:
            break
        outcomes: list[object] = []
        t0, c0 = time.perf_counter(), time.process_time()
        for data, _ in batch:
            result = inbound.accept(data)
            outcomes.append(ACCEPTED if result is not None else inbound.stats.last_rejection)
        feeding += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for (_, want), outcome in zip(batch, outcomes, strict=True):
            expected[want] += 1
            got = outcome if outcome == ACCEPTED else str(outcome.reason)  # type: ignore[attr-defined]
            if got != want:
                mismatches[want, got] += 1
        fed += len(batch)
    total = time.perf_counter() - started

    print(f"frames fed:      {fed}")
    print(f"received count:  {inbound.stats.received}")
    for name, count in inbound.stats.as_dict().items():
        print(f"  {name:<18} {count:>9}")
    print(f"Inbound.accept:  {feeding:.2f} s, {fed / feeding:,.0f} frames/s")
    print(f"  per CPU second: {cpu:.2f} s of CPU, {fed / cpu:,.0f} frames/s (steadier when busy)")
    print(f"with generation: {total:.2f} s")
    if mismatches or inbound.stats.received != fed or dict(expected) != inbound.stats.as_dict():
        print(f"UNEXPECTED OUTCOMES: {dict(mismatches)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

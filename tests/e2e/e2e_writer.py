"""The application of the replication crash test: numbered synchronous records.

``python e2e_writer.py FILE [START]`` appends fixed-size records ``%08d\\n`` to
FILE, each followed by fsync, and prints the record's number on stdout once
its fsync returned: a printed number is a write the application was told is
durable. It runs until killed (or until a write fails, then it exits 1).
"""

from __future__ import annotations

import os
import sys

RECORD = 9  # bytes: eight digits and a newline


def main() -> int:
    path, start = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        number = start
        while True:
            os.pwrite(fd, b"%08d\n" % number, number * RECORD)
            os.fsync(fd)
            print(number, flush=True)
            number += 1
    except OSError as exc:
        print(f"write failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())

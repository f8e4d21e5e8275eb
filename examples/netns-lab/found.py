#!/usr/bin/python3
"""found.py DIR OUT: the record ids held under DIR (a node's disk, or its quarantine).

Writes {"id": N} per line, for `failover audit --found NODE=OUT`. Every file
named `records` under DIR is read (a quarantine keeps the loser's copy).
"""

import json
import os
import sys

REC = 32
ids: set[int] = set()
for top in sys.argv[1:-1]:
    for root, _, files in os.walk(top):
        for name in files:
            if name != "records":
                continue
            with open(os.path.join(root, name), "rb") as f:
                while len(rec := f.read(REC)) == REC:
                    if rec[:12].isdigit():
                        ids.add(int(rec[:12]))
with open(sys.argv[-1], "w") as out:
    out.writelines(json.dumps({"id": i}) + "\n" for i in sorted(ids))
print(f"{len(ids)} ids under {', '.join(sys.argv[1:-1])}")

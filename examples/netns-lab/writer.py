#!/usr/bin/python3
"""writer.py DATA ACKED NODE: append numbered 32-byte records to DATA/records.

Each record is written and fsync'd; only then is it logged to ACKED as
{"id", "mono", "node"} (mono: CLOCK_MONOTONIC after the fsync returned), the
ack log `failover audit --acked` reads. Ids continue above every id already
in ACKED or in the file, so they stay unique across failovers. It also
answers on port 8080 of every virtual address ($FAILOVER_VIPS) with the
node's name and its last acknowledged id: what a client of the service sees.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time

REC = 32
data, acked, node = sys.argv[1], sys.argv[2], sys.argv[3]
stopping = threading.Event()  # set by SIGTERM: finish the record, then exit
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
path = os.path.join(data, "records")
nxt = 0
if os.path.exists(acked):
    with open(acked) as f:
        for line in f:
            with contextlib.suppress(ValueError, KeyError):  # a torn last line
                nxt = max(nxt, json.loads(line)["id"] + 1)
if os.path.exists(path):
    with open(path, "rb") as f:
        while len(rec := f.read(REC)) == REC:
            if rec[:12].isdigit():
                nxt = max(nxt, int(rec[:12]) + 1)


def serve(address: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((address, 8080))
        except OSError as exc:  # e.g. an IPv6 address still tentative: the service is not up
            print(f"cannot bind {address}:8080: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
        srv.listen()
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(f"{node} {nxt - 1}\n".encode())


for vip in os.environ.get("FAILOVER_VIPS", "").split():
    threading.Thread(target=serve, args=(vip.split("/")[0],), daemon=True).start()

fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
with open(acked, "a", buffering=1) as log:
    while not stopping.is_set():
        rec = f"{nxt:012d} {node:<8.8} {'x' * 9}\n".encode()
        try:
            os.write(fd, rec)
            os.fsync(fd)
        except OSError as exc:  # read-only mirror, a dead daemon's mirror (ENOTCONN), EIO
            print("write failed:", exc, file=sys.stderr, flush=True)
            time.sleep(0.2)
            continue
        mono = time.clock_gettime(time.CLOCK_MONOTONIC)
        log.write(json.dumps({"id": nxt, "mono": mono, "node": node}) + "\n")
        nxt += 1
        time.sleep(0.01)

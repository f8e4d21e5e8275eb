"""An operator's and an attacker's try of a pair with an arbitrator (root, by hand).

    sudo .venv/bin/python bench/operator_arbitrators.py [--arbitrator KIND] [--keep-dir DIR]

KIND: witness (the default), ping or etcd. Builds a lab (alpha, beta, an
arbitrator namespace on ``lan``), writes the cluster file (and witness.yaml) as
docs/arbitration.md describes, runs the arbitrator (the witness, etcd, or for ping
nothing: the arbitrator namespace's address is pinged) and both daemons, then,
one after the other:

1. junk at the witness's UDP port from alpha's namespace: no key, a wrong key,
   truncated and oversized frames, a replayed authentic frame, a release from an
   old run of the node naming an old grant; only the one fresh authentic frame
   may be answered, and the holder must keep the lease;
2. (witness) its state directory (a 2 MiB tmpfs) filled, then the serving daemon
   killed -9: nothing may be granted that cannot be saved; room made again: the
   peer must be granted (ping, etcd: the kill and the takeover only);
3. the serving node's state directory (a 2 MiB tmpfs) filled for 12 s while it
   holds the lease: it must serve on;
4. SIGSTOP of the serving daemon for 12 s (past its lease), then SIGCONT.

It prints what it saw, runs ``failover audit`` on both journals and exits 1 when
the audit finds a violation, a traceback appears in a log, or a check fails.
Traffic stays inside the lab's namespaces; everything is killed by PID and the
namespaces and mounts removed at the end. Results: docs/arbitration.md, "An
operator's try".
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _needs import ETCD, MOUNT, NETNS, PING, UMOUNT, ensure, require  # the same directory

from failover.lab import Lab, netns_unavailable_reason
from failover.testing.etcd import EtcdServer

PYTHON = sys.executable
FAILOVER = [PYTHON, "-m", "failover"]
FAILED: list[str] = []
SCRIPT = "operator_arbitrators.py"


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def status(config: Path, node: str) -> dict[str, object]:
    out = subprocess.run(
        [*FAILOVER, "status", "--json", "-c", str(config), "--node", node],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return {"state": "?", "error": (out.stderr or out.stdout).strip()}


def states(config: Path) -> dict[str, object]:
    return {node: status(config, node).get("state") for node in ("alpha", "beta")}


def wait_for(what: str, predicate, limit: float = 40.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    check(False, f"{what} within {limit} s")
    return False


def serving(config: Path) -> str | None:
    found = [n for n, s in states(config).items() if s in ("primary", "alone")]
    return found[0] if len(found) == 1 else None


ATTACK = r"""
import os, socket, sys
from failover.witness.messages import witness_codec, Request, Op, encode_request, release_of
from failover.wire import FrameKind
from failover.core.state import Generation
target = (sys.argv[1], int(sys.argv[2])); key = open(sys.argv[3], 'rb').read()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
def send(name, data):
    s.sendto(data, target)
    try:
        reply = s.recv(4096)
        print(name, 'ANSWERED', len(reply))
    except socket.timeout:
        print(name, 'no answer')
good = witness_codec('dispatch', key)
wrong = witness_codec('dispatch', os.urandom(32))
req = encode_request(Request(Op.ACQUIRE, 6.0, Generation(99, 'beta'), Generation(99, 'beta')))
send('empty', b'')
send('random', os.urandom(200))
send('wrong_key', wrong.encode(FrameKind.HEARTBEAT, 'beta', 7, 1, req))
frame = good.encode(FrameKind.HEARTBEAT, 'beta', 77, 1, req)
send('truncated', frame[:-5])
send('oversized', frame + os.urandom(3000))
send('authentic_once', frame)
send('replayed', frame)
rel = encode_request(release_of(Generation(1, 'alpha'), 1))
send('old_release', good.encode(FrameKind.HEARTBEAT, 'alpha', 5, 1, rel))
# the node's heartbeat port (UDP): nothing there may answer or change its state
node = (sys.argv[4], 7400)
for name, data in (('node_empty', b''), ('node_random', os.urandom(300)),
                   ('node_wrong_key', wrong.encode(FrameKind.HEARTBEAT, 'alpha', 9, 1, b'x')),
                   ('node_witness_frame', frame), ('node_truncated', frame[:20]),
                   ('node_oversized', os.urandom(65000))):
    s.sendto(data, node)
    try:
        print(name, 'ANSWERED', len(s.recv(4096)))
    except socket.timeout:
        print(name, 'no answer')
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-dir", type=Path, help="keep configs and logs here")
    parser.add_argument("--arbitrator", choices=("witness", "ping", "etcd"), default="witness")
    args = parser.parse_args()
    extra = {"etcd": [ETCD], "ping": [PING]}.get(args.arbitrator, [])
    ensure(SCRIPT, [*NETNS, MOUNT, UMOUNT, *extra], root="network namespaces, mounts")
    require(SCRIPT, netns_unavailable_reason())
    base = Path(tempfile.mkdtemp(prefix="operator-arbitrators-"))
    mounts: list[Path] = []
    lab = Lab(("lan", "crossover"), arbitrator="lan")
    try:
        lab.open()
        key = base / "dispatch.key"
        key.write_bytes(secrets.token_bytes(32))
        key.chmod(0o600)
        wstate = base / "wstate"
        wstate.mkdir()
        states_dir = {n: base / f"state-{n}" for n in ("alpha", "beta")}
        for path in (wstate, *states_dir.values()):
            path.mkdir(exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True
            )
            mounts.append(path)
        witness_address = lab.address("arbitrator", "lan")
        kind = args.arbitrator
        etcd = None
        if kind == "witness":
            arbitrator = f'{{type: witness, address: "{witness_address}:7420", lease_ttl: 6}}'
            timing = ""
        elif kind == "ping":
            arbitrator = f"{{type: ping, address: {witness_address}, lease_ttl: 6}}"
            timing = "  timing: {dead_timeout: 6.5, startup_timeout: 6}\n"
        else:
            etcd = EtcdServer(
                base / "etcd",
                witness_address,
                client_port=2379,
                peer_port=2380,
                prefix=lab.command("arbitrator", []),
            )
            etcd.start()
            arbitrator = f'{{type: etcd, endpoints: ["{etcd.url}"], lease_ttl: 6}}'
            timing = ""
        (base / "witness.yaml").write_text(
            f"listen: {witness_address}:7420\nstate_dir: {wstate}\n"
            f"clusters:\n  - name: dispatch\n    key_file: {key}\n"
        )
        nodes = "".join(
            f"  {n}:\n    state_dir: {states_dir[n]}\n    links:\n"
            + "".join(
                f"      {net}: {{address: {lab.address(n, net)}, port: 7400}}\n"
                for net in ("lan", "crossover")
            )
            for n in ("alpha", "beta")
        )
        config = base / "cluster.yaml"
        config.write_text(
            "cluster:\n  name: dispatch\n  key_file: dispatch.key\n"
            f"  arbitrator: {arbitrator}\n{timing}"
            "links:\n  - {name: lan, transport: udp}\n  - {name: crossover, transport: udp}\n"
            f"nodes:\n{nodes}"
            "application:\n  command: /bin/sleep infinity\n  stop_timeout: 2\n"
            f"virtual_ip: {{address: {lab.host_address('lan', 100)}/24, interface: lan}}\n"
        )
        for n in ("alpha", "beta"):
            out = subprocess.run(
                [*FAILOVER, "check-config", str(config), "--node", n],
                check=False,
                capture_output=True,
                text=True,
            )
            check(
                out.returncode == 0,
                f"check-config --node {n}: {out.stdout.strip()}{out.stderr.strip()}",
            )
        logs = {}
        wlog = open(base / "witness.err", "w")  # noqa: SIM115
        witness = lab.run(
            "arbitrator",
            [
                *FAILOVER,
                "witness",
                "run",
                "-c",
                str(base / "witness.yaml"),
                "--log-file",
                str(base / "witness.log"),
            ],
            stdout=wlog,
            stderr=subprocess.STDOUT,
        )
        daemons = {}
        for n in ("alpha", "beta"):
            logs[n] = open(base / f"{n}.err", "w")  # noqa: SIM115
            daemons[n] = lab.run(
                n,
                [*FAILOVER, "run", "-c", str(config), "--node", n],
                stdout=logs[n],
                stderr=subprocess.STDOUT,
            )
        wait_for("one node serving", lambda: serving(config) is not None, 60)
        holder = serving(config)
        print("serving:", holder, states(config), flush=True)

        if kind != "witness":
            witness.send_signal(signal.SIGTERM)
            witness.wait(timeout=10)
        # 1. junk at the witness (it answers nothing when it does not run)
        out = lab.exec(
            "alpha",
            [PYTHON, "-c", ATTACK, witness_address, "7420", str(key), lab.address("beta", "lan")],
            check=False,
        )
        print(out.stdout, out.stderr, flush=True)
        answered = [line for line in out.stdout.splitlines() if "ANSWERED" in line]
        check(
            all(line.split()[0] in ("authentic_once", "old_release") for line in answered),
            f"only authentic fresh frames answered: {answered}",
        )
        time.sleep(3)
        check(serving(config) == holder, f"holder {holder} keeps serving after the junk")
        st = subprocess.run(
            [*FAILOVER, "witness", "status", "-c", str(base / "witness.yaml")],
            check=False,
            capture_output=True,
            text=True,
        )
        print(st.stdout.strip(), st.stderr.strip(), flush=True)
        if kind == "witness":
            check(f"held by {holder}" in st.stdout, "the witness's record still names the holder")

        # 2. the witness's disk full, the holder killed
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={wstate}/fill", "bs=4k"], check=False, capture_output=True
        )
        assert holder is not None
        peer = "beta" if holder == "alpha" else "alpha"
        t_kill = time.monotonic()
        os.kill(daemons[holder].pid, signal.SIGKILL)
        daemons[holder].wait()
        time.sleep(14)
        if kind == "witness":
            check(
                states(config)[peer] not in ("primary", "alone"),
                f"{peer} not granted while the witness cannot save: {states(config)}",
            )
        print(status(config, peer).get("reason"), flush=True)
        (wstate / "fill").unlink()
        wait_for(
            f"{peer} serving once the witness can save",
            lambda: status(config, peer).get("state") in ("primary", "alone"),
            30,
        )
        print(f"{peer} serving {time.monotonic() - t_kill:.1f} s after the kill", flush=True)
        logs[holder] = open(base / f"{holder}.err2", "w")  # noqa: SIM115
        daemons[holder] = lab.run(
            holder,
            [*FAILOVER, "run", "-c", str(config), "--node", holder],
            stdout=logs[holder],
            stderr=subprocess.STDOUT,
        )
        wait_for(
            f"{holder} back as secondary",
            lambda: status(config, holder).get("state") == "secondary",
            60,
        )
        holder, peer = peer, holder

        # 3. the serving node's state directory full while it holds the lease
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={states_dir[holder]}/fill", "bs=4k"],
            check=False,
            capture_output=True,
        )
        time.sleep(12)
        check(
            serving(config) == holder,
            f"{holder} serves on with a full state disk: {states(config)}",
        )
        (states_dir[holder] / "fill").unlink()

        # 4. SIGSTOP of the serving daemon past its lease (whichever serves now)
        holder = serving(config) or holder
        peer = "beta" if holder == "alpha" else "alpha"
        t_stop = time.monotonic()
        os.kill(daemons[holder].pid, signal.SIGSTOP)
        wait_for(
            f"{peer} serving while {holder} is paused",
            lambda: status(config, peer).get("state") in ("primary", "alone"),
            30,
        )
        print(f"{peer} serving {time.monotonic() - t_stop:.1f} s after the pause", flush=True)
        time.sleep(max(0.0, 12 - (time.monotonic() - t_stop)))
        os.kill(daemons[holder].pid, signal.SIGCONT)
        wait_for("one node serving after the resume", lambda: serving(config) is not None, 30)
        time.sleep(5)
        print("after resume:", states(config), flush=True)

        for proc in daemons.values():
            proc.send_signal(signal.SIGTERM)
        for proc in daemons.values():
            proc.wait(timeout=30)
        if kind == "witness":
            witness.send_signal(signal.SIGTERM)
            witness.wait(timeout=10)
        if etcd is not None:
            etcd.remove()
        audit = subprocess.run(
            [
                *FAILOVER,
                "audit",
                *(str(states_dir[n] / n / "audit.jsonl") for n in ("alpha", "beta")),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        print("audit:", audit.returncode, audit.stdout[-3000:], audit.stderr[-2000:], flush=True)
        check(audit.returncode == 0, "failover audit: every invariant holds")
        for log in base.glob("*.err*"):
            text = log.read_text()
            check("Traceback" not in text, f"no traceback in {log.name}")
        wl = (base / "witness.log").read_text()
        if kind != "witness":
            return 1 if FAILED else 0
        print(
            "witness refusals:",
            sorted(
                {
                    json.loads(line).get("reason")
                    for line in wl.splitlines()
                    if "refused" in line and line.startswith("{")
                }
            ),
        )
        print(wl[-3000:])
    finally:
        lab.close()
        if args.keep_dir:
            shutil.copytree(
                base, args.keep_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("fill")
            )
        for path in mounts:
            subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    print("FAILED:" if FAILED else "all checks held", FAILED)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

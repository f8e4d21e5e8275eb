"""What each arbitrator costs in takeover time: none, witness, etcd, ping, same lab, same run.

    sudo .venv/bin/python bench/arbitrator_takeover.py [--runs 5] [--profiles default,fast]
        [--types none,witness,etcd,ping] [--lease-ttl 6] [--json FILE] [--keep-files DIR]

Run by hand as root (it builds network namespaces); not part of the test suite.
The pieces are bench/failover_detect.py's (its lab, cluster, client probe,
kill -9 measurement and figures); read its docstring first.

For each timing profile, one lab: namespaces alpha and beta (the nodes) and
client, joined by two bridges, "lan" and "crossover", a UDP heartbeat link on
each; the virtual IP, the application (failover_detect's listener) and the
client probe on "lan". The arbitrator lives in the client namespace, reached
by both nodes over "lan":

- none: no arbitrator;
- witness: ``failover witness run`` on the client's address, port 7420;
- etcd: a one-member Debian ``etcd`` (``failover.testing.etcd``) on the
  client's address, port 2379;
- ping: a second address of the client on "lan" (ICMP echo), so that it can
  be taken away without cutting the client off the virtual IP.

Each type runs its own pair (its own virtual IP) with ``lease_ttl``
``--lease-ttl`` (6 s, the shipped default); ping with the shortest timings
the configuration accepts for it (``dead_timeout = lease_ttl +
heartbeat_interval``, ``startup_timeout = max(profile's, lease_ttl)``, see
docs/arbitration.md, ping), the others with the profile's. The types run
one after the other in the same invocation, so the ratios against ``none``
are of one machine in one state (the load average is printed).

Each run of a type makes three faults, each on a pair protected for a random
1 s to 1 s + one interval, with the client probe (every 5 ms) on the VIP:

- kill: failover_detect's kill -9 of the serving node's daemon (process
  group) and listener. ``kill_takeover``: until the survivor serves with the
  application started (status ``alone``/``primary``, ``ready``);
  ``kill_connect``: until the client's first TCP connect. The killed node is
  restarted.
- isolation: every link of the serving node set down (lan and crossover:
  its peer, the client and the arbitrator all lost at once).
  ``iso_takeover``/``iso_connect`` as above, for the peer;
  ``iso_stopped``: until the isolated node does not serve any more (its
  status, read over its control socket, is not ``alone``/``primary`` and its
  listener's pidfile is gone); ``iso_overlap``: how long both served, from
  the first sign of the peer serving (its listener's pidfile, or its
  status) to the isolated node stopped; expected 0 with an arbitrator. An
  isolated node that still serves ``STOP_GRACE`` s after the peer took over
  is counted as not stopped, its overlap as at least that (without an
  arbitrator it never stops: the split brain the arbitrators are for). Its
  links then come back and the pair settles again.
- arbitrator down (not for none): the witness or etcd SIGKILLed, the ping
  address removed, under the healthy pair. ``down_stop``: until nobody
  serves (the holder cannot renew its lease and fences itself);
  ``down_recovery``: from the arbitrator's restart (the witness started
  again, etcd started and ready, the address added back) until a node
  serves again (the same one, its record still names it).

At the end of each type, ``failover audit`` on its journals: S1 violations
(two nodes serving where the rules forbid it) and the overlaps it excuses as
blind (no arbitrator, nothing heard on any link).

Printed per profile and type: median, p95, max of each measure over the runs,
the ratio of each median to none's, how many isolated nodes stopped before
their peer served, and the audit. A fault whose takeover is not seen within
failover_detect's RUN_BOUND (30 s) ends that type's series. Everything created
(namespaces, processes, the etcd data, the temporary directory) is removed at
the end, on an error and on Ctrl-C/SIGTERM; processes are killed by PID or by
the process group of a process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _needs import ETCD, NETNS, PING, ensure, require  # the same directory
from failover_detect import (
    NODES,
    POLL,
    PROFILES,
    RUN_BOUND,
    SETTLE_BOUND,
    BenchError,
    FailoverCluster,
    Probe,
    Profile,
    Results,
    _raise_interrupt,
    conclude,
    kill_group,
    loadavg,
    measure_once,
    other,
    settled,
    summary,
    wait_until,
    work_directory,
)

from failover import __version__
from failover.audit import JOURNAL_NAME, audit
from failover.config.timing import PROFILES as TIMINGS
from failover.lab import Lab, LabError, netns_unavailable_reason

SCRIPT = "arbitrator_takeover.py"
TYPES = ("none", "witness", "etcd", "ping")
VIP_HOST = {"none": 210, "witness": 211, "etcd": 212, "ping": 213}
PING_HOST = 250  # the pinged address, a second address of the client on "lan"
WITNESS_PORT = 7420
SERVING = ("alone", "primary")
STOP_GRACE = 3.0  # an isolated node still serving this long after its peer took over: not stopped


# -- the arbitrators ----------------------------------------------------------------


class Arbiter:
    """No arbitrator; the base of the others: ``section`` for the cluster file,
    ``start`` once, ``kill`` and ``restart`` for the arbitrator-down fault, ``close``."""

    kind = "none"

    def __init__(self, lab: Lab, workdir: Path, lease_ttl: float) -> None:
        self.lab = lab
        self.dir = Path(tempfile.mkdtemp(prefix=f"arbiter-{self.kind}-", dir=workdir))
        self.lease_ttl = lease_ttl

    def section(self, cluster: FailoverCluster) -> dict[str, Any] | None:
        return None

    def timing(self, profile: Profile) -> dict[str, float] | None:
        """Timings to set in the cluster file (None: the profile's)."""
        return None

    def start(self, cluster: FailoverCluster) -> None:
        pass

    def kill(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class WitnessArbiter(Arbiter):
    """``failover witness run`` in the client namespace."""

    kind = "witness"

    def __init__(self, lab: Lab, workdir: Path, lease_ttl: float) -> None:
        super().__init__(lab, workdir, lease_ttl)
        self.address = f"{lab.address('client', 'lan')}:{WITNESS_PORT}"
        self.proc: subprocess.Popen[bytes] | None = None

    def section(self, cluster: FailoverCluster) -> dict[str, Any]:
        return {"type": "witness", "address": self.address, "lease_ttl": self.lease_ttl}

    def start(self, cluster: FailoverCluster) -> None:
        self.config = self.dir / "witness.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": self.address,
                    "state_dir": str(self.dir / "state"),
                    "clusters": [{"name": "bench", "key_file": str(cluster.dir / "cluster.key")}],
                }
            )
        )
        self.restart()

    def restart(self) -> None:
        argv = [sys.executable, "-m", "failover", "witness", "run", "-c", str(self.config),
                "--log-file", str(self.dir / "witness.log")]  # fmt: skip
        with open(self.dir / "witness.stderr", "ab") as stderr:
            self.proc = self.lab.run("client", argv, stdin=subprocess.DEVNULL, stderr=stderr)

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid)
            self.proc.wait(timeout=10)
            self.proc = None

    def close(self) -> None:
        self.kill()


class EtcdArbiter(Arbiter):
    """A one-member etcd in the client namespace (``failover.testing.etcd``)."""

    kind = "etcd"

    def __init__(self, lab: Lab, workdir: Path, lease_ttl: float) -> None:
        super().__init__(lab, workdir, lease_ttl)
        # here: ensure() may have installed etcd after this module was loaded
        from failover.testing.etcd import EtcdServer  # noqa: PLC0415

        self.server = EtcdServer(
            self.dir / "data", lab.address("client", "lan"), client_port=2379, peer_port=2380,
            prefix=lab.command("client", []),
        )  # fmt: skip

    def section(self, cluster: FailoverCluster) -> dict[str, Any]:
        return {"type": "etcd", "endpoints": [self.server.url], "lease_ttl": int(self.lease_ttl)}

    def start(self, cluster: FailoverCluster) -> None:
        self.server.start()

    def restart(self) -> None:
        self.server.start()

    def kill(self) -> None:
        self.server.kill()

    def close(self) -> None:
        self.server.remove()


class PingArbiter(Arbiter):
    """An address of the client namespace on "lan", added and removed with ``ip``."""

    kind = "ping"

    def __init__(self, lab: Lab, workdir: Path, lease_ttl: float) -> None:
        super().__init__(lab, workdir, lease_ttl)
        self.address = lab.host_address("lan", PING_HOST)
        self.present = False

    def section(self, cluster: FailoverCluster) -> dict[str, Any]:
        return {"type": "ping", "address": self.address, "lease_ttl": self.lease_ttl}

    def timing(self, profile: Profile) -> dict[str, float]:
        """The shortest the configuration accepts with a ping witness."""
        t = TIMINGS[profile.name]
        return {
            "dead_timeout": round(self.lease_ttl + t.heartbeat_interval, 3),
            "startup_timeout": max(t.startup_timeout, self.lease_ttl),
        }

    def _ip(self, verb: str) -> None:
        interface = self.lab.interface("client", "lan")
        self.lab.exec("client", ["ip", "addr", verb, f"{self.address}/24", "dev", interface])
        self.present = verb == "add"

    def start(self, cluster: FailoverCluster) -> None:
        self.restart()

    def restart(self) -> None:
        self._ip("add")

    def kill(self) -> None:
        self._ip("del")

    def close(self) -> None:
        if self.present:
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                self.kill()


ARBITERS: dict[str, type[Arbiter]] = {
    "none": Arbiter, "witness": WitnessArbiter, "etcd": EtcdArbiter, "ping": PingArbiter,
}  # fmt: skip


class ArbitratedCluster(FailoverCluster):
    """failover_detect's pair with ``cluster.arbitrator`` (and timings) of an ``Arbiter``."""

    def __init__(self, lab: Lab, workdir: Path, profile: Profile, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        super().__init__(
            lab, workdir, profile, system=arbiter.kind, vip_host=VIP_HOST[arbiter.kind]
        )

    def _write_config(self) -> Path:
        path = super()._write_config()
        document = yaml.safe_load(path.read_text())
        section = self.arbiter.section(self)
        if section is not None:
            document["cluster"]["arbitrator"] = section
        timing = self.arbiter.timing(self.profile)
        if timing is not None:
            document["cluster"]["timing"] = timing
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def describe(self) -> str:
        text = super().describe()
        section = self.arbiter.section(self)
        if section is None:
            return f"{text}, no arbitrator"
        return f"{text}, {self.arbiter.kind} lease_ttl {section['lease_ttl']:g} s"

    def serves(self, node: str) -> bool:
        """``node`` serves: its status says so, or its listener's pidfile exists."""
        status = self.status(node)
        return (status or {}).get("state") in SERVING or self.pidfile(node).exists()

    def stopped(self, node: str) -> bool:
        """``node`` answers and does not serve (the application stopped)."""
        status = self.status(node)
        return (
            status is not None
            and status.get("state") not in SERVING
            and not self.pidfile(node).exists()
        )


# -- the measurements ----------------------------------------------------------------


@dataclass
class Run:
    type: str
    profile: str
    index: int
    kill_takeover: float | None = None
    kill_connect: float | None = None
    iso_takeover: float | None = None
    iso_connect: float | None = None
    iso_stopped: float | None = None
    iso_overlap: float | None = None
    iso_stopped_first: bool | None = None
    down_stop: float | None = None
    down_recovery: float | None = None
    down_same_node: bool | None = None
    notes: list[str] = field(default_factory=list)


def poll(what: str, bound: float, step: Callable[[float], bool]) -> None:
    """Call ``step(seconds since now)`` every POLL s until it returns True; BenchError
    after ``bound`` s."""
    t0 = time.monotonic()
    tick = t0
    while True:
        elapsed = time.monotonic() - t0
        if step(elapsed):
            return
        if elapsed > bound:
            raise BenchError(f"not reached within {bound:g} s: {what}")
        tick += POLL
        time.sleep(max(0.0, tick - time.monotonic()))


def measure_isolation(lab: Lab, cluster: ArbitratedCluster, profile: Profile, run: Run) -> None:
    """Every link of the serving node down; the peer's takeover and the overlap."""
    serving = settled(cluster, profile)
    peer = other(serving)
    probe = Probe(lab, cluster.vip)
    seen: dict[str, float] = {}
    try:
        probe.wait_ready()
        t0 = time.monotonic()
        for network in lab.networks:
            lab.link_down(serving, network)
        probe.gate(time.monotonic())

        def step(elapsed: float) -> bool:
            if "stopped" not in seen and cluster.stopped(serving):
                seen["stopped"] = elapsed
            if "peer" not in seen and cluster.serves(peer):
                seen["peer"] = elapsed
            if "takeover" not in seen and cluster.observe(peer)[1]:
                seen["takeover"] = elapsed
            if "takeover" in seen:
                return "stopped" in seen or elapsed - seen["takeover"] > STOP_GRACE
            return False

        poll(f"{cluster.system}: {peer} serves after {serving}'s isolation", RUN_BOUND, step)
        ended = time.monotonic() - t0
        connected, _ = probe.result(max(1.0, RUN_BOUND - ended))
    finally:
        probe.close()
        for network in lab.networks:
            lab.link_up(serving, network)
    run.iso_takeover = seen["takeover"]
    run.iso_connect = None if connected is None else connected - t0
    run.iso_stopped = seen.get("stopped")
    start = seen.get("peer", seen["takeover"])
    end = seen.get("stopped", ended)
    run.iso_overlap = max(0.0, end - start)
    run.iso_stopped_first = "stopped" in seen and seen["stopped"] <= start
    if "stopped" not in seen:
        run.notes.append(f"isolated {serving} still served {ended - start:.1f} s after its peer")
    # Once settled, the client's neighbour entry for the VIP is dropped: after a split
    # brain, the node that keeps serving never announces the address again (it never
    # stopped), and the client may still hold the MAC of the node that stopped.
    holder = wait_until(
        f"{cluster.system}: pair protected after the isolation", cluster.protected,
        SETTLE_BOUND, alive=cluster.check_alive,
    )  # fmt: skip
    if stale_neighbour(lab, cluster.vip, holder):
        run.notes.append(f"the client still sent to {other(holder)}'s MAC: flushed")
    lab.exec("client", ["ip", "neigh", "flush", "dev", lab.interface("client", "lan")])


def stale_neighbour(lab: Lab, address: str, holder: str) -> bool:
    """The client's neighbour entry for ``address`` names a MAC other than ``holder``'s."""
    entry = lab.exec("client", ["ip", "neigh", "show", address]).stdout.split()
    link = lab.exec(holder, ["ip", "-o", "link", "show", lab.interface(holder, "lan")]).stdout
    if "lladdr" not in entry or "link/ether" not in link:
        return False
    mac = link.split("link/ether", 1)[1].split()[0]
    return entry[entry.index("lladdr") + 1] != mac


def measure_arbiter_down(cluster: ArbitratedCluster, profile: Profile, run: Run) -> None:
    """The arbitrator killed under a healthy pair: until nobody serves; restarted:
    until a node serves again."""
    serving = settled(cluster, profile)
    t0 = time.monotonic()
    cluster.arbiter.kill()
    poll(
        f"{cluster.system}: nobody serves with the arbitrator down", RUN_BOUND,
        lambda _: all(cluster.stopped(node) for node in NODES),
    )  # fmt: skip
    run.down_stop = time.monotonic() - t0
    t1 = time.monotonic()
    cluster.arbiter.restart()
    back: list[str] = []

    def again(elapsed: float) -> bool:
        back.extend(node for node in NODES if cluster.observe(node)[1])
        return bool(back)

    poll(f"{cluster.system}: a node serves after the arbitrator's restart", RUN_BOUND, again)
    run.down_recovery = time.monotonic() - t1
    run.down_same_node = back == [serving]


def bench_type(
    lab: Lab, workdir: Path, profile: Profile, kind: str, lease_ttl: float, runs: int,
    results: Results, rows: list[Run], audits: dict[tuple[str, str], dict[str, Any]],
) -> str:  # fmt: skip
    """``runs`` runs of the three faults on a pair with arbitrator ``kind``; the settings."""
    arbiter = ARBITERS[kind](lab, workdir, lease_ttl)
    cluster = ArbitratedCluster(lab, workdir, profile, arbiter)
    settings = cluster.describe()
    print(f"\n{kind}, profile {profile.name} ({settings}):", flush=True)
    try:
        try:
            arbiter.start(cluster)
            cluster.start()
            for index in range(1, runs + 1):
                run = Run(kind, profile.name, index)
                rows.append(run)
                killed = measure_once(lab, cluster, profile, index)
                run.kill_takeover, run.kill_connect = killed.takeover, killed.connect
                if killed.note:
                    run.notes.append(killed.note)
                measure_isolation(lab, cluster, profile, run)
                if kind != "none":
                    measure_arbiter_down(cluster, profile, run)
                print(f"  run {index}/{runs}: " + line(run), flush=True)
        except (BenchError, LabError, subprocess.TimeoutExpired, RuntimeError) as exc:
            message = f"{kind} {profile.name}: {exc}"
            results.errors.append(message)
            print(f"  ERROR {message}", flush=True)
        # not on Ctrl-C: closing the lab then kills every process of it at once
        cluster.stop()
    finally:
        arbiter.close()  # etcd is not one of the lab's processes
    audits[(kind, profile.name)] = audit_of(cluster.dir / "state")
    return settings


def audit_of(state_dir: Path) -> dict[str, Any]:
    journals = sorted(state_dir.glob(f"*/{JOURNAL_NAME}*"))
    if not journals:
        return {"error": "no journal"}
    report = audit(journals)
    s1 = [str(v) for v in report.violations if v.invariant == "S1"]
    return {
        "violations": len(report.violations),
        "s1": len(s1),
        "s1_first": s1[:3],
        "blind_overlaps": report.figures.get("blind_overlaps"),
    }


# -- figures ------------------------------------------------------------------------

MEASURES = {
    "kill_takeover": "kill -9 of the serving node -> the survivor serves, application started",
    "kill_connect": "kill -9 -> the client's first TCP connect to the virtual IP",
    "iso_takeover": "every link of the serving node down -> the peer serves, application started",
    "iso_connect": "isolation -> the client's first TCP connect to the virtual IP",
    "iso_stopped": "isolation -> the isolated node no longer serves (status and application)",
    "iso_overlap": "isolation: both served (from the peer's first sign of serving to the "
    "isolated node stopped; a lower bound when it did not stop)",
    "down_stop": "arbitrator killed under a healthy pair -> nobody serves",
    "down_recovery": "arbitrator restarted -> a node serves again",
}


RATIOS = ("kill_takeover", "kill_connect", "iso_takeover", "iso_connect")
"""The measures compared with none's (none's isolated node never stops)."""


def line(run: Run) -> str:
    parts = [f"{m} {value:.2f}" for m in MEASURES if (value := getattr(run, m)) is not None]
    return "  ".join(parts + run.notes)


def figures(
    rows: Sequence[Run], profiles: Sequence[str], kinds: Sequence[str]
) -> list[dict[str, Any]]:
    out = []
    for profile in profiles:
        medians: dict[str, float] = {}
        for kind in kinds:
            runs = [r for r in rows if r.profile == profile and r.type == kind]
            if not runs:
                continue
            for measure in MEASURES:
                values = [v for r in runs if (v := getattr(r, measure)) is not None]
                s = summary(values)
                if kind == "none" and s is not None:
                    medians[measure] = s["median"]
                base = medians.get(measure) if measure in RATIOS else None
                ratio = s["median"] / base if s is not None and base else None
                out.append({
                    "profile": profile, "type": kind, "measure": measure, "runs": len(runs),
                    "values": len(values), "stats": s, "ratio_to_none": ratio,
                })  # fmt: skip
    return out


def render(
    rows: Sequence[Run],
    profiles: Sequence[str],
    kinds: Sequence[str],
    settings: dict[tuple[str, str], str],
    audits: dict[tuple[str, str], dict[str, Any]],
) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    out = ["All figures in seconds from the fault.", ""]
    out.append("| profile | type | measure | values/runs | median | p95 | max | median / none |")
    out.append("|---|---|---|---|---|---|---|---|")
    for f in figures(rows, profiles, kinds):
        s = f["stats"] or {}
        ratio = "-" if f["ratio_to_none"] is None else f"{f['ratio_to_none']:.2f}"
        out.append(
            f"| {f['profile']} | {f['type']} | {f['measure']} | {f['values']}/{f['runs']}"
            f" | {cell(s.get('median'))} | {cell(s.get('p95'))} | {cell(s.get('max'))}"
            f" | {ratio} |"
        )
    out += ["", "| profile | type | settings | isolated node stopped before its peer served "
            "| arbitrator down: same node serves again | audit: S1 (blind overlaps) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for profile in profiles:
        for kind in kinds:
            runs = [r for r in rows if r.profile == profile and r.type == kind]
            if (kind, profile) not in settings:
                continue
            first = [r.iso_stopped_first for r in runs if r.iso_stopped_first is not None]
            same = [r.down_same_node for r in runs if r.down_same_node is not None]
            a = audits.get((kind, profile), {})
            verdict = a.get("error") or f"{a.get('s1')} ({a.get('blind_overlaps')})"
            back = f"{sum(same)}/{len(same)}" if same else "-"
            out.append(
                f"| {profile} | {kind} | {settings[(kind, profile)]}"
                f" | {sum(first)}/{len(first)} | {back} | {verdict} |"
            )
    out += [""] + [f"{m}: {label}" for m, label in MEASURES.items()]
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each fault per type")
    parser.add_argument("--profiles", default="default", help="comma-separated: default,fast")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated, none first")
    parser.add_argument("--lease-ttl", type=float, default=6.0, help="whole seconds (etcd)")
    parser.add_argument("--json", metavar="FILE", help="also write every run and figure as JSON")
    parser.add_argument(
        "--keep-files", metavar="DIR",
        help="keep configs and logs under DIR (default: a temporary directory, removed)",
    )  # fmt: skip
    args = parser.parse_args()

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    kinds = [k.strip() for k in args.types.split(",") if k.strip()]
    if not profiles or any(p not in PROFILES for p in profiles):
        parser.error(f"profiles must be among {', '.join(PROFILES)}")
    if not kinds or any(k not in TYPES for k in kinds) or len(set(kinds)) != len(kinds):
        parser.error(f"types must be among {', '.join(TYPES)}, each once")
    if args.runs < 1 or args.lease_ttl != int(args.lease_ttl) or args.lease_ttl < 2:
        parser.error("runs >= 1; lease-ttl a whole number of seconds, at least 2")
    needs = [*NETNS]
    needs += [ETCD] if "etcd" in kinds else []
    needs += [PING] if "ping" in kinds else []
    ensure(SCRIPT, needs, root="network namespaces")
    require(SCRIPT, netns_unavailable_reason())

    env = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "failover": __version__,
        "load average before": loadavg(),
    }
    command = " ".join([SCRIPT, *sys.argv[1:]])
    print(f"{command}\n{env}", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    began = time.monotonic()
    results = Results()
    rows: list[Run] = []
    settings: dict[tuple[str, str], str] = {}
    audits: dict[tuple[str, str], dict[str, Any]] = {}
    interrupted = False
    try:
        with work_directory(args.keep_files, "fotakeover-") as workdir:
            for name in profiles:
                with Lab(networks=("lan", "crossover"), client=True, prefix="fotake") as lab:
                    for kind in kinds:
                        settings[(kind, name)] = bench_type(
                            lab, workdir, PROFILES[name], kind, args.lease_ttl, args.runs,
                            results, rows, audits,
                        )  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up; figures so far:", file=sys.stderr)
    document = {
        "command": command,
        "environment": env,
        "runs": [asdict(r) for r in rows],
        "figures": figures(rows, profiles, kinds),
        "audits": {f"{k}/{p}": a for (k, p), a in audits.items()},
        "errors": results.errors,
        "interrupted": interrupted,
    }
    table = render(rows, profiles, kinds, settings, audits)
    return conclude(env, began, table, results.errors, args.json, document)


if __name__ == "__main__":
    raise SystemExit(main())

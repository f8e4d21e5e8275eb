"""What a benchmark needs from the machine, installed on a fresh one or named in one line.

Every script of bench/ that needs something of the machine calls ``ensure`` first::

    from _needs import REPLICATING_LAB, ensure, fuse_device_reason, require

    ensure("campaign.py", REPLICATING_LAB, root="network namespaces")
    require("campaign.py", netns_unavailable_reason())
    require("campaign.py", fuse_device_reason())

``ensure`` looks for each ``Need`` (a command on ``PATH`` or in the sbin
directories, or a file a package installs). When something is missing and
the script runs as root on a machine with ``apt-get``, it refreshes the
package lists (``apt-get update``) and installs the missing Debian packages
(``apt-get install -y``), then looks again. Otherwise, or when that fails,
it prints one line to stderr saying what is missing and how to get it, and
exits with status 2. ``require`` does the same for a condition no package
can fix (root, ``/dev/fuse``, a kernel that forbids namespaces).

Standard library only: the scripts import it before anything heavy.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

EXIT_MISSING = 2
"""The exit status of a script that cannot run here."""
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Searched after ``PATH``: a user's ``PATH`` often lacks them (ip, tc, keepalived)."""
APT_TIMEOUT = 900.0
"""Seconds each apt-get command may take (a slow mirror, a large package)."""


@dataclass(frozen=True)
class Need:
    """One thing a script needs: ``command`` found on ``PATH`` (or in ``SBIN``), or a
    file matching the glob ``path``; Debian's ``package`` provides it."""

    package: str
    command: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if (self.command is None) == (self.path is None):
            raise ValueError(f"a need names a command or a path, not both or neither: {self}")

    @property
    def what(self) -> str:
        return self.command if self.command is not None else str(self.path)

    def present(self) -> bool:
        if self.command is not None:
            return find(self.command) is not None
        return bool(glob.glob(str(self.path)))


# The needs several scripts share.
IP = Need("iproute2", command="ip")
TC = Need("iproute2", command="tc")
NSENTER = Need("util-linux", command="nsenter")
UNSHARE = Need("util-linux", command="unshare")
MOUNT = Need("mount", command="mount")
UMOUNT = Need("mount", command="umount")
FUSERMOUNT = Need("fuse3", command="fusermount3")
NETNS = (IP, NSENTER)
"""A ``failover.lab.Lab``: namespaces, bridges, veths, processes started inside."""
OWN_DISKS = (UNSHARE, MOUNT, NSENTER)
"""``failover.lab.with_own_disks``: a node's daemon in a mount namespace of its own."""
FUSE = (FUSERMOUNT,)
"""A replicated directory's mirror (libfuse3 and fusermount3)."""
ETCD = Need("etcd-server", command="etcd")
"""An etcd server, for ``type: etcd`` arbitrators."""
PING = Need("iputils-ping", command="ping")
"""iputils ``ping``, for ``type: ping`` arbitrators."""
REPLICATING_LAB = (*NETNS, *OWN_DISKS, *FUSE)
"""Two replicating nodes in a lab, each on its own disk (with a usable ``/dev/fuse``)."""


def fuse_device_reason() -> str | None:
    """Why FUSE cannot mount here (no usable ``/dev/fuse``: a kernel or container
    matter, no package fixes it), or None."""
    return None if os.access("/dev/fuse", os.R_OK | os.W_OK) else "no usable /dev/fuse"


def find(command: str) -> str | None:
    """The path of ``command`` on ``PATH``, else in the sbin directories; None if absent."""
    return shutil.which(command) or shutil.which(command, path=os.pathsep.join(SBIN))


def fail(script: str, why: str) -> NoReturn:
    """One line on stderr, ``<script>: cannot run: <why>``, then exit 2."""
    print(f"{script}: cannot run: {why}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_MISSING)


def require(script: str, reason: str | None) -> None:
    """``fail`` with ``reason`` unless it is None (the condition holds)."""
    if reason is not None:
        fail(script, reason)


def missing(needs: Iterable[Need]) -> list[Need]:
    """The needs not present now, in order, without repeats."""
    seen: list[Need] = []
    for need in needs:
        if need not in seen and not need.present():
            seen.append(need)
    return seen


def describe(needs: Sequence[Need]) -> str:
    """``keepalived, ip (Debian: keepalived iproute2)``."""
    packages = " ".join(dict.fromkeys(need.package for need in needs))
    return f"{', '.join(need.what for need in needs)} (Debian: {packages})"


def ensure(script: str, needs: Iterable[Need], *, root: str | None = None) -> None:
    """Return once every need is present; install what is missing when root; else exit 2.

    ``root``: why the script needs root (it exits 2 saying so when not root), or
    None when it does not.
    """
    needs = list(needs)
    as_root = os.geteuid() == 0
    if root is not None and not as_root:
        fail(script, f"needs root ({root})")
    absent = missing(needs)
    if not absent:
        return
    packages = list(dict.fromkeys(need.package for need in absent))
    command = f"apt-get update && apt-get install -y {' '.join(packages)}"
    if not as_root:
        fail(script, f"missing {describe(absent)}; as root: {command}")
    apt = find("apt-get")
    if apt is None:
        fail(script, f"missing {describe(absent)}, and no apt-get to install it")
    print(f"{script}: installing {describe(absent)}", file=sys.stderr, flush=True)
    _apt(script, [apt, "update", "-qq"])
    _apt(script, [apt, "install", "-y", "-qq", *packages])
    still = missing(absent)
    if still:
        fail(script, f"still missing after apt-get install: {describe(still)}")


def _apt(script: str, argv: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(script, f"apt-get {' '.join(argv[1:])}: {exc}")
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = f": {lines[-1]}" if lines else ""
        fail(script, f"apt-get {' '.join(argv[1:])} exited {done.returncode}{last}")

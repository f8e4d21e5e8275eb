"""pyfuse3 against mfusepy: the same passthrough through each, against the local disk.

    sudo .venv/bin/python bench/fuse_choice.py [--seq-mib 256] [--sync-writes 2000] [--creates 2000]

Each library serves a minimal passthrough filesystem (lookup/getattr, create, open, read,
write, fsync, flush, release) over a backing temp dir, mounted on another temp dir by a
child process of this script. In the same run the same three workloads go to the local
disk (a plain temp dir beside them), to each mount and, when ``failover.replication.mirror``
is importable, to the project's ``Mirror`` (mfusepy) without a listener and with one that
only counts calls:

- sequential write: 1 MiB ``write`` calls, then one ``fsync``: MiB/s; the same in 4 KiB
  ``write`` calls (one FUSE request, so one Python call, each);
- synchronous commit: 4 KiB ``pwrite`` + ``fsync`` at increasing offsets: p50 / p99 in µs;
- file creates: ``open(O_CREAT|O_EXCL)`` + ``close`` in one directory: files/s;
- the synchronous commit from 2 threads on 2 files: total commits/s (the Mirror serialises
  every change and its record under one lock: this shows what that costs).

Targets are measured in interleaved rounds (``--rounds``, median kept), so that drift of the
machine (other work, the disk's cache) hits them all alike.

Ratios are against the local disk of the same run. pyfuse3 is installed into this venv if
it is missing (it builds from source: as root, what that needs from Debian is installed
first, ``gcc``, ``pkg-config``, ``libfuse3-dev``, and Debian Python's headers); mfusepy
runs with ``FUSE_LIBRARY_NAME=fuse3``. Needs ``/dev/fuse`` and fusermount3 (``fuse3``,
installed as root if missing); without them it says so in one line and exits 2.
Every mount, child process and temp dir is removed at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _needs import FUSE, Need, ensure, fuse_device_reason, require  # the same directory

SCRIPT = "fuse_choice.py"
MIB = 1 << 20
SMALL = 4096
MOUNT_TIMEOUT_S = 20.0


@dataclass
class Figures:
    seq_mib_s: float
    seq_small_mib_s: float
    sync_p50_us: float
    sync_p99_us: float
    creates_s: float
    parallel_sync_s: float


_COLUMNS = (
    ("seq MiB/s", "seq_mib_s"),
    ("4K seq MiB/s", "seq_small_mib_s"),
    ("sync p50 µs", "sync_p50_us"),
    ("sync p99 µs", "sync_p99_us"),
    ("creates/s", "creates_s"),
    ("2-thr sync/s", "parallel_sync_s"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-mib", type=int, default=256, help="size of the sequential file")
    parser.add_argument(
        "--seq-small-mib", type=int, default=32, help="size of the file written in 4 KiB writes"
    )
    parser.add_argument("--sync-writes", type=int, default=2000, help="4 KiB write+fsync count")
    parser.add_argument("--creates", type=int, default=2000, help="files created")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument(
        "--serve", nargs=3, metavar=("LIB", "BACKING", "MOUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        return _serve(*args.serve)

    ensure(SCRIPT, FUSE)
    require(SCRIPT, fuse_device_reason())
    _ensure_pyfuse3()
    libs = ["pyfuse3", "mfusepy"]
    if importlib.util.find_spec("failover.replication.mirror") is not None:
        libs += ["mirror", "mirror-listener"]
    workdir = Path(tempfile.mkdtemp(prefix="fo-fuse-bench-"))
    rounds: dict[str, list[Figures]] = {}
    try:
        with contextlib.ExitStack() as stack:
            targets = {"local disk": workdir / "local"}
            targets["local disk"].mkdir()
            for lib in libs:
                targets[_LABELS[lib]] = stack.enter_context(_mounted(lib, workdir))
            for number in range(args.rounds):
                for label, where in targets.items():  # interleaved: drift hits every target
                    run_dir = where / f"round{number}"
                    run_dir.mkdir()
                    rounds.setdefault(label, []).append(_measure(run_dir, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _print({label: _median(figs) for label, figs in rounds.items()}, args)
    return 0


_LABELS = {
    "pyfuse3": "pyfuse3 passthrough",
    "mfusepy": "mfusepy passthrough",
    "mirror": "Mirror, no listener",
    "mirror-listener": "Mirror, listener that only counts",
}


def _median(figures: list[Figures]) -> Figures:
    values = {attr: statistics.median(getattr(f, attr) for f in figures) for _, attr in _COLUMNS}
    return Figures(**values)


def _print(results: dict[str, Figures], args: argparse.Namespace) -> None:
    base = results["local disk"]
    print(
        f"same run, median of {args.rounds} interleaved rounds; "
        f"seq {args.seq_mib} MiB in 1 MiB writes + fsync; {args.seq_small_mib} MiB in "
        f"4 KiB writes + fsync; {args.sync_writes} x (4 KiB pwrite + fsync), also from "
        f"2 threads on 2 files; {args.creates} creates"
    )
    print(f"{'':<36}" + "".join(f"{title:>14}" for title, _ in _COLUMNS))
    for label, fig in results.items():
        print(f"{label:<36}" + "".join(f"{getattr(fig, a):14.0f}" for _, a in _COLUMNS))
        if fig is not base:
            ratios = (getattr(fig, a) / getattr(base, a) for _, a in _COLUMNS)
            print(f"{'  ratio to local disk':<36}" + "".join(f"{r:14.2f}" for r in ratios))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


# -- workloads ------------------------------------------------------------------------------


def _measure(where: Path, args: argparse.Namespace) -> Figures:
    seq = _sequential(where / "seq", args.seq_mib)
    seq_small = _sequential(where / "seq4k", args.seq_small_mib, SMALL)
    p50, p99 = _sync_loop(where / "sync", args.sync_writes)
    creates = _creates(where / "creates", args.creates)
    parallel = _parallel_sync(where, args.sync_writes)
    return Figures(seq, seq_small, p50, p99, creates, parallel)


def _sequential(path: Path, mib: int, size: int = MIB) -> float:
    block = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(mib * (MIB // size)):
            os.write(fd, block)
        os.fsync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    os.unlink(path)
    return mib / elapsed


def _sync_samples(path: Path, count: int) -> list[float]:
    block = os.urandom(SMALL)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(count):
            started = time.perf_counter()
            os.pwrite(fd, block, i * SMALL)
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    os.unlink(path)
    return samples


def _sync_loop(path: Path, count: int) -> tuple[float, float]:
    cuts = statistics.quantiles(_sync_samples(path, count), n=100, method="inclusive")
    return cuts[49] * 1e6, cuts[98] * 1e6


def _parallel_sync(where: Path, count: int) -> float:
    """Two threads, each its own file: what the mirror's one lock costs under concurrency."""
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(lambda n: _sync_samples(where / f"par{n}", count // 2), range(2)))
        return (count // 2 * 2) / (time.perf_counter() - started)


def _creates(directory: Path, count: int) -> float:
    directory.mkdir()
    started = time.perf_counter()
    for i in range(count):
        os.close(os.open(directory / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return count / (time.perf_counter() - started)


# -- mounts ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _mounted(lib: str, workdir: Path) -> Iterator[Path]:
    """Runs ``--serve lib`` in a child process; yields the mount point once it is live."""
    backing = workdir / f"{lib}-backing"
    mountpoint = workdir / f"{lib}-mnt"
    backing.mkdir()
    mountpoint.mkdir()
    if lib.startswith("mirror"):
        mountpoint = backing
    env = dict(os.environ, FUSE_LIBRARY_NAME="fuse3")
    command = [sys.executable, __file__, "--serve", lib, str(backing), str(mountpoint)]
    child = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not os.path.ismount(mountpoint):
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{lib}: the mount on {mountpoint} did not come up")
            time.sleep(0.02)  # polling a mount table has no event to wait on
        yield mountpoint
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        try:
            child.wait(MOUNT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _serve(lib: str, backing: str, mountpoint: str) -> int:
    if lib == "pyfuse3":
        _serve_pyfuse3(backing, mountpoint)
    elif lib == "mfusepy":
        _serve_mfusepy(backing, mountpoint)
    else:
        from failover.replication.mirror import Mirror  # noqa: PLC0415 - only in the child

        # The Mirror mounts over its own directory (the mount point is the backing dir).
        listener = _CountingListener() if lib == "mirror-listener" else None
        with Mirror("bench", Path(mountpoint), listener) as mirror:
            mirror.wait_unmounted()
    return 0


class _CountingListener:
    """The cheapest listener: what building records and calling out costs, without a peer."""

    def __init__(self) -> None:
        self.calls = 0

    def before(self, op: object) -> None:
        self.calls += 1

    def after(self, op: object) -> None:
        self.calls += 1

    def sync(self, op: object, local: Callable[[], None]) -> None:
        local()
        self.calls += 1

    def session(self) -> None:
        """No sessions: every fsync asks for a sync."""


def _ensure_pyfuse3() -> None:
    """pyfuse3 in this venv: built from source by pip, with what that needs from Debian."""
    if importlib.util.find_spec("pyfuse3") is not None:
        return
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    build = [
        Need("gcc", command="gcc"),
        Need("pkg-config", command="pkg-config"),
        Need("libfuse3-dev", path="/usr/include/fuse3/fuse_lowlevel.h"),
    ]
    if sys.base_prefix == "/usr":  # Debian's Python: its headers are a package
        build.append(Need(f"python{sys.version_info[0]}-dev", path=str(headers)))
    ensure(SCRIPT, build)
    require(SCRIPT, None if headers.exists() else f"pyfuse3 builds from source: no {headers}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "pyfuse3"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["failed"]
        require(SCRIPT, f"pip install pyfuse3: {lines[-1]}")


# -- the two minimal passthroughs -------------------------------------------------------------


def _serve_mfusepy(backing: str, mountpoint: str) -> None:
    import mfusepy  # noqa: PLC0415 - imported in the child that serves it

    class Passthrough(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self, root: str) -> None:
            self._root = root

        def _real(self, path: str) -> str:
            return self._root + path

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return attrs

        def create(self, path: str, mode: int, flags: int) -> int:
            return os.open(self._real(path), flags | os.O_CREAT, mode)

        def open(self, path: str, flags: int) -> int:
            return os.open(self._real(path), flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            os.truncate(fh if fh is not None else self._real(path), length)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            (os.fdatasync if datasync else os.fsync)(fh)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

    mfusepy.FUSE(Passthrough(backing), mountpoint, foreground=True, max_idle_threads=8)


def _serve_pyfuse3(backing: str, mountpoint: str) -> None:
    import pyfuse3  # noqa: PLC0415 - installed by _ensure_pyfuse3 at run time
    import trio  # noqa: PLC0415

    class Passthrough(pyfuse3.Operations):  # type: ignore[misc]
        def __init__(self, root: str) -> None:
            super().__init__()
            self._paths = {pyfuse3.ROOT_INODE: root}

        def _entry(self, path: str) -> Any:
            st = os.lstat(path)
            inode = pyfuse3.ROOT_INODE if path == self._paths[pyfuse3.ROOT_INODE] else st.st_ino
            self._paths[inode] = path
            entry = pyfuse3.EntryAttributes()
            for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks"):
                setattr(entry, key, getattr(st, key))
            entry.st_ino = inode
            entry.st_atime_ns, entry.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
            entry.st_ctime_ns = st.st_ctime_ns
            entry.st_blksize = st.st_blksize
            entry.entry_timeout = entry.attr_timeout = 1.0
            return entry

        def _child(self, parent: int, name: bytes) -> str:
            return os.path.join(self._paths[parent], os.fsdecode(name))

        async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
            try:
                return self._entry(self._child(parent_inode, name))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            return self._entry(self._paths[inode])

        async def setattr(
            self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
        ) -> Any:
            if fields.update_size:
                os.truncate(self._paths[inode], attr.st_size)
            return self._entry(self._paths[inode])

        async def create(
            self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
        ) -> tuple[Any, Any]:
            path = self._child(parent_inode, name)
            fd = os.open(path, flags | os.O_CREAT, mode)
            return pyfuse3.FileInfo(fh=fd), self._entry(path)

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            return pyfuse3.FileInfo(fh=os.open(self._paths[inode], flags & ~os.O_CREAT))

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return os.pread(fh, size, off)

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            return os.pwrite(fh, buf, off)

        async def fsync(self, fh: int, datasync: bool) -> None:
            (os.fdatasync if datasync else os.fsync)(fh)

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            os.close(fh)

        async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
            os.unlink(self._child(parent_inode, name))

        async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
            path = self._child(parent_inode, name)
            os.mkdir(path, mode)
            return self._entry(path)

        async def forget(self, inode_list: Any) -> None:
            return None

    options = set(pyfuse3.default_options)
    options.add("fsname=pyfuse3-bench")
    pyfuse3.init(Passthrough(backing), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    except OSError as exc:  # the loop ends with ENODEV when fusermount3 -u unmounts
        if exc.errno != errno.ENODEV:
            raise
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    sys.exit(main())

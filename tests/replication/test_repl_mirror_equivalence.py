"""Random operation sequences through the mirror, on a plain directory and, replayed from the
listener's records by the Applier, on the peer: the three trees must be identical.

CI runs a small number of examples; for long runs set FAILOVER_MIRROR_EXAMPLES (examples)
and FAILOVER_MIRROR_STEPS (operations per example), e.g.::

    FAILOVER_MIRROR_EXAMPLES=2000 FAILOVER_MIRROR_STEPS=80 \
        .venv/bin/pytest tests/replication/test_repl_mirror_equivalence.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from mirror_support import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    RecordingListener,
    assert_same_tree,
    fallocate,
    mounted,
    needs_fuse,
    snapshot,
    temp_dir,
)

from failover.replication.apply import Applier

pytestmark = needs_fuse

EXAMPLES = int(os.environ.get("FAILOVER_MIRROR_EXAMPLES", "30"))
STEPS = int(os.environ.get("FAILOVER_MIRROR_STEPS", "30"))

# A small pool of names so that operations collide: same file, parent and child, across dirs.
PATHS = ["a", "b", "d", "e", "d/a", "d/b", "e/c", "d/f/g"]
XATTRS = ["user.one", "user.two"]

Step = tuple[Any, ...]
paths = st.sampled_from(PATHS)
modes = st.sampled_from([0o600, 0o644, 0o755, 0o700, 0o4755])
explicit_times = st.integers(1, 10_000).map(lambda k: k * 1_000_000_000 + 123_457)

steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("create"), paths, modes),
    st.tuples(
        st.just("write"), paths, st.integers(0, 300_000), st.binary(min_size=1, max_size=5000)
    ),
    st.tuples(st.just("truncate"), paths, st.integers(0, 400_000)),
    st.tuples(st.just("punch"), paths, st.integers(0, 300_000), st.integers(1, 100_000)),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("rename"), paths, paths),
    st.tuples(st.just("mkdir"), paths, modes),
    st.tuples(st.just("rmdir"), paths),
    # Relative targets that stay inside the tree wherever the link is (no "..": a link at the
    # root would point outside both trees, to the same place).
    st.tuples(st.just("symlink"), st.sampled_from(["a", "d/b", "missing"]), paths),
    st.tuples(st.just("link"), paths, paths),
    st.tuples(st.just("chmod"), paths, modes),
    st.tuples(st.just("utime"), paths, explicit_times, explicit_times),
    st.tuples(
        st.just("setxattr"), paths, st.sampled_from(XATTRS), st.binary(min_size=0, max_size=64)
    ),
    st.tuples(st.just("removexattr"), paths, st.sampled_from(XATTRS)),
    st.tuples(st.just("fsync"), paths),
)


def _with_fd(path: Path, flags: int, action: Callable[[int], object]) -> None:
    fd = os.open(path, flags)
    try:
        action(fd)
    finally:
        os.close(fd)


def run(root: Path, step: Step) -> int | None:
    """Apply one step with ordinary system calls under ``root``; the errno, or None."""
    kind, first, *rest = step
    path = root / first
    try:
        if kind == "create":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, rest[0]))
        elif kind == "write":
            _with_fd(path, os.O_WRONLY, lambda fd: os.pwrite(fd, rest[1], rest[0]))
        elif kind == "truncate":
            os.truncate(path, rest[0])
        elif kind == "punch":
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            _with_fd(path, os.O_WRONLY, lambda fd: fallocate(fd, mode, rest[0], rest[1]))
        elif kind == "unlink":
            os.unlink(path)
        elif kind == "rename":
            os.rename(path, root / rest[0])
        elif kind == "mkdir":
            os.mkdir(path, rest[0])
        elif kind == "rmdir":
            os.rmdir(path)
        elif kind == "symlink":
            os.symlink(first, root / rest[0])
        elif kind == "link":
            os.link(path, root / rest[0], follow_symlinks=False)
        elif kind == "chmod":
            os.chmod(path, rest[0])
        elif kind == "utime":
            os.utime(path, ns=(rest[0], rest[1]))
        elif kind == "setxattr":
            os.setxattr(path, rest[0], rest[1])
        elif kind == "removexattr":
            os.removexattr(path, rest[0])
        elif kind == "fsync":
            _with_fd(path, os.O_RDONLY, os.fsync)
        else:  # pragma: no cover - the strategy lists every kind
            raise AssertionError(kind)
    except OSError as exc:
        return exc.errno
    return None


@needs_fuse
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps, max_size=STEPS))
def test_mirror_reference_and_peer_trees_are_identical(program: list[Step]) -> None:
    listener = RecordingListener()
    explicit = {t for step in program if step[0] == "utime" for t in step[2:]}
    with (
        temp_dir("fo-eq-mirror-") as mirrored,
        temp_dir("fo-eq-ref-") as reference,
        temp_dir("fo-eq-peer-") as peer,
    ):
        with mounted(mirrored, listener):
            succeeded = 0
            for number, step in enumerate(program):
                got, want = run(mirrored, step), run(reference, step)
                assert got == want, f"step {number} {step[:2]}: errno {got}, plain dir {want}"
                succeeded += got is None
            # Steer towards programs that change a lot rather than fail on missing names.
            target(float(succeeded), label="steps that succeeded")
            event(f"steps that succeeded: {min(succeeded // 5 * 5, 30)}+")
            expected = snapshot(reference)
            assert_same_tree(snapshot(mirrored), expected, explicit, "through the mount")
        assert_same_tree(snapshot(mirrored), expected, explicit, "after unmount")
        with Applier({"data": peer}) as applier:
            for op in listener.after_ops:
                applier.apply(op)
        assert_same_tree(snapshot(peer), expected, explicit, "on the peer")

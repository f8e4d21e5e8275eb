"""Run pieces of a model check in forked processes, one per core.

``fork_map`` is a small ``map`` over forked children. A forked child shares
the parent's memory at the moment of the fork (copy-on-write), so a piece of
work can read a large explored graph without it being sent anywhere; only
each result travels back, pickled through a pipe. Unlike
``multiprocessing.Pool``, whose workers are daemonic and may not have
children of their own, a child here may call ``fork_map`` again: a root's
explorer splits its liveness check across the cores once its graph is built.

POSIX only (``os.fork``); where forking is unavailable, or with one item or
one core, the work runs in the calling process.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

_T = TypeVar("_T")
_R = TypeVar("_R")


class ChildFailed(RuntimeError):
    """A forked piece of work raised; the message carries its traceback."""


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fork_map(function: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[function(item) for item in items]``, the items before the last each in
    a forked child, the last in this process; results in the order of ``items``.
    A child that raises makes this raise ``ChildFailed`` with its traceback."""
    if len(items) <= 1 or not hasattr(os, "fork"):
        return [function(item) for item in items]
    children: list[tuple[int, int]] = []
    try:
        for item in items[:-1]:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
                os.close(read_end)
                _child(function, item, write_end)
            os.close(write_end)
            children.append((pid, read_end))
        last = function(items[-1])
        results: list[_R] = []
        while children:
            pid, fd = children.pop(0)
            results.append(cast(_R, _collect(pid, fd)))
    finally:
        for pid, fd in children:  # only on an error in this process: stop the rest
            os.close(fd)
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return [*results, last]


def _child(function: Callable[[_T], object], item: _T, fd: int) -> None:  # pragma: no cover
    code = 0
    try:
        try:
            payload = pickle.dumps((True, function(item)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # every failure is reported to the parent
            payload = pickle.dumps((False, traceback.format_exc()))
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
    except BaseException:  # the parent sees a short read
        code = 1
    finally:
        os._exit(code)


def _collect(pid: int, fd: int) -> object:
    with os.fdopen(fd, "rb") as stream:
        data = stream.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise ChildFailed(f"a forked model-check worker (pid {pid}) died: wait status {status}")
    ok, value = pickle.loads(data)  # our own child, through our own pipe
    if not ok:
        raise ChildFailed(f"a forked model-check worker failed:\n{value}")
    return value

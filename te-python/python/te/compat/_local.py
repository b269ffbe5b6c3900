"""Local memory for the compatible modules.

te needs the local side of every transfer registered with the engine; the
APIs te.compat mirrors let a requester read into (or write from) memory it
never registered. This helper makes that work: a span inside a region the
caller registered is used as it is; any other span is registered for the
duration of the call (no copy) and unregistered afterwards; a span that
cannot be registered (it overlaps another region) goes through a bounce
buffer of engine memory (one copy).
"""

from __future__ import annotations

import bisect
import ctypes
import threading
from typing import Callable

import te


class Covered:
    """The regions the caller registered through the compatible API, kept
    sorted to tell in O(log n) whether a span lies inside one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bases: list[int] = []
        self._ends: list[int] = []

    def add(self, base: int, length: int) -> None:
        with self._lock:
            i = bisect.bisect_left(self._bases, base)
            self._bases.insert(i, base)
            self._ends.insert(i, base + length)

    def remove(self, base: int) -> None:
        with self._lock:
            i = bisect.bisect_left(self._bases, base)
            if i < len(self._bases) and self._bases[i] == base:
                del self._bases[i]
                del self._ends[i]

    def clear(self) -> None:
        with self._lock:
            self._bases.clear()
            self._ends.clear()

    def covers(self, addr: int, length: int) -> bool:
        with self._lock:
            i = bisect.bisect_right(self._bases, addr) - 1
            return i >= 0 and addr + length <= self._ends[i]


def prepare(
    engine: te.Engine, covered: Covered, addrs: list[int], lengths: list[int], *, into_local: bool
) -> tuple[list[int], Callable[[], None], Callable[[bool], None]]:
    """Local addresses te can use for ``addrs``/``lengths``.

    Returns ``(addresses, before, after)``: call ``before()`` ahead of the
    transfer (fills bounce buffers of writes) and ``after(ok)`` once it ended,
    successfully or not (copies bounce buffers of successful reads out, unregisters
    what was registered for the call, frees bounce buffers).
    ``into_local`` is True for reads (the local memory is the destination).
    """
    use = list(addrs)
    temp: list[int] = []
    bounces: list[tuple[int, te.Memory, int]] = []
    try:
        for i, (a, n) in enumerate(zip(addrs, lengths)):
            if covered.covers(a, n):
                continue
            try:
                engine.register(a, n, perm="local_only")
                temp.append(a)
            except te.InvalidError:
                if engine.location != "cpu":
                    raise  # device memory: no host copy to bounce through
                # Overlaps a region (or another span of this call): bounce.
                m = engine.alloc(n, perm="local_only")
                bounces.append((a, m, n))
                use[i] = m.addr
    except BaseException:
        _undo(engine, temp, bounces, copy_out=False)
        raise

    def before() -> None:
        if not into_local:
            for a, m, n in bounces:
                ctypes.memmove(m.addr, a, n)

    def after(ok: bool) -> None:
        _undo(engine, temp, bounces, copy_out=into_local and ok)

    return use, before, after


def _undo(engine: te.Engine, temp: list[int], bounces: list[tuple[int, te.Memory, int]], *, copy_out: bool) -> None:
    for a in temp:
        try:
            engine.unregister(a)
        except te.Error:
            pass  # finalized meanwhile: the engine let go of it already
    for a, m, n in bounces:
        if copy_out:
            ctypes.memmove(a, m.addr, n)
        try:
            m.free()
        except te.Error:
            pass

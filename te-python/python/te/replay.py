"""A replay transfer backend on te (unilab's ``ReplayTransferBackend``).

Replay pipelines stage batches in a ring of host slots and copy each into a
device slot, asynchronously, with a ready flag per slot. This backend does
that through te: the host slots are registered with a host engine, the
device slots are memory of a te device engine (``sim:N`` here, ``npu:N``
with the Ascend driver), and each ``submit_h2d`` is a te batch that moves
the host slot into the device slot through the driver's staging.

::

    backend = build_replay_transfer_backend(device="sim:0", ring_depth=2)
    backend.register_host_slots([np.empty(shape, np.float32) for _ in range(2)])
    dev = backend.allocate_device_slots(count=2, shape=shape, dtype=np.float32)
    for i, batch in enumerate(batches):
        slot = i % 2
        if i >= 2:
            backend.synchronize_ready(slot)   # the previous copy into it landed
            consume(dev[slot])
            backend.clear_ready(slot)
        host[slot][:] = batch
        backend.submit_h2d(slot=slot, dst=dev[slot], src=host[slot], metadata=None,
                           trace_recorder=None, trace_cuda_events=False, h2d_bytes=None,
                           pack_layout=None, pack_executor=None)
    backend.close()

Rules: a slot whose copy was submitted and not yet seen ready
(``ready_query`` true, ``synchronize_ready`` or ``clear_ready`` after it
ended) cannot be refilled (``te.NotReadyError``); ``src`` and ``dst`` must
be the slot's own host and device slot, of the shape and dtype the device
slots were allocated with (``te.InvalidError`` naming the difference);
after ``close()`` every call is ``te.NotReadyError``. A copy that failed
raises its ``te.Error`` from ``ready_query`` / ``synchronize_ready``.

te has no streams: ``wait_current_stream_for_ready`` waits on the host like
``synchronize_ready``, and ``supports_timing_events`` is False.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

import te

__all__ = ["TeReplayTransferBackend", "DeviceSlot", "build_replay_transfer_backend"]


def _dtype(d: Any) -> np.dtype:
    try:
        return np.dtype(d)
    except TypeError:
        return np.dtype(str(d).replace("torch.", ""))


class DeviceSlot:
    """A device slot: ``nbytes`` of te device memory holding an array of
    ``shape`` and ``dtype``. Device memory is not host-addressable:
    ``numpy()`` copies it back (for checks); ``data_ptr()`` is its device
    address."""

    def __init__(self, memory: te.Memory, shape: tuple[int, ...], dtype: np.dtype, device: str) -> None:
        self.memory = memory
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.nbytes = memory.length

    def data_ptr(self) -> int:
        """The device address of the first byte."""
        return self.memory.addr

    def numel(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))

    def element_size(self) -> int:
        """Bytes of one element."""
        return self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """A host copy of the slot's contents."""
        return np.frombuffer(self.memory.read(), dtype=self.dtype).reshape(self.shape)

    def __repr__(self) -> str:
        return f"DeviceSlot(device={self.device!r}, shape={self.shape}, dtype={self.dtype}, addr={self.memory.addr:#x})"


class TeReplayTransferBackend:
    """Host-to-device ring on te devices (``sim:N``, ``npu:N``), following the
    ``ReplayTransferBackend`` protocol."""

    device_family = "te"
    h2d_submitter = "te_engine_batch"
    host_memory_kind = "te_registered_host"
    host_pinned = False
    direct_pinned_shared = False
    supports_async_submit = True
    supports_timing_events = False

    def __init__(self, *, device: Any, ring_depth: int) -> None:
        if isinstance(ring_depth, bool) or not isinstance(ring_depth, int) or ring_depth < 1:
            raise te.InvalidError(f"ring_depth {ring_depth!r} must be a positive int")
        self.device = str(device)
        self.ring_depth = ring_depth
        self._dev = te.Engine(location=self.device)
        try:
            self._host = te.Engine(path="tcp")
            self._seg = self._host.open_segment(self._dev.segment_name)
        except BaseException:
            self._dev.finalize()
            raise
        self._host_slots: list[Any] = []
        self._host_addrs: list[int] = []
        self._dev_slots: list[DeviceSlot] = []
        self._batch: list[int | None] = [None] * ring_depth
        self._ready = [False] * ring_depth
        self._closed = False

    # ---- helpers ----

    def _live(self) -> None:
        if self._closed:
            raise te.NotReadyError("the replay transfer backend is closed")

    def _slot(self, slot: int) -> int:
        self._live()
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.ring_depth:
            raise te.InvalidError(f"slot {slot!r} is not in 0..{self.ring_depth - 1}")
        return slot

    def _finish(self, slot: int, st: te.BatchStatus) -> None:
        b = self._batch[slot]
        assert b is not None
        err = None if st.ok else self._host.batch_error(b)
        self._host.free_batch(b)
        self._batch[slot] = None
        if err is not None:
            raise err
        self._ready[slot] = True

    # ---- the protocol ----

    def register_host_slots(self, slots: Sequence[Any]) -> None:
        """Registers the ring's host slots (one per ring entry: C-contiguous
        arrays, numpy or anything with the buffer protocol)."""
        self._live()
        if self._host_slots:
            raise te.InvalidError("host slots are registered already")
        if len(slots) != self.ring_depth:
            raise te.InvalidError(f"{len(slots)} host slots for a ring of depth {self.ring_depth}")
        addrs = self._host.register_batch(list(slots), perm="local_only")
        self._host_slots = list(slots)
        self._host_addrs = addrs

    def allocate_device_slots(self, *, count: int, shape: Sequence[int], dtype: Any) -> list[DeviceSlot]:
        """Allocates ``count`` (the ring depth) device slots of ``shape`` and ``dtype``."""
        self._live()
        if self._dev_slots:
            raise te.InvalidError("device slots are allocated already")
        if count != self.ring_depth:
            raise te.InvalidError(f"count {count} differs from the ring depth {self.ring_depth}")
        shape = tuple(int(s) for s in shape)
        dt = _dtype(dtype)
        nbytes = int(np.prod(shape)) * dt.itemsize
        if nbytes <= 0:
            raise te.InvalidError(f"shape {shape} of {dt} holds no bytes")
        slots = []
        try:
            for _ in range(count):
                slots.append(DeviceSlot(self._dev.alloc(nbytes), shape, dt, self.device))
        except BaseException:
            for s in slots:
                s.memory.free()
            raise
        self._dev_slots = slots
        return list(slots)

    def submit_h2d(
        self,
        *,
        slot: int,
        dst: Any,
        src: Any,
        metadata: Any = None,
        trace_recorder: Any = None,
        trace_cuda_events: bool = False,
        h2d_bytes: int | None = None,
        pack_layout: Any = None,
        pack_executor: Any = None,
    ) -> float:
        """Starts copying host slot ``slot`` (``src``) into device slot
        ``slot`` (``dst``): ``h2d_bytes`` bytes (default: all). Returns the
        seconds the submission took; the copy goes on asynchronously."""
        t0 = time.perf_counter()
        slot = self._slot(slot)
        if not self._host_slots or not self._dev_slots:
            raise te.NotReadyError("register_host_slots and allocate_device_slots come before submit_h2d")
        if self._batch[slot] is not None:
            raise te.NotReadyError(
                f"slot {slot} still has a copy in flight (submitted, not yet seen ready): "
                f"synchronize_ready({slot}) or ready_query({slot}) first"
            )
        dev = self._dev_slots[slot]
        if dst is not dev:
            raise te.InvalidError(f"dst is not device slot {slot} of this backend")
        src_shape = tuple(getattr(src, "shape", ()))
        src_dtype = _dtype(getattr(src, "dtype", "uint8"))
        if src_shape != dev.shape or src_dtype != dev.dtype:
            raise te.InvalidError(
                f"src of shape {src_shape} and dtype {src_dtype} does not match the device slots' "
                f"shape {dev.shape} and dtype {dev.dtype}"
            )
        addr = _host_address(src)
        if addr != self._host_addrs[slot]:
            raise te.InvalidError(f"src is not host slot {slot} registered with register_host_slots")
        n = dev.nbytes if h2d_bytes is None else int(h2d_bytes)
        if not 0 < n <= dev.nbytes:
            raise te.InvalidError(f"h2d_bytes {h2d_bytes} outside 1..{dev.nbytes}")
        b = self._host.allocate_batch(1)
        try:
            self._host.submit(b, [("write", addr, self._seg, dev.memory.addr, n)])
        except BaseException:
            self._host.free_batch(b)
            raise
        self._batch[slot] = b
        self._ready[slot] = False
        return time.perf_counter() - t0

    def clear_ready(self, slot: int) -> None:
        """Clears the slot's ready flag (its data was consumed); refused
        while its copy is in flight."""
        slot = self._slot(slot)
        b = self._batch[slot]
        if b is not None:
            st = self._host.batch_status(b)
            if not st.done:
                raise te.NotReadyError(f"slot {slot} still has a copy in flight: synchronize_ready({slot}) first")
            self._finish(slot, st)
        self._ready[slot] = False

    def ready_query(self, slot: int) -> bool:
        """True when the slot's last copy has landed (without waiting)."""
        slot = self._slot(slot)
        b = self._batch[slot]
        if b is not None:
            st = self._host.batch_status(b)
            if not st.done:
                return False
            self._finish(slot, st)
        return self._ready[slot]

    def synchronize_ready(self, slot: int) -> None:
        """Waits until the slot's last copy has landed (Ctrl-C interrupts)."""
        slot = self._slot(slot)
        b = self._batch[slot]
        if b is not None:
            self._finish(slot, self._host.wait_batch(b))

    def wait_current_stream_for_ready(self, slot: int) -> None:
        """te has no streams: waits on the host, as ``synchronize_ready``."""
        self.synchronize_ready(slot)

    def close(self) -> None:
        """Cancels copies in flight, frees the device slots, unregisters the
        host slots and stops the engines. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for b in self._batch:
            if b is not None:
                try:
                    self._host.cancel_batch(b)
                    self._host.wait_batch(b)
                    self._host.free_batch(b)
                except te.Error:
                    pass
        self._batch = [None] * self.ring_depth
        for a in self._host_addrs:
            try:
                self._host.unregister(a)
            except te.Error:
                pass
        for s in self._dev_slots:
            try:
                s.memory.free()
            except te.Error:
                pass
        self._host.finalize()
        self._dev.finalize()

    def __enter__(self) -> "TeReplayTransferBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _host_address(obj: Any) -> int:
    """The host address of an array-like object (numpy, buffer, torch)."""
    if hasattr(obj, "__array_interface__"):
        return int(obj.__array_interface__["data"][0])
    if hasattr(obj, "data_ptr"):
        return int(obj.data_ptr())
    return int(np.frombuffer(obj, np.uint8).__array_interface__["data"][0])


def build_replay_transfer_backend(*, device: Any, ring_depth: int) -> TeReplayTransferBackend:
    """The te transfer backend for a learner device (``sim:N``, ``npu:N``)."""
    return TeReplayTransferBackend(device=device, ring_depth=ring_depth)

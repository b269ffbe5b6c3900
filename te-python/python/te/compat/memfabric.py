"""Drop-in memfabric_hybrid ``TransferEngine`` (its ``_pymf_transfer`` module) on te.

Change ``from memfabric_hybrid import TransferEngine`` (or ``mf_adapter``) to
``from te.compat.memfabric import TransferEngine``: same method names, keyword names, defaults and
``int`` return values (0 on success, nonzero on failure, the reason logged on the
``te.compat.memfabric`` logger). What te does with each argument:

- ``initialize(store_url, session_id, role, device_id, data_op_type=SDMA,
  store_server_role="Decode")``: ``role`` must be ``"Prefill"`` or ``"Decode"``
  (else -1, as memfabric). ``session_id`` is ``host:port``: the engine listens there and
  peers name it by it (``dest_session``), so memfabric's config store is not needed;
  ``store_url`` and ``store_server_role`` are accepted and not used. The engine's memory
  is ``npu:<device_id>`` (te-driver-ascend: CANN's ``libascendcl.so`` through
  ``$TE_ACL_LIBRARY``, ``$ASCEND_HOME_PATH/lib64`` or the loader path); ``data_op_type``
  is accepted: te picks the path itself (the same-host path with ACL IPC between engines
  on one host, TCP elsewhere).
- ``get_rpc_port()`` is ``"<port>_<pid>"``, as memfabric's.
- ``register_memory`` / ``batch_register_memory`` / ``unregister_memory``: device memory
  of this engine's device (read and write for peers).
- ``transfer_sync_*`` / ``batch_transfer_sync_*``: block until the data is in place.
- ``transfer_async_*_submit`` / ``batch_transfer_async_*_submit(..., stream)``: ordered on
  the caller's ``aclrtStream`` (an int, e.g. ``torch.npu.current_stream().npu_stream``):
  the transfer starts after the work queued on the stream before the call and the work
  queued after it waits for the transfer, with no host wait (``te.Engine.submit_on_stream``).
  The local buffers must be registered. The return value covers the submission; a transfer
  that fails later is logged (the stream goes on, as te never leaves a stream waiting).
- ``destroy()`` / ``unInitialize()`` finalize the engine (async transfers still running
  are waited for first).
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from typing import Sequence

import te

from . import _local

_log = logging.getLogger("te.compat.memfabric")


class TransferOpcode(enum.IntEnum):
    """As memfabric's ``TransferEngine.TransferOpcode``."""

    Read = 0
    Write = 1


class TransDataOpType(enum.IntEnum):
    """As memfabric's ``TransferEngine.TransDataOpType`` (accepted; te picks the path)."""

    SDMA = 0
    DEVICE_RDMA = 1


def create_config_store(store_url: str) -> int:
    """memfabric's config store server: te needs none (peers are named by ``host:port``); 0."""
    return 0


def _fail(e: Exception, what: str) -> int:
    _log.error("%s: %s", what, e)
    return -1


class TransferEngine:
    """memfabric_hybrid's transfer engine, on te."""

    TransferOpcode = TransferOpcode
    TransDataOpType = TransDataOpType

    def __init__(self) -> None:
        self._engine: te.Engine | None = None
        self._covered = _local.Covered()
        self._lock = threading.Lock()
        #: Stream-ordered batches not yet seen ended, with what they were.
        self._async: list[tuple[int, str]] = []

    # ---- set-up ----

    def initialize(
        self,
        store_url: str,
        session_id: str,
        role: str,
        device_id: int,
        data_op_type: TransDataOpType = TransDataOpType.SDMA,
        store_server_role: str = "Decode",
    ) -> int:
        """Starts the engine on ``session_id`` (``host:port``) with ``npu:<device_id>`` memory."""
        if role not in ("Prefill", "Decode"):
            _log.error("initialize: role %r: expected 'Prefill' or 'Decode'", role)
            return -1
        with self._lock:
            if self._engine is not None:
                _log.error("initialize: already initialized")
                return -1
            try:
                if int(device_id) < 0:
                    raise te.InvalidError(f"device_id {device_id} is negative")
                self._engine = te.Engine(listen=str(session_id), location=f"npu:{int(device_id)}")
            except (te.Error, ValueError, TypeError) as e:
                return _fail(e, "initialize")
            self._covered.clear()
            return 0

    def get_rpc_port(self) -> str:
        """``"<port>_<pid>"`` of this engine (``"-1_<pid>"`` before ``initialize``)."""
        e = self._engine
        return f"{-1 if e is None else e.rpc_port}_{os.getpid()}"

    def _ready(self) -> te.Engine:
        e = self._engine
        if e is None:
            raise te.NotReadyError("not initialized")
        return e

    # ---- memory ----

    def register_memory(self, buffer_addr: int, capacity: int) -> int:
        """Registers ``capacity`` bytes of device memory at ``buffer_addr``; 0 or -1."""
        return self.batch_register_memory([buffer_addr], [capacity])

    def batch_register_memory(self, buffer_addrs: Sequence[int], capacities: Sequence[int]) -> int:
        """Registers each buffer (all or nothing); 0 or -1."""
        try:
            e = self._ready()
            addrs, caps = list(buffer_addrs), list(capacities)
            if len(addrs) != len(caps) or not addrs:
                raise te.InvalidError(f"{len(addrs)} addresses and {len(caps)} capacities")
            e.register_batch(addrs, caps, perm="remote_read_write")
        except te.Error as x:
            return _fail(x, "register_memory")
        for a, n in zip(addrs, caps):
            self._covered.add(a, n)
        return 0

    def unregister_memory(self, buffer_addr: int) -> int:
        """Unregisters the buffer registered at exactly ``buffer_addr``; 0 or -1."""
        try:
            self._ready().unregister(buffer_addr)
        except te.Error as x:
            return _fail(x, "unregister_memory")
        self._covered.remove(buffer_addr)
        return 0

    # ---- transfers ----

    @staticmethod
    def _lists(buffers: Sequence[int], peers: Sequence[int], lengths: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        b, p, n = list(buffers), list(peers), list(lengths)
        if not len(b) == len(p) == len(n):
            raise te.InvalidError(f"lists of different lengths: {len(b)} buffers, {len(p)} peer buffers, {len(n)} lengths")
        return b, p, n

    def _sync(self, op: str, dest: str, buffers: Sequence[int], peers: Sequence[int], lengths: Sequence[int], what: str) -> int:
        try:
            e = self._ready()
            b, p, n = self._lists(buffers, peers, lengths)
            if not b:
                return 0
            local, before, after = _local.prepare(e, self._covered, b, n, into_local=op == "read")
        except te.Error as x:
            return _fail(x, what)
        ok = False
        try:
            before()
            if op == "read":
                e.batch_transfer_sync_read(dest, local, p, n)
            else:
                e.batch_transfer_sync_write(dest, local, p, n)
            ok = True
        except te.Error as x:
            return _fail(x, what)
        finally:
            after(ok)
        return 0

    def _reap(self, e: te.Engine, wait: float | None = 0.0) -> None:
        """Frees the stream-ordered batches that ended, logging the failed ones;
        with ``wait`` > 0 waits that long for each first."""
        with self._lock:
            batches, self._async = self._async, []
        keep = []
        for b, what in batches:
            try:
                st = e.wait_batch(b, timeout=wait) if wait else e.batch_status(b)
            except te.TimeoutError:
                keep.append((b, what))
                continue
            except te.Error as x:
                _fail(x, what)
                continue
            if not st.done:
                keep.append((b, what))
                continue
            if not st.ok:
                _log.error("%s: %s", what, e.batch_error(b) or f"batch ended {st.state}")
            try:
                e.free_batch(b)
            except te.Error:
                pass
        with self._lock:
            self._async.extend(keep)

    def _submit(
        self, op: str, dest: str, buffers: Sequence[int], peers: Sequence[int], lengths: Sequence[int], stream: int, what: str
    ) -> int:
        try:
            e = self._ready()
            self._reap(e)
            b, p, n = self._lists(buffers, peers, lengths)
            if not b:
                return 0
            for a, k in zip(b, n):
                if not self._covered.covers(a, k):
                    raise te.InvalidError(f"buffer {a:#x}+{k} is not registered: register it before a stream-ordered transfer")
            seg = e.open_segment(dest)
            batch = e.allocate_batch(len(b))
        except te.Error as x:
            return _fail(x, what)
        try:
            e.submit_on_stream(batch, [(op, a, seg, q, k) for a, q, k in zip(b, p, n)], int(stream))
        except te.Error as x:
            try:
                e.free_batch(batch)
            except te.Error:
                pass
            return _fail(x, what)
        with self._lock:
            self._async.append((batch, f"{what} to {dest}"))
        return 0

    def transfer_sync_write(self, dest_session: str, buffer: int, peer_buffer: int, length: int, flags: int = 0) -> int:
        """Writes ``length`` bytes at ``buffer`` to ``peer_buffer`` of ``dest_session``; 0 or -1."""
        return self._sync("write", dest_session, [buffer], [peer_buffer], [length], "transfer_sync_write")

    def transfer_sync_read(self, dest_session: str, buffer: int, peer_buffer: int, length: int, flags: int = 0) -> int:
        """Reads ``length`` bytes at ``peer_buffer`` of ``dest_session`` into ``buffer``; 0 or -1."""
        return self._sync("read", dest_session, [buffer], [peer_buffer], [length], "transfer_sync_read")

    def batch_transfer_sync_write(
        self, dest_session: str, buffers: Sequence[int], peer_buffers: Sequence[int], lengths: Sequence[int], flags: int = 0
    ) -> int:
        """Writes each buffer; 0 or -1."""
        return self._sync("write", dest_session, buffers, peer_buffers, lengths, "batch_transfer_sync_write")

    def batch_transfer_sync_read(
        self, dest_session: str, buffers: Sequence[int], peer_buffers: Sequence[int], lengths: Sequence[int], flags: int = 0
    ) -> int:
        """Reads each buffer; 0 or -1."""
        return self._sync("read", dest_session, buffers, peer_buffers, lengths, "batch_transfer_sync_read")

    def transfer_async_write_submit(
        self, dest_session: str, buffer: int, peer_buffer: int, length: int, stream: int, flags: int = 0
    ) -> int:
        """A write ordered on ``stream``; 0 once submitted, or -1."""
        return self._submit("write", dest_session, [buffer], [peer_buffer], [length], stream, "transfer_async_write_submit")

    def transfer_async_read_submit(
        self, dest_session: str, buffer: int, peer_buffer: int, length: int, stream: int, flags: int = 0
    ) -> int:
        """A read ordered on ``stream``; 0 once submitted, or -1."""
        return self._submit("read", dest_session, [buffer], [peer_buffer], [length], stream, "transfer_async_read_submit")

    def batch_transfer_async_write_submit(
        self,
        dest_session: str,
        buffers: Sequence[int],
        peer_buffers: Sequence[int],
        lengths: Sequence[int],
        stream: int,
        flags: int = 0,
    ) -> int:
        """Writes ordered on ``stream``, as one batch; 0 once submitted, or -1."""
        return self._submit("write", dest_session, buffers, peer_buffers, lengths, stream, "batch_transfer_async_write_submit")

    def batch_transfer_async_read_submit(
        self,
        dest_session: str,
        buffers: Sequence[int],
        peer_buffers: Sequence[int],
        lengths: Sequence[int],
        stream: int,
        flags: int = 0,
    ) -> int:
        """Reads ordered on ``stream``, as one batch; 0 once submitted, or -1."""
        return self._submit("read", dest_session, buffers, peer_buffers, lengths, stream, "batch_transfer_async_read_submit")

    # ---- shutdown ----

    def destroy(self) -> None:
        """Finalizes the engine, after the stream-ordered transfers still running."""
        with self._lock:
            e, self._engine = self._engine, None
        if e is None:
            return
        self._reap(e, wait=60.0)
        e.finalize()
        self._covered.clear()

    def unInitialize(self) -> None:  # noqa: N802 (memfabric's name)
        """As :meth:`destroy`."""
        self.destroy()

"""Drop-in ``mooncake.engine.TransferEngine`` on te.

Change ``from mooncake.engine import TransferEngine`` to
``from te.compat.mooncake import TransferEngine``: the same names,
signatures, return types and conventions as Mooncake's pybind module
(``transfer_engine_py.cpp``), at least everything vLLM's MooncakeConnector
and SGLang's MooncakeTransferEngine call.

Conventions, as Mooncake's (checked against ``transfer_engine_py.cpp``):

- Addresses are plain ints; lengths are bytes. Module attributes as
  Mooncake's: ``TransferOpcode`` (also ``TransferEngine.TransferOpcode``
  and, as pybind11's ``export_values``, ``Read`` / ``Write``),
  ``TransferNotify(name, msg)``, ``SUPPORT_CUDA`` and the other
  ``SUPPORT_*`` flags (all False).
- Return values are Mooncake's numbers, not te's codes (te's error and its
  message go to the log, logger ``te.compat.mooncake``):
  ``initialize``, every sync transfer (``transfer_sync_read/write``,
  ``batch_transfer_sync_read/write``, ``transfer_sync``,
  ``batch_transfer_sync``) and ``get_batch_transfer_status`` return ``0``
  or ``-1``; ``register_memory`` / ``batch_register_memory`` /
  ``unregister_memory`` / ``batch_unregister_memory`` return ``0`` or
  Mooncake's error numbers (``-1`` ERR_INVALID_ARGUMENT, ``-3``
  ERR_ADDRESS_NOT_REGISTERED, ``-7`` ERR_ADDRESS_OVERLAPPED);
  ``send_probe`` returns ``0``, ``-102`` (ERR_SOCKET: the peer did not
  answer) or ``-1``. Empty lists are an empty batch that succeeds (``0``),
  as in Mooncake; lists of different lengths are ``-1``.
- Async calls return a batch id (``0`` on failure).
  ``transfer_check_status(batch_id)`` returns ``1`` done, ``0`` pending,
  ``-1`` failed, ``-2`` timeout (the batch is freed once done or failed);
  ``get_batch_transfer_status(batch_ids)`` blocks until all are done
  (``0``) or one failed or timed out (``-1``); either way every batch
  given is freed (running ones canceled first).
- The GIL is released in every call that waits or copies, so a
  ThreadPoolExecutor of workers transfers in parallel.
- ``initialize(local_hostname, metadata_server, protocol, device_name)``:
  ``local_hostname`` is ``host``, ``host:port``, SGLang's Ascend
  ``host:port:npu_N`` or an IPv6 address (``[::1]:port``, bare ``::1``); without a port te picks a free one
  (``get_rpc_port()`` tells). The session name peers use is
  ``f"{host}:{get_rpc_port()}"``. ``metadata_server`` is
  ``"P2PHANDSHAKE"`` (te's peer-to-peer names), or a store as Mooncake
  spells it: ``"etcd://host:port"`` (several endpoints separated by ``,``
  or ``;``), ``"redis://host:port[/db]"``, or a bare ``"host:port"``
  (etcd, as in Mooncake; ``metadata_type`` ``"redis"`` makes it Redis).
  With a store the session name is ``local_hostname`` as given, published
  there (te's own entries under the prefix ``te``, or ``te/<id>`` with
  ``MC_METADATA_CLUSTER_ID``: docs/PROTOCOL.md 16), and the names of
  peers are looked up there. ``protocol`` ``"tcp"``
  forces TCP; any other (``"rdma"``, ``"ascend"``, ...) takes the best path
  te has (shared memory on the same host, TCP elsewhere) and says so once
  in the log. ``device_name`` (NIC names) is accepted and not used.
  ``MC_TRANSFER_TIMEOUT`` (seconds, at least 5) bounds sync transfers as in
  Mooncake.
- Local buffers of the sync calls need not be registered: a buffer outside
  the registered regions is registered for the call (no copy), or goes
  through a bounce buffer where it overlaps one. The async calls need
  registered local buffers (as Mooncake over RDMA does).

Not provided, or different:

- Mooncake's HTTP metadata server (``http://...``): ``initialize`` /
  ``initialize_ext`` return ``-1``. te's entries in etcd and Redis are
  te's own (a Mooncake engine cannot read them, nor te Mooncake's).
- ``initialize`` on an initialized engine returns ``-1`` (Mooncake builds
  a new engine over the old one).
- The CUDA-stream calls (``transfer_write_on_cuda`` and the other
  ``*_on_cuda``) are absent, as in a Mooncake built without CUDA
  (``SUPPORT_CUDA`` is False).
- ``get_engine()`` / ``get_engine_ptr()`` raise ``NotImplementedError``
  (there is no C++ engine object); ``warmup_efa_segment`` is a no-op
  returning 0; ``get_local_topology`` describes only host memory.
- ``allocate_managed_buffer`` gives each buffer its own registered engine
  memory (Mooncake carves slabs out of 2 GiB registered blocks);
  ``free_managed_buffer`` of an address it did not give returns ``-3``
  (Mooncake returns 0).
- ``get_first_buffer_address`` is the lowest address the peer registered
  (te's segment info is sorted by address); Mooncake's is the oldest
  registration. They agree for a peer that registered one buffer.
- ``transport_hint`` is accepted and not used.
- The shared-segment and RPC-interface classes Mooncake's ``engine``
  module also carries (``RpcInterface``, ``InnerTransferEngine``, ...).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import threading
from typing import Any, Sequence

import te
from te.compat import _local

__all__ = ["TransferEngine", "TransferOpcode", "TransferNotify", "Read", "Write"]

_log = logging.getLogger("te.compat.mooncake")
_said: set[str] = set()
_said_lock = threading.Lock()


def _once(key: str, msg: str, *args: object) -> None:
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    _log.warning(msg, *args)


class TransferOpcode(enum.IntEnum):
    """Direction of ``transfer_sync`` / ``batch_transfer_*``."""

    Read = 0
    Write = 1


# As pybind11's ``export_values()``: the opcodes at module level too.
Read = TransferOpcode.Read
Write = TransferOpcode.Write

# Mooncake's build flags: te offers none of these transports.
SUPPORT_EFA = False
SUPPORT_HIP = False
SUPPORT_MNNVL = False
SUPPORT_MUSA = False
SUPPORT_INTRA_NVLINK = False
SUPPORT_CUDA = False


class TransferNotify:
    """A notification: ``name`` and ``msg`` (str)."""

    def __init__(self, name: str = "", msg: str = "") -> None:
        self.name = name
        self.msg = msg

    def __repr__(self) -> str:
        return f"TransferNotify(name={self.name!r}, msg={self.msg!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferNotify) and (self.name, self.msg) == (other.name, other.msg)


# Mooncake's error numbers (mooncake-transfer-engine/include/error.h), for
# the calls that return them.
ERR_INVALID_ARGUMENT = -1
ERR_ADDRESS_NOT_REGISTERED = -3
ERR_ADDRESS_OVERLAPPED = -7
ERR_SOCKET = -102


def _fail(e: te.Error, what: str, rc: int = -1) -> int:
    """Logs te's error and returns Mooncake's return value ``rc`` for it."""
    _log.error("%s: %s", what, e)
    return rc


def _reg_code(e: te.Error) -> int:
    """What Mooncake's registerLocalMemory / unregisterLocalMemory return for
    the failure te reports as ``e``."""
    if isinstance(e, te.NotFoundError):
        return ERR_ADDRESS_NOT_REGISTERED
    if isinstance(e, te.InvalidError) and "overlaps" in e.message:
        return ERR_ADDRESS_OVERLAPPED
    return ERR_INVALID_ARGUMENT


_ASCEND = re.compile(r"^[^:\[\]]*:\d*:npu_\d+$")


def _split_hostname(name: str) -> tuple[str, int]:
    """``(host, port)`` of Mooncake's ``local_hostname``: ``host``,
    ``host:port``, ``host:port:npu_N`` (Ascend), ``[v6]``, ``[v6]:port``,
    ``[v6]:port:npu_N`` or a bare IPv6 address; port 0 when none is given.
    A port that is not a number is ``ValueError``."""
    if name.startswith("["):
        close = name.find("]")
        if close < 0:
            raise ValueError(name)
        host, rest = name[1:close], name[close + 1 :]
        port = rest[1:].split(":")[0] if rest.startswith(":") else ""
    elif name.count(":") >= 2 and not _ASCEND.match(name):
        host, port = name, ""  # a bare IPv6 address
    else:
        host, _, rest = name.partition(":")
        port = rest.split(":")[0]
    return host or "127.0.0.1", int(port) if port else 0


def _directory(metadata_server: str, metadata_type: str) -> str | None:
    """te's directory URL for Mooncake's ``metadata_server`` (``None``:
    peer to peer); ``ValueError`` naming what te does not provide."""
    if metadata_server == "P2PHANDSHAKE" or metadata_type.lower() == "p2p":
        return None
    scheme, sep, rest = metadata_server.partition("://")
    if not sep:
        scheme, rest = (metadata_type.lower() or "etcd"), metadata_server
    if scheme not in ("etcd", "redis"):
        raise ValueError(f"metadata server {metadata_server!r}: te provides etcd://, redis:// and P2PHANDSHAKE")
    if scheme == "etcd":
        rest = ",".join(e.removeprefix("http://") for e in rest.replace(";", ",").split(",") if e)
    return f"{scheme}://{rest}"


def _timeout_from_env() -> float:
    try:
        t = float(os.environ.get("MC_TRANSFER_TIMEOUT", "30"))
    except ValueError:
        t = 30.0
    return max(t, 5.0)


class TransferEngine:
    """Mooncake's transfer engine, on te."""

    #: As Mooncake's ``TransferEngine.TransferOpcode``.
    TransferOpcode = TransferOpcode

    def __init__(self) -> None:
        self._engine: te.Engine | None = None
        self._covered = _local.Covered()
        self._managed: dict[int, te.Memory] = {}
        self._empty: set[int] = set()  # ids of empty async batches (done)
        self._empty_next = 0
        self._lock = threading.Lock()
        self._timeout = _timeout_from_env()
        self._host = ""

    # ---- set-up ----

    def initialize(self, local_hostname: str, metadata_server: str, protocol: str, device_name: str) -> int:
        """Starts the engine; ``0`` or ``-1`` (the reason is logged)."""
        return self.initialize_ext(local_hostname, metadata_server, protocol, device_name, "")

    def initialize_ext(
        self, local_hostname: str, metadata_server: str, protocol: str, device_name: str, metadata_type: str
    ) -> int:
        """``initialize`` with a metadata type (``p2p``, ``etcd`` or ``redis``)."""
        with self._lock:
            if self._engine is not None:
                _log.error("initialize: already initialized")
                return -1
            try:
                directory = _directory(str(metadata_server), str(metadata_type or ""))
            except ValueError as e:
                _log.error("initialize: %s", e)
                return -1
            try:
                host, port = _split_hostname(str(local_hostname))
            except ValueError:
                _log.error("initialize: bad port in local_hostname %r", local_hostname)
                return -1
            if protocol == "tcp":
                path = "tcp"
            else:
                path = "auto"
                _once(
                    f"protocol {protocol}",
                    "protocol %r is not available in te yet: using te's best path instead "
                    "(shared memory on the same host, TCP elsewhere)",
                    protocol,
                )
            try:
                listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                named: dict[str, Any] = {}
                if directory is not None:
                    cluster = os.environ.get("MC_METADATA_CLUSTER_ID", "")
                    named = {
                        "directory": directory,
                        "segment_name": str(local_hostname),
                        "directory_prefix": f"te/{cluster}" if cluster else "te",
                    }
                self._engine = te.Engine(listen=listen, path=path, transfer_timeout=self._timeout, **named)
            except te.Error as e:
                _fail(e, "initialize")
                return -1
            self._host = host
            self._covered.clear()
            return 0

    def get_rpc_port(self) -> int:
        """The port peers reach this engine on (``-1`` before ``initialize``)."""
        e = self._engine
        return -1 if e is None else e.rpc_port

    def get_local_topology(self, device_name: str | None = None) -> str:
        """A JSON description of the local memory: te offers host memory."""
        return json.dumps({"cpu:0": {"type": "cpu", "preferred_hca": [], "avail_hca": []}})

    def get_engine(self) -> object:
        """Not provided: there is no C++ engine object."""
        raise NotImplementedError("te.compat.mooncake has no C++ TransferEngine object")

    def get_engine_ptr(self) -> int:
        """Not provided: there is no C++ engine object."""
        raise NotImplementedError("te.compat.mooncake has no C++ TransferEngine object")

    def _ready(self) -> te.Engine:
        e = self._engine
        if e is None:
            raise te.NotReadyError("the transfer engine is not initialized")
        return e

    # ---- memory ----

    def register_memory(self, buffer_addr: int, capacity: int, location: str = "*") -> int:
        """Registers ``capacity`` bytes at ``buffer_addr`` for peers to read and write."""
        try:
            self._ready().register(buffer_addr, capacity)
        except te.Error as e:
            return _fail(e, "register_memory", _reg_code(e))
        self._covered.add(buffer_addr, capacity)
        return 0

    def unregister_memory(self, buffer_addr: int) -> int:
        """Unregisters the region with base ``buffer_addr``."""
        try:
            self._ready().unregister(buffer_addr)
        except te.Error as e:
            return _fail(e, "unregister_memory", _reg_code(e))
        self._covered.remove(buffer_addr)
        return 0

    def batch_register_memory(self, buffer_addresses: Sequence[int], capacities: Sequence[int], location: str = "*") -> int:
        """Registers several regions, all or nothing."""
        try:
            e = self._ready()
            if len(buffer_addresses) != len(capacities):
                raise te.InvalidError(f"{len(buffer_addresses)} addresses but {len(capacities)} capacities")
            if not buffer_addresses:
                return 0  # as Mooncake: nothing to register
            e.register_batch(list(buffer_addresses), list(capacities))
        except te.Error as x:
            return _fail(x, "batch_register_memory", _reg_code(x))
        for a, n in zip(buffer_addresses, capacities):
            self._covered.add(a, n)
        return 0

    def batch_unregister_memory(self, buffer_addresses: Sequence[int]) -> int:
        """Unregisters several regions."""
        rc = 0
        for a in buffer_addresses:
            r = self.unregister_memory(a)
            rc = rc or r
        return rc

    def allocate_managed_buffer(self, length: int) -> int:
        """Allocates ``length`` bytes of registered engine memory; its address, or 0."""
        try:
            m = self._ready().alloc(length)
        except te.Error as e:
            _fail(e, "allocate_managed_buffer")
            return 0
        with self._lock:
            self._managed[m.addr] = m
        self._covered.add(m.addr, m.length)
        return m.addr

    def free_managed_buffer(self, user_tensor: int, length: int) -> int:
        """Frees a buffer from ``allocate_managed_buffer``."""
        with self._lock:
            m = self._managed.pop(user_tensor, None)
        if m is None:
            _log.error("free_managed_buffer: %#x is not a managed buffer", user_tensor)
            return ERR_ADDRESS_NOT_REGISTERED
        self._covered.remove(user_tensor)
        try:
            m.free()
        except te.Error as e:
            return _fail(e, "free_managed_buffer")
        return 0

    def get_first_buffer_address(self, segment_name: str) -> int:
        """Address of the first region the peer ``segment_name`` registered (0 if none)."""
        try:
            e = self._ready()
            regions = e.segment_info(e.open_segment(segment_name))
        except te.Error as x:
            _fail(x, "get_first_buffer_address")
            return 0
        return min((r.addr for r in regions), default=0)

    def warmup_efa_segment(self, segment_name: str) -> int:
        """Nothing to warm up in te; 0."""
        return 0

    # ---- host copies ----

    def write_bytes_to_buffer(self, dest_address: int, src_bytes: bytes, length: int) -> int:
        """Copies ``length`` bytes of ``src_bytes`` to ``dest_address`` (memcpy)."""
        import ctypes

        if isinstance(src_bytes, str):
            src_bytes = src_bytes.encode()  # pybind11 passes a str as its UTF-8 bytes
        if length > len(src_bytes) or length < 0:
            _log.error("write_bytes_to_buffer: length %d outside the %d bytes given", length, len(src_bytes))
            return ERR_INVALID_ARGUMENT
        ctypes.memmove(dest_address, bytes(src_bytes[:length]), length)
        return 0

    def read_bytes_from_buffer(self, address: int, length: int) -> bytes:
        """The ``length`` bytes at ``address``."""
        import ctypes

        return ctypes.string_at(address, length)

    # ---- transfers ----

    def _sync(
        self,
        op: TransferOpcode,
        target: str,
        buffers: Sequence[int],
        peers: Sequence[int],
        lengths: Sequence[int],
        notify: TransferNotify | None,
        what: str,
    ) -> int:
        try:
            e = self._ready()
            buffers, peers, lengths = list(buffers), list(peers), list(lengths)
            if not len(buffers) == len(peers) == len(lengths):
                raise te.InvalidError(
                    f"lists of different lengths: {len(buffers)} buffers, {len(peers)} peer addresses, "
                    f"{len(lengths)} lengths"
                )
            if not buffers and notify is None:
                return 0  # as Mooncake: an empty batch completes at once
            local, before, after = _local.prepare(e, self._covered, buffers, lengths, into_local=op == TransferOpcode.Read)
        except te.Error as x:
            return _fail(x, what)
        ok = False
        try:
            before()
            if notify is None:
                if op == TransferOpcode.Read:
                    e.batch_transfer_sync_read(target, local, peers, lengths)
                else:
                    e.batch_transfer_sync_write(target, local, peers, lengths)
            else:
                seg = e.open_segment(target)
                o = "read" if op == TransferOpcode.Read else "write"
                b = e.allocate_batch(len(local))
                try:
                    e.submit_with_notify(b, [(o, a, seg, p, n) for a, p, n in zip(local, peers, lengths)], notify.name, notify.msg)
                    st = e.wait_batch(b, self._timeout + sum(lengths) / 1e9)
                    if not st.ok:
                        raise e.batch_error(b) or te.RuntimeError(f"batch ended {st.state}")
                finally:
                    try:
                        e.free_batch(b)
                    except te.Error:
                        pass
            ok = True
        except te.Error as x:
            return _fail(x, what)
        finally:
            after(ok)
        return 0

    def transfer_sync_write(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int, transport_hint: str = "") -> int:
        """Writes ``length`` bytes at ``buffer`` to ``peer_buffer_address`` of ``target_hostname``; 0 or negative."""
        return self._sync(TransferOpcode.Write, target_hostname, [buffer], [peer_buffer_address], [length], None, "transfer_sync_write")

    def transfer_sync_read(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int, transport_hint: str = "") -> int:
        """Reads ``length`` bytes at ``peer_buffer_address`` of ``target_hostname`` into ``buffer``; 0 or negative."""
        return self._sync(TransferOpcode.Read, target_hostname, [buffer], [peer_buffer_address], [length], None, "transfer_sync_read")

    def batch_transfer_sync_write(
        self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int], transport_hint: str = ""
    ) -> int:
        """Writes item i of ``buffers`` to item i of ``peer_buffer_addresses``; 0 or negative."""
        return self._sync(TransferOpcode.Write, target_hostname, buffers, peer_buffer_addresses, lengths, None, "batch_transfer_sync_write")

    def batch_transfer_sync_read(
        self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int], transport_hint: str = ""
    ) -> int:
        """Reads item i of ``peer_buffer_addresses`` into item i of ``buffers``; 0 or negative."""
        return self._sync(TransferOpcode.Read, target_hostname, buffers, peer_buffer_addresses, lengths, None, "batch_transfer_sync_read")

    def transfer_sync(
        self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int, opcode: TransferOpcode,
        notify: TransferNotify | None = None, transport_hint: str = "",
    ) -> int:
        """One read or write (``opcode``); ``notify`` reaches the peer after the data."""
        return self._sync(TransferOpcode(opcode), target_hostname, [buffer], [peer_buffer_address], [length], notify, "transfer_sync")

    def batch_transfer_sync(
        self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
        opcode: TransferOpcode, notify: TransferNotify | None = None, transport_hint: str = "",
    ) -> int:
        """A batch of reads or writes (``opcode``); ``notify`` reaches the peer after the data."""
        return self._sync(TransferOpcode(opcode), target_hostname, buffers, peer_buffer_addresses, lengths, notify, "batch_transfer_sync")

    # ---- async ----

    def batch_transfer_async(
        self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
        opcode: TransferOpcode, transport_hint: str = "",
    ) -> int:
        """Submits a batch; its id, or 0. The local buffers must be registered."""
        try:
            e = self._ready()
            if not len(buffers) == len(peer_buffer_addresses) == len(lengths):
                raise te.InvalidError("lists of different lengths")
            if not buffers:
                # As Mooncake: an empty batch is a valid id, done at once. Its
                # id is outside te's (64-bit) ids.
                with self._lock:
                    self._empty_next += 1
                    bid = (1 << 64) + self._empty_next
                    self._empty.add(bid)
                return bid
            seg = e.open_segment(target_hostname)
            o = "read" if TransferOpcode(opcode) == TransferOpcode.Read else "write"
            b = e.allocate_batch(len(buffers))
            try:
                e.submit(b, [(o, a, seg, p, n) for a, p, n in zip(buffers, peer_buffer_addresses, lengths)])
            except te.Error:
                e.free_batch(b)
                raise
        except te.Error as x:
            _fail(x, "batch_transfer_async")
            return 0
        return b + 1  # 0 means failure: te's ids start at 0

    def batch_transfer_async_write(self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int], transport_hint: str = "") -> int:
        """Submits a batch of writes; its id, or 0."""
        return self.batch_transfer_async(target_hostname, buffers, peer_buffer_addresses, lengths, TransferOpcode.Write)

    def batch_transfer_async_read(self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int], lengths: Sequence[int], transport_hint: str = "") -> int:
        """Submits a batch of reads; its id, or 0."""
        return self.batch_transfer_async(target_hostname, buffers, peer_buffer_addresses, lengths, TransferOpcode.Read)

    def transfer_submit_write(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int, transport_hint: str = "") -> int:
        """Submits one write; its batch id, or 0 (poll it with ``transfer_check_status``)."""
        return self.batch_transfer_async(target_hostname, [buffer], [peer_buffer_address], [length], TransferOpcode.Write)

    def transfer_check_status(self, batch_id: int) -> int:
        """``1`` done, ``0`` pending, ``-1`` failed, ``-2`` timeout; a done or failed batch is freed."""
        with self._lock:
            if batch_id in self._empty:
                self._empty.discard(batch_id)
                return 1
        try:
            e = self._ready()
            st = e.batch_status(batch_id - 1)
        except te.Error as x:
            _fail(x, "transfer_check_status")
            return -1
        if st.state == "pending":
            return 0
        if st.state == "timeout":
            return -2
        try:
            e.free_batch(batch_id - 1)
        except te.Error:
            pass
        return 1 if st.ok else -1

    def get_batch_transfer_status(self, batch_ids: Sequence[int]) -> int:
        """Blocks until every batch is done (``0``) or one failed or timed out
        (``-1``); as Mooncake's, every batch given is freed either way (on a
        failure the ones still running are canceled first)."""
        try:
            e = self._ready()
        except te.Error as x:
            _fail(x, "get_batch_transfer_status")
            return -1
        with self._lock:
            left = [b for b in batch_ids if b not in self._empty]
            self._empty.difference_update(batch_ids)
        rc = 0
        for i, bid in enumerate(left):
            try:
                st = e.wait_batch(bid - 1, self._timeout + e.batch_status(bid - 1).length / 1e9)
                if not st.ok:
                    _log.error("get_batch_transfer_status: batch %d ended %s", bid, st.state)
                    rc = -1
            except te.Error as x:
                _fail(x, "get_batch_transfer_status")
                rc = -1
            if rc:
                for b in left[i:]:
                    self._drop(e, b - 1)
                break
            e.free_batch(bid - 1)
        return rc

    def _drop(self, e: te.Engine, b: int) -> None:
        """Cancels batch ``b`` if it still runs, and frees it."""
        try:
            if not e.batch_status(b).done:
                e.cancel_batch(b)
                e.wait_batch(b, self._timeout)
            e.free_batch(b)
        except te.Error as x:
            _log.error("freeing batch %d: %s", b + 1, x)

    # ---- notifications and probes ----

    def get_notifies(self) -> list[TransferNotify]:
        """The notifications received so far (each once)."""
        e = self._engine
        if e is None:
            return []
        return [TransferNotify(n.name, n.msg.decode("utf-8", "replace")) for n in e.take_notifications()]

    def send_probe(self, peer_server_name: str) -> int:
        """Checks that ``peer_server_name`` answers: 0, or negative."""
        try:
            e = self._ready()
            seg = e.open_segment(peer_server_name)
            e.segment_info(seg)
        except (te.RuntimeError, te.DisconnectedError, te.TimeoutError) as x:
            return _fail(x, "send_probe", ERR_SOCKET)  # as Mooncake: the peer did not answer
        except te.Error as x:
            return _fail(x, "send_probe")
        return 0

"""Drop-in ``yr.datasystem.TransferEngine`` on te.

Change ``from yr.datasystem import TransferEngine, Result, ErrorCode`` to
``from te.compat.datasystem import TransferEngine, Result, ErrorCode``:
same names, signatures, return types and error codes.

Every method returns a :class:`Result` (never raises for te failures);
``get_rpc_port()`` returns an int. The rules, as the datasystem documents
them and te keeps them:

- ``initialize(local_hostname, protocol, device_name)``: ``local_hostname``
  is ``host:port`` with a nonzero port (else ``kInvalid``); ``protocol`` is
  accepted and not checked; ``device_name`` is ``npu:<digits>`` (te also
  accepts ``cpu`` and ``sim:N``; anything else, e.g. ``gpu:0`` or ``0``, is
  ``kInvalid``). ``npu:N`` is NPU memory through te-driver-ascend, which
  loads CANN's ``libascendcl.so`` (``$TE_ACL_LIBRARY``,
  ``$ASCEND_HOME_PATH/lib64`` or the loader path); without it ``initialize``
  is ``kNotSupported`` naming the library tried. Initializing
  twice is ``kInvalid``.
- ``get_rpc_port()`` is -1 before ``initialize`` and after ``finalize``.
- Registering or transferring before ``initialize`` (or after
  ``finalize``) is ``kNotReady``.
- Empty lists, lists of different lengths, a zero (or negative) address or
  length are ``kInvalid``.
- ``unregister_memory`` needs the exact base address (``kNotFound``
  otherwise).
- A remote range not inside one region registered by the owner (never
  registered, partly outside, spanning two, after unregister) is
  ``kNotAuthorized``; an unreachable peer is ``kRuntimeError`` naming the
  address.
- ``finalize()`` lets reads in flight finish, after it every call is
  ``kNotReady``, and the same object can be initialized again.
- The requester need not register its destination buffers: a buffer
  outside the regions it registered is registered for the duration of the
  read (no copy), or, where that is impossible (it overlaps a registered
  region), read through a bounce buffer.

te's own codes beyond the datasystem's (``kTimeout`` 100, ``kCanceled``
101, ``kDisconnected`` 102) appear in :class:`ErrorCode` too.

Machines without an NPU: set ``TE_DATASYSTEM_NPU=host`` to let ``npu:N``
stand for host memory (for running code written for NPUs with host
buffers, as te's tests run the datasystem examples); it is logged once.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import threading

import te
from te.compat import _local

__all__ = ["TransferEngine", "Result", "ErrorCode"]

_log = logging.getLogger("te.compat.datasystem")

_DEVICE = re.compile(r"^(npu|sim):(\d+)$")
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(\d+)$")


class ErrorCode(enum.IntEnum):
    """Status codes, with the datasystem's numbers."""

    kOk = 0
    kInvalid = 2
    kNotFound = 3
    kRuntimeError = 5
    kNotReady = 8
    kNotAuthorized = 9
    kNotSupported = 36
    kTimeout = 100
    kCanceled = 101
    kDisconnected = 102


class Result:
    """The status a call returns: a code and a message."""

    __slots__ = ("_code", "_msg")

    def __init__(self, code: ErrorCode | int = ErrorCode.kOk, msg: str = "") -> None:
        try:
            self._code = ErrorCode(int(code))
        except ValueError:
            self._code = ErrorCode.kRuntimeError
            msg = f"te code {int(code)}: {msg}"
        self._msg = msg

    def is_ok(self) -> bool:
        """True when the operation succeeded."""
        return self._code == ErrorCode.kOk

    def is_error(self) -> bool:
        """True when the operation failed."""
        return self._code != ErrorCode.kOk

    def get_code(self) -> ErrorCode:
        """The status code."""
        return self._code

    def get_msg(self) -> str:
        """The detail message."""
        return self._msg

    def to_string(self) -> str:
        """Code and message in one string."""
        return f"code: [{self._code.name}({int(self._code)})], msg: [{self._msg}]"

    def __repr__(self) -> str:
        return f"Result({self.to_string()})"


_OK = Result()
_emulation_logged = False


def _err(code: ErrorCode, msg: str) -> Result:
    return Result(code, msg)


def _from(e: te.Error) -> Result:
    return Result(e.code, e.message)


def _positive_ints(name: str, values: object) -> list[int] | Result:
    if not isinstance(values, (list, tuple)):
        return _err(ErrorCode.kInvalid, f"{name} must be a list, not {type(values).__name__}")
    if not values:
        return _err(ErrorCode.kInvalid, f"{name} is empty")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            return _err(ErrorCode.kInvalid, f"{name}[{i}] = {v!r} is not an int")
        if v <= 0:
            return _err(ErrorCode.kInvalid, f"{name}[{i}] = {v} must be positive")
        out.append(v)
    return out


def _positive(name: str, v: object) -> Result | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return _err(ErrorCode.kInvalid, f"{name} {v!r} is not an int")
    if v <= 0:
        return _err(ErrorCode.kInvalid, f"{name} {v} must be positive")
    return None


class TransferEngine:
    """A transfer engine bound to one local device, reading remote registered
    memory into local buffers (``yr.datasystem.TransferEngine``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: te.Engine | None = None
        self._covered = _local.Covered()

    # ---- lifecycle ----

    def initialize(self, local_hostname: str, protocol: str, device_name: str) -> Result:
        """Starts the engine listening on ``local_hostname`` (``host:port``)
        for device ``device_name`` (``npu:N``; te also takes ``cpu``,
        ``sim:N``). ``protocol`` is accepted and not checked."""
        global _emulation_logged
        with self._lock:
            if self._engine is not None:
                return _err(ErrorCode.kInvalid, "already initialized: finalize() first")
            if not isinstance(device_name, str):
                return _err(ErrorCode.kInvalid, f"device_name {device_name!r} is not a string")
            m = _DEVICE.match(device_name)
            if device_name == "cpu":
                location = "cpu"
            elif m is None:
                return _err(
                    ErrorCode.kInvalid,
                    f"malformed device_name {device_name!r}: expected npu:<device id> (te also accepts cpu, sim:N)",
                )
            elif m.group(1) == "npu":
                if os.environ.get("TE_DATASYSTEM_NPU") == "host":
                    if not _emulation_logged:
                        _log.warning("TE_DATASYSTEM_NPU=host: %s stands for host memory", device_name)
                        _emulation_logged = True
                    location = "cpu"
                else:
                    # te-driver-ascend: the engine loads libascendcl.so, and
                    # refuses with kNotSupported naming it where it is missing.
                    location = device_name
            else:
                location = device_name
            if not isinstance(local_hostname, str):
                return _err(ErrorCode.kInvalid, f"local_hostname {local_hostname!r} is not a string")
            hp = _HOSTPORT.match(local_hostname)
            if hp is None:
                return _err(ErrorCode.kInvalid, f"local_hostname {local_hostname!r} is not host:port")
            port = int(hp.group(2))
            if port == 0 or port > 65535:
                return _err(ErrorCode.kInvalid, f"local_hostname {local_hostname!r}: port must be 1..65535")
            try:
                self._engine = te.Engine(listen=local_hostname, segment_name=local_hostname, location=location)
            except te.Error as e:
                return _from(e)
            self._covered.clear()
            return _OK

    def get_rpc_port(self) -> int:
        """The local RPC listening port, or -1 when not initialized."""
        e = self._engine
        return -1 if e is None else e.rpc_port

    def finalize(self) -> Result:
        """Lets reads in flight finish, then shuts the engine down; every
        call after it is ``kNotReady`` until ``initialize`` again."""
        with self._lock:
            e, self._engine = self._engine, None
        if e is not None:
            e.finalize()
        self._covered.clear()
        return _OK

    def _ready(self) -> te.Engine | Result:
        e = self._engine
        if e is None:
            return _err(ErrorCode.kNotReady, "the transfer engine is not initialized")
        return e

    # ---- memory ----

    def register_memory(self, buffer_addr: int, length: int) -> Result:
        """Registers one local region so that peers can read it."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        bad = _positive("buffer_addr", buffer_addr) or _positive("length", length)
        if bad:
            return bad
        try:
            e.register(buffer_addr, length)
        except te.Error as x:
            return _from(x)
        self._covered.add(buffer_addr, length)
        return _OK

    def batch_register_memory(self, buffer_addrs: list[int], lengths: list[int]) -> Result:
        """Registers several local regions, all or nothing."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        addrs = _positive_ints("buffer_addrs", buffer_addrs)
        if isinstance(addrs, Result):
            return addrs
        lens = _positive_ints("lengths", lengths)
        if isinstance(lens, Result):
            return lens
        if len(addrs) != len(lens):
            return _err(ErrorCode.kInvalid, f"{len(addrs)} buffer_addrs but {len(lens)} lengths")
        try:
            e.register_batch(addrs, lens)
        except te.Error as x:
            return _from(x)
        for a, n in zip(addrs, lens):
            self._covered.add(a, n)
        return _OK

    def unregister_memory(self, buffer_addr: int) -> Result:
        """Unregisters the region with base ``buffer_addr`` (``kNotFound``
        unless a region starts exactly there)."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        bad = _positive("buffer_addr", buffer_addr)
        if bad:
            return bad
        try:
            e.unregister(buffer_addr)
        except te.Error as x:
            return _from(x)
        self._covered.remove(buffer_addr)
        return _OK

    def batch_unregister_memory(self, buffer_addrs: list[int]) -> Result:
        """Unregisters several regions (stops at the first failure)."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        addrs = _positive_ints("buffer_addrs", buffer_addrs)
        if isinstance(addrs, Result):
            return addrs
        for a in addrs:
            r = self.unregister_memory(a)
            if r.is_error():
                return r
        return _OK

    # ---- transfers ----

    def transfer_sync_read(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int) -> Result:
        """Reads ``length`` bytes at ``peer_buffer_address`` of the owner
        ``target_hostname`` into the local ``buffer``, and waits."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        bad = (
            _positive("buffer", buffer)
            or _positive("peer_buffer_address", peer_buffer_address)
            or _positive("length", length)
        )
        if bad:
            return bad
        return self._read(e, target_hostname, [buffer], [peer_buffer_address], [length])

    def batch_transfer_sync_read(
        self, target_hostname: str, buffers: list[int], peer_buffer_addresses: list[int], lengths: list[int]
    ) -> Result:
        """Reads item i of ``peer_buffer_addresses`` into item i of
        ``buffers``, ``lengths[i]`` bytes each, in one batch, and waits."""
        e = self._ready()
        if isinstance(e, Result):
            return e
        lists = []
        for name, v in (("buffers", buffers), ("peer_buffer_addresses", peer_buffer_addresses), ("lengths", lengths)):
            r = _positive_ints(name, v)
            if isinstance(r, Result):
                return r
            lists.append(r)
        b, p, n = lists
        if not len(b) == len(p) == len(n):
            return _err(
                ErrorCode.kInvalid,
                f"lists of different lengths: {len(b)} buffers, {len(p)} peer_buffer_addresses, {len(n)} lengths",
            )
        return self._read(e, target_hostname, b, p, n)

    def _read(self, e: te.Engine, target: str, buffers: list[int], peers: list[int], lengths: list[int]) -> Result:
        if not isinstance(target, str):
            return _err(ErrorCode.kInvalid, f"target_hostname {target!r} is not a string")
        try:
            local, before, after = _local.prepare(e, self._covered, buffers, lengths, into_local=True)
        except te.Error as x:
            return _from(x)
        ok = False
        try:
            before()
            e.batch_transfer_sync_read(target, local, peers, lengths)
            ok = True
        except te.Error as x:
            return _from(x)
        finally:
            after(ok)
        return _OK

"""Test-only stand-in for the torch calls of the yr.datasystem examples.

``npu:N`` tensors live in device memory of the ACL library named by
``TE_ACL_LIBRARY`` (the fake of te-driver-ascend in te's tests), allocated
and copied through ACL's C API; ``cpu`` tensors are host bytes.
"""

from __future__ import annotations

import ctypes
import os

uint8 = "uint8"

_ACL_MEMCPY_HOST_TO_DEVICE = 1
_ACL_MEMCPY_DEVICE_TO_HOST = 2
_ACL_ERROR_REPEAT_INITIALIZE = 100002
_lib = None


def _acl() -> ctypes.CDLL:
    """The ACL library, initialised once (a repeated aclInit is fine)."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(os.environ["TE_ACL_LIBRARY"])
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.aclInit.argtypes = [ctypes.c_char_p]
        lib.aclrtSetDevice.argtypes = [ctypes.c_int32]
        lib.aclrtMalloc.argtypes = [ctypes.POINTER(vp), sz, ctypes.c_int]
        lib.aclrtFree.argtypes = [vp]
        lib.aclrtMemcpy.argtypes = [vp, sz, vp, sz, ctypes.c_int]
        for f in (lib.aclInit, lib.aclrtSetDevice, lib.aclrtMalloc, lib.aclrtFree, lib.aclrtMemcpy):
            f.restype = ctypes.c_int
        rc = lib.aclInit(None)
        if rc not in (0, _ACL_ERROR_REPEAT_INITIALIZE):
            raise RuntimeError(f"aclInit: ACL error {rc}")
        _lib = lib
    return _lib


def _check(call: str, rc: int) -> None:
    if rc != 0:
        raise RuntimeError(f"{call}: ACL error {rc}")


class Tensor:
    """A one-dimensional uint8 tensor on ``cpu`` or ``npu:N``."""

    def __init__(self, data: bytes, device: str = "cpu"):
        self.device = device
        self._n = len(data)
        if device == "cpu":
            self._host = ctypes.create_string_buffer(bytes(data), self._n)
            self._dev = None
            return
        if not device.startswith("npu:"):
            raise ValueError(f"device {device!r}: cpu or npu:N")
        self._index = int(device[4:])
        lib = _acl()
        _check("aclrtSetDevice", lib.aclrtSetDevice(self._index))
        p = ctypes.c_void_p()
        _check("aclrtMalloc", lib.aclrtMalloc(ctypes.byref(p), max(self._n, 1), 0))
        self._dev = p.value
        src = ctypes.create_string_buffer(bytes(data), self._n)
        _check("aclrtMemcpy", lib.aclrtMemcpy(self._dev, self._n, src, self._n, _ACL_MEMCPY_HOST_TO_DEVICE))

    def data_ptr(self) -> int:
        """The address of the first byte (a device address for npu tensors)."""
        return self._dev if self._dev is not None else ctypes.addressof(self._host)

    def numel(self) -> int:
        return self._n

    def element_size(self) -> int:
        return 1

    def cpu(self) -> "Tensor":
        """A host copy (through aclrtMemcpy device-to-host for npu tensors)."""
        if self._dev is None:
            return self
        lib = _acl()
        _check("aclrtSetDevice", lib.aclrtSetDevice(self._index))
        out = ctypes.create_string_buffer(self._n)
        _check("aclrtMemcpy", lib.aclrtMemcpy(out, self._n, self._dev, self._n, _ACL_MEMCPY_DEVICE_TO_HOST))
        return Tensor(out.raw, "cpu")

    def tobytes(self) -> bytes:
        return self.cpu()._host.raw


def _length(size) -> int:
    return size[0] if isinstance(size, tuple) else int(size)


def arange(size, dtype=uint8, device: str = "cpu") -> Tensor:
    return Tensor(bytes(i % 256 for i in range(_length(size))), device)


def zeros(size, dtype=uint8, device: str = "cpu") -> Tensor:
    return Tensor(bytes(_length(size)), device)


def full(size, value: int, dtype=uint8, device: str = "cpu") -> Tensor:
    return Tensor(bytes([value % 256]) * _length(size), device)


def equal(a: Tensor, b: Tensor) -> bool:
    return a.tobytes() == b.tobytes()

"""The ACL calls an application makes on its own streams (as torch_npu's would), through ctypes
on the library in ``TE_ACL_LIBRARY`` (the fake in tests): what test_streams.py and
test_memfabric.py drive the engine's stream-ordered submits with."""

from __future__ import annotations

import ctypes
import os

H2D, D2H = 1, 2

vp, sz = ctypes.c_void_p, ctypes.c_size_t


def load() -> ctypes.CDLL:
    """The library, with the C signatures of acl_rt.h for the calls used here."""
    acl = ctypes.CDLL(os.environ["TE_ACL_LIBRARY"])
    acl.aclrtSetDevice.argtypes = [ctypes.c_int32]
    acl.aclrtMalloc.argtypes = [ctypes.POINTER(vp), sz, ctypes.c_int]
    acl.aclrtMemcpy.argtypes = [vp, sz, vp, sz, ctypes.c_int]
    acl.aclrtCreateStream.argtypes = [ctypes.POINTER(vp)]
    acl.aclrtSynchronizeStream.argtypes = [vp]
    acl.aclrtMemcpyAsync.argtypes = [vp, sz, vp, sz, ctypes.c_int, vp]
    acl.aclrtCreateNotify.argtypes = [ctypes.POINTER(vp), ctypes.c_uint64]
    acl.aclrtWaitAndResetNotify.argtypes = [vp, vp, ctypes.c_uint32]
    acl.aclrtRecordNotify.argtypes = [vp, vp]
    return acl


def ok(rc: int, what: str) -> None:
    """Fails with the ACL code of a call that did not return 0."""
    assert rc == 0, f"{what}: ACL error {rc}"


def held_stream(acl: ctypes.CDLL) -> tuple[ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]:
    """``(stream, other, gate)``: a stream held by a notify wait of the application's own (a long
    kernel, say) until ``acl.aclrtRecordNotify(gate, other)``."""
    s, other, gate = vp(), vp(), vp()
    ok(acl.aclrtCreateStream(ctypes.byref(s)), "aclrtCreateStream")
    ok(acl.aclrtCreateStream(ctypes.byref(other)), "aclrtCreateStream")
    ok(acl.aclrtCreateNotify(ctypes.byref(gate), 0), "aclrtCreateNotify")
    ok(acl.aclrtWaitAndResetNotify(gate, s, 60), "aclrtWaitAndResetNotify")
    return s, other, gate

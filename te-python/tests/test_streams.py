"""Engine.submit_on_stream: a transfer ordered on the application's aclrtStream, on the fake ACL.

The application's calls go through ctypes to the same libascendcl.so the engine loads, as torch_npu's
would. Its stream is held by a notify of its own until the test opens it, so the order is checked,
not raced: the transfer waits for the stream, and a copy queued behind it sees its bytes."""

from __future__ import annotations

import os
import subprocess
import sys

from test_datasystem import fake_acl

CHILD = r'''
import ctypes, os
import te

acl = ctypes.CDLL(os.environ["TE_ACL_LIBRARY"])
vp, sz = ctypes.c_void_p, ctypes.c_size_t
acl.aclrtSetDevice.argtypes = [ctypes.c_int32]
acl.aclrtCreateStream.argtypes = [ctypes.POINTER(vp)]
acl.aclrtSynchronizeStream.argtypes = [vp]
acl.aclrtMemcpyAsync.argtypes = [vp, sz, vp, sz, ctypes.c_int, vp]
acl.aclrtCreateNotify.argtypes = [ctypes.POINTER(vp), ctypes.c_uint64]
acl.aclrtWaitAndResetNotify.argtypes = [vp, vp, ctypes.c_uint32]
acl.aclrtRecordNotify.argtypes = [vp, vp]

def ok(rc, what):
    assert rc == 0, f"{what}: ACL error {rc}"

n = 1 << 20
with te.Engine(location="cpu") as target, te.Engine(location="npu:0", path="tcp") as initiator:
    remote = target.alloc(n)
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    memoryview(remote)[:] = data
    local = initiator.alloc(n, perm="local_only")
    seg = initiator.open_segment(target.segment_name)

    ok(acl.aclrtSetDevice(0), "aclrtSetDevice")
    s, other, gate = vp(), vp(), vp()
    ok(acl.aclrtCreateStream(ctypes.byref(s)), "aclrtCreateStream")
    ok(acl.aclrtCreateStream(ctypes.byref(other)), "aclrtCreateStream")
    ok(acl.aclrtCreateNotify(ctypes.byref(gate), 0), "aclrtCreateNotify")
    ok(acl.aclrtWaitAndResetNotify(gate, s, 60), "aclrtWaitAndResetNotify")

    b = initiator.allocate_batch(1)
    initiator.submit_on_stream(b, [("read", local.addr, seg, remote.addr, n)], s.value)
    seen = ctypes.create_string_buffer(n)
    ok(acl.aclrtMemcpyAsync(seen, n, vp(local.addr), n, 2, s), "aclrtMemcpyAsync")
    assert initiator.batch_status(b).state == "pending", "the read waits for the stream"
    ok(acl.aclrtRecordNotify(gate, other), "aclrtRecordNotify")
    ok(acl.aclrtSynchronizeStream(s), "aclrtSynchronizeStream")
    assert initiator.batch_status(b).ok, "the stream went on only after the read ended"
    assert seen.raw == data, "the copy queued behind the read saw its bytes"

    try:
        target.submit_on_stream(target.allocate_batch(1), [("read", remote.addr, 0, 0, 1)], s.value)
    except te.InvalidError as e:
        assert "cpu" in str(e), e
    else:
        raise AssertionError("a cpu engine ordered a transfer on a device stream")
print("ordered")
'''


def test_a_read_ordered_on_the_applications_stream_waits_for_it_and_holds_it(tmp_path):
    env = dict(os.environ, TE_ACL_LIBRARY=fake_acl(), TE_FAKE_ACL_SHM_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ordered\n"

"""Engine.submit_on_stream: a transfer ordered on the application's aclrtStream, on the fake ACL.

The application's calls go through ctypes to the same libascendcl.so the engine loads, as torch_npu's
would. Its stream is held by a notify of its own until the test opens it, so the order is checked,
not raced: the transfer waits for the stream, and a copy queued behind it sees its bytes."""

from __future__ import annotations

import os
import subprocess
import sys

from test_datasystem import FAKE_NPU, fake_acl

CHILD = r'''
import ctypes
import te
from app_acl import D2H, held_stream, load, ok, vp

acl = load()

n = 1 << 20
with te.Engine(location="cpu") as target, te.Engine(location="npu:0", path="tcp") as initiator:
    remote = target.alloc(n)
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    memoryview(remote)[:] = data
    local = initiator.alloc(n, perm="local_only")
    seg = initiator.open_segment(target.segment_name)

    ok(acl.aclrtSetDevice(0), "aclrtSetDevice")
    s, other, gate = held_stream(acl)

    b = initiator.allocate_batch(1)
    initiator.submit_on_stream(b, [("read", local.addr, seg, remote.addr, n)], s.value)
    seen = ctypes.create_string_buffer(n)
    ok(acl.aclrtMemcpyAsync(seen, n, vp(local.addr), n, D2H, s), "aclrtMemcpyAsync")
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
    env = dict(os.environ, TE_ACL_LIBRARY=fake_acl(), TE_FAKE_ACL_SHM_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(FAKE_NPU), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ordered\n"

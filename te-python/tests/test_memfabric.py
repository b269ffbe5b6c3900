"""te.compat.memfabric: memfabric_hybrid's TransferEngine, driven as KV-cache code drives it (a
Prefill engine pushing blocks to a Decode engine with ``batch_transfer_async_write_submit(...,
raw_stream)``), on the fake ACL, in a child process whose ACL is the fake."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import free_port
from test_datasystem import FAKE_NPU, fake_acl

CHILD = r'''
import ctypes, os, sys
from te.compat.memfabric import TransferEngine
from app_acl import D2H, H2D, held_stream, load, ok, vp

acl = load()

decode_id, prefill_id = sys.argv[1], sys.argv[2]
store = "tcp://127.0.0.1:1"

assert TransferEngine().initialize(store, decode_id, "Sender", 0) == -1, "a role memfabric refuses"
decode, prefill = TransferEngine(), TransferEngine()
assert decode.initialize(store, decode_id, "Decode", 0) == 0
assert prefill.initialize(store, prefill_id, "Prefill", 0) == 0
port, pid = prefill.get_rpc_port().split("_")
assert port == prefill_id.rsplit(":", 1)[1] and pid == str(os.getpid())

ok(acl.aclrtSetDevice(0), "aclrtSetDevice")
n, block = 1 << 20, 1 << 16
src, dst = vp(), vp()
ok(acl.aclrtMalloc(ctypes.byref(src), n, 0), "aclrtMalloc")
ok(acl.aclrtMalloc(ctypes.byref(dst), n, 0), "aclrtMalloc")
assert prefill.batch_register_memory([src.value], [n]) == 0
assert decode.register_memory(dst.value, n) == 0

# The blocks a kernel produces on the stream, held until the test opens it.
ahead = bytes((i * 5 + 1) & 0xFF for i in range(n))
behind = bytes(n)
s, other, gate = held_stream(acl)
ok(acl.aclrtMemcpyAsync(src, n, ahead, n, H2D, s), "aclrtMemcpyAsync")

srcs = [src.value + i * block for i in range(n // block)]
dsts = [dst.value + i * block for i in range(n // block)]
ret = prefill.batch_transfer_async_write_submit(decode_id, srcs, dsts, [block] * len(srcs), s.value)
assert ret == 0, ret
ok(acl.aclrtMemcpyAsync(src, n, behind, n, H2D, s), "aclrtMemcpyAsync")  # reuses the buffer
ok(acl.aclrtRecordNotify(gate, other), "aclrtRecordNotify")
ok(acl.aclrtSynchronizeStream(s), "aclrtSynchronizeStream")
got = ctypes.create_string_buffer(n)
ok(acl.aclrtMemcpy(got, n, dst, n, D2H), "aclrtMemcpy")
assert got.raw == ahead, "decode got what the work ahead of the submit wrote"

# The single-buffer forms, and the synchronous ones.
assert prefill.transfer_async_read_submit(decode_id, src.value, dst.value, block, s.value) == 0
ok(acl.aclrtSynchronizeStream(s), "aclrtSynchronizeStream")
assert prefill.transfer_sync_write(decode_id, src.value, dst.value + 2 * block, block) == 0
back = ctypes.create_string_buffer(block)
ok(acl.aclrtMemcpy(back, block, vp(dst.value + 2 * block), block, D2H), "aclrtMemcpy")
assert back.raw == ahead[:block], "the async read brought block 0 back, the sync write sent it on"
assert prefill.batch_transfer_sync_read(decode_id, [src.value + block], [dst.value + 3 * block], [block]) == 0
ok(acl.aclrtMemcpy(back, block, vp(src.value + block), block, D2H), "aclrtMemcpy")
assert back.raw == ahead[3 * block:4 * block], "the sync read brought block 3"

# Failures are nonzero returns, never exceptions.
assert prefill.transfer_async_write_submit(decode_id, src.value + n, dst.value, 16, s.value) == -1, "unregistered"
assert prefill.batch_transfer_async_write_submit(decode_id, [src.value], [], [16], s.value) == -1
assert prefill.transfer_sync_write(decode_id, src.value, dst.value + n, 16) == -1, "outside decode's memory"
assert prefill.unregister_memory(src.value + 1) == -1
assert prefill.unregister_memory(src.value) == 0
prefill.destroy()
decode.unInitialize()
assert prefill.transfer_sync_write(decode_id, src.value, dst.value, 16) == -1, "destroyed"
print("pushed")
'''


def test_a_prefill_engine_pushes_kv_blocks_ordered_on_its_stream_as_memfabric_code_does(tmp_path):
    env = dict(os.environ, TE_ACL_LIBRARY=fake_acl(), TE_FAKE_ACL_SHM_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(FAKE_NPU), os.environ.get("PYTHONPATH", "")]))
    ids = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    done = subprocess.run([sys.executable, "-c", CHILD, *ids], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pushed\n"

"""te.compat.datasystem: every rule of the yr.datasystem TransferEngine, and the document's examples."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from te.compat.datasystem import ErrorCode, Result, TransferEngine

K = ErrorCode
EXAMPLES = Path(__file__).parent / "seed_examples"


def hostport() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def pair():
    owner, requester = TransferEngine(), TransferEngine()
    o, r = hostport(), hostport()
    assert owner.initialize(o, "ascend", "cpu").is_ok()
    assert requester.initialize(r, "ascend", "cpu").is_ok()
    yield owner, requester, o
    requester.finalize()
    owner.finalize()


def code(rc: Result) -> ErrorCode:
    assert isinstance(rc, Result)
    return rc.get_code()


# ---- the seed document's examples, as written there (numpy for torch_npu) ----


def run_example(name: str, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TE_DATASYSTEM_NPU", "host")
    text = (EXAMPLES / name).read_text()
    ports = {p: str(free_port()) for p in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)))}
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    script = tmp_path / name
    script.write_text(text)
    g = runpy.run_path(str(script), run_name="__main__")
    return g, ports, capsys.readouterr().out


def test_example_quick_start(monkeypatch, tmp_path, capsys):
    _, ports, out = run_example("quick_start.py", monkeypatch, tmp_path, capsys)
    assert out == f"rpc port: {ports['60551']}\n"


def test_example_single_read(monkeypatch, tmp_path, capsys):
    g, _, out = run_example("single_read.py", monkeypatch, tmp_path, capsys)
    assert out == "True\n"
    assert np.array_equal(g["dst"], np.arange(64, dtype=np.uint8))


def test_example_batch_read(monkeypatch, tmp_path, capsys):
    g, _, out = run_example("batch_read.py", monkeypatch, tmp_path, capsys)
    assert out == ""
    for i, d in enumerate(g["dst_tensors"]):
        assert (d == (i + 1) * 17).all()


# ---- the NPU examples as written, on the fake ACL (torch and torch_npu stand-ins) ----

FAKE_NPU = Path(__file__).parent / "fake_npu"


def fake_acl() -> str:
    """The fake libascendcl.so that te-python/run-tests builds (te-driver-ascend/fake-acl)."""
    path = os.environ.get("TE_FAKE_ACL_LIB")
    if not path or not Path(path).exists():
        pytest.fail(f"TE_FAKE_ACL_LIB={path!r}: run te-python/run-tests, which builds te-fake-acl and sets it")
    return path


def run_npu_example(name: str, tmp_path, check: str) -> str:
    """Runs seed example ``name`` unchanged but for its ports, then ``check``, in a child process
    whose ACL is the fake and whose torch, torch_npu and yr.datasystem are the stand-ins."""
    text = (EXAMPLES / name).read_text()
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text))):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    script = tmp_path / name
    script.write_text(text + check)
    env = {k: v for k, v in os.environ.items() if k != "TE_DATASYSTEM_NPU"}
    env.update(TE_ACL_LIBRARY=fake_acl(), TE_FAKE_ACL_SHM_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(FAKE_NPU), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_example_single_read_on_npu_memory(tmp_path):
    # The tensors are fake device memory (not host-addressable): the bytes
    # can only have arrived through te-driver-ascend's ACL calls.
    out = run_npu_example("npu_single_read.py", tmp_path,
                          "print(src.device, dst.device, hex(dst.data_ptr())[:6])\n")
    assert out == "True\nnpu:0 npu:1 0x7e00\n"


def test_example_batch_read_on_npu_memory(tmp_path):
    out = run_npu_example(
        "npu_batch_read.py", tmp_path,
        "print([d.cpu().tobytes() == bytes([(i + 1) * 17]) * size for i, d in enumerate(dst_tensors)])\n")
    assert out == "[True, True, True]\n"


# ---- Result and ErrorCode ----


def test_error_codes_and_result():
    assert [(c.name, int(c)) for c in ErrorCode][:7] == [
        ("kOk", 0), ("kInvalid", 2), ("kNotFound", 3), ("kRuntimeError", 5),
        ("kNotReady", 8), ("kNotAuthorized", 9), ("kNotSupported", 36),
    ]
    ok = Result()
    assert ok.is_ok() and not ok.is_error() and ok.get_code() == K.kOk and ok.get_msg() == ""
    bad = Result(K.kInvalid, "why")
    assert bad.is_error() and bad.get_code() == K.kInvalid and bad.get_msg() == "why"
    assert "kInvalid" in bad.to_string() and "why" in bad.to_string()


# ---- initialize ----


@pytest.mark.parametrize("device", ["gpu:0", "0", "npu:", "npu:x", "NPU:0", "npu:-1", "npu 0", "", "cpu:0"])
def test_malformed_device_name_is_invalid(device):
    e = TransferEngine()
    rc = e.initialize(hostport(), "ascend", device)
    assert code(rc) == K.kInvalid and repr(device) in rc.get_msg()
    assert e.get_rpc_port() == -1


def test_npu_without_driver_is_not_supported(monkeypatch):
    monkeypatch.delenv("TE_DATASYSTEM_NPU", raising=False)
    e = TransferEngine()
    rc = e.initialize(hostport(), "ascend", "npu:0")
    assert code(rc) == K.kNotSupported
    assert "libascendcl.so" in rc.get_msg()
    assert e.get_rpc_port() == -1


@pytest.mark.parametrize("device", ["cpu", "sim:0", "sim:3"])
def test_te_devices_are_accepted(device):
    e = TransferEngine()
    hp = hostport()
    assert e.initialize(hp, "anything", device).is_ok()
    assert e.get_rpc_port() == int(hp.rsplit(":", 1)[1])
    e.finalize()


@pytest.mark.parametrize("name", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1:70000", ":5000", "", "a:b:c"])
def test_local_hostname_must_be_host_and_nonzero_port(name):
    e = TransferEngine()
    assert code(e.initialize(name, "ascend", "cpu")) == K.kInvalid
    assert e.get_rpc_port() == -1


def test_initialize_twice_is_invalid():
    e = TransferEngine()
    hp = hostport()
    assert e.initialize(hp, "ascend", "cpu").is_ok()
    assert code(e.initialize(hostport(), "ascend", "cpu")) == K.kInvalid
    assert e.get_rpc_port() == int(hp.rsplit(":", 1)[1])
    e.finalize()


def test_rpc_port_is_minus_one_before_and_after():
    e = TransferEngine()
    assert e.get_rpc_port() == -1
    hp = hostport()
    assert e.initialize(hp, "ascend", "cpu").is_ok()
    assert e.get_rpc_port() == int(hp.rsplit(":", 1)[1])
    assert e.finalize().is_ok()
    assert e.get_rpc_port() == -1


def test_port_in_use_is_an_error():
    a, b = TransferEngine(), TransferEngine()
    hp = hostport()
    assert a.initialize(hp, "ascend", "cpu").is_ok()
    rc = b.initialize(hp, "ascend", "cpu")
    assert rc.is_error() and hp in rc.get_msg()
    a.finalize()


# ---- not ready ----


def calls(e: TransferEngine, buf: np.ndarray, target: str = "127.0.0.1:1"):
    a = int(buf.ctypes.data)
    return {
        "register_memory": lambda: e.register_memory(a, 64),
        "batch_register_memory": lambda: e.batch_register_memory([a], [64]),
        "unregister_memory": lambda: e.unregister_memory(a),
        "batch_unregister_memory": lambda: e.batch_unregister_memory([a]),
        "transfer_sync_read": lambda: e.transfer_sync_read(target, a, a, 64),
        "batch_transfer_sync_read": lambda: e.batch_transfer_sync_read(target, [a], [a], [64]),
    }


def test_calls_before_initialize_are_not_ready():
    buf = np.zeros(64, np.uint8)
    e = TransferEngine()
    for name, call in calls(e, buf).items():
        assert code(call()) == K.kNotReady, name


def test_calls_after_finalize_are_not_ready_and_reinitialize_works(pair):
    owner, requester, o = pair
    buf = np.zeros(64, np.uint8)
    assert requester.finalize().is_ok()
    assert requester.finalize().is_ok()  # idempotent
    for name, call in calls(requester, buf, o).items():
        assert code(call()) == K.kNotReady, name
    # The same object again.
    assert requester.initialize(hostport(), "ascend", "cpu").is_ok()
    src = np.arange(64, dtype=np.uint8)
    assert owner.register_memory(src.ctypes.data, 64).is_ok()
    assert requester.transfer_sync_read(o, buf.ctypes.data, src.ctypes.data, 64).is_ok()
    assert np.array_equal(buf, src)


# ---- invalid arguments ----


def test_empty_and_mismatched_lists_and_zeros_are_invalid(pair):
    owner, requester, o = pair
    buf = np.zeros(256, np.uint8)
    a = int(buf.ctypes.data)
    cases = [
        owner.batch_register_memory([], []),
        owner.batch_register_memory([a], []),
        owner.batch_register_memory([a, a + 128], [128]),
        owner.batch_register_memory([0], [64]),
        owner.batch_register_memory([a], [0]),
        owner.register_memory(0, 64),
        owner.register_memory(a, 0),
        owner.register_memory(-1, 64),
        owner.batch_unregister_memory([]),
        owner.unregister_memory(0),
        requester.transfer_sync_read(o, 0, a, 64),
        requester.transfer_sync_read(o, a, 0, 64),
        requester.transfer_sync_read(o, a, a, 0),
        requester.batch_transfer_sync_read(o, [], [], []),
        requester.batch_transfer_sync_read(o, [a], [a, a], [64]),
        requester.batch_transfer_sync_read(o, [a], [a], [64, 64]),
        requester.batch_transfer_sync_read(o, [a, 0], [a, a], [64, 64]),
        requester.batch_transfer_sync_read(o, [a], [a], [0]),
    ]
    for i, rc in enumerate(cases):
        assert code(rc) == K.kInvalid, (i, rc.to_string())


def test_overlapping_registration_is_invalid(pair):
    owner, _, _ = pair
    buf = np.zeros(256, np.uint8)
    a = int(buf.ctypes.data)
    assert owner.register_memory(a, 128).is_ok()
    assert code(owner.register_memory(a + 64, 128)) == K.kInvalid
    assert code(owner.batch_register_memory([a + 200, a + 100], [10, 10])) == K.kInvalid  # overlaps [a, a+128)
    assert owner.register_memory(a + 200, 10).is_ok()  # all or nothing: not registered above


# ---- unregister ----


def test_unregister_needs_the_exact_base(pair):
    owner, _, _ = pair
    buf = np.zeros(256, np.uint8)
    a = int(buf.ctypes.data)
    assert owner.register_memory(a, 256).is_ok()
    assert code(owner.unregister_memory(a + 1)) == K.kNotFound
    assert code(owner.batch_unregister_memory([a + 8])) == K.kNotFound
    assert owner.unregister_memory(a).is_ok()
    assert code(owner.unregister_memory(a)) == K.kNotFound
    assert owner.batch_register_memory([a, a + 128], [128, 128]).is_ok()
    assert owner.batch_unregister_memory([a, a + 128]).is_ok()


# ---- remote access ----


def test_remote_range_outside_one_region_is_not_authorized(pair):
    owner, requester, o = pair
    src = np.arange(512, dtype=np.uint64).astype(np.uint8)
    a = int(src.ctypes.data)
    dst = np.zeros(512, np.uint8)
    d = int(dst.ctypes.data)
    assert owner.batch_register_memory([a, a + 256], [256, 256]).is_ok()  # two adjacent regions
    other = np.zeros(64, np.uint8)
    cases = {
        "never registered": requester.transfer_sync_read(o, d, int(other.ctypes.data), 64),
        "partly outside": requester.transfer_sync_read(o, d, a + 480, 64),
        "spanning two": requester.transfer_sync_read(o, d, a + 200, 100),
        "one bad item of a batch": requester.batch_transfer_sync_read(o, [d, d + 64], [a, a + 500], [64, 64]),
    }
    assert owner.unregister_memory(a).is_ok()
    cases["after unregister"] = requester.transfer_sync_read(o, d, a, 64)
    for what, rc in cases.items():
        assert code(rc) == K.kNotAuthorized, (what, rc.to_string())
    assert requester.transfer_sync_read(o, d, a + 256, 256).is_ok()
    assert np.array_equal(dst[:256], src[256:])


def test_unreachable_peer_is_runtime_error_naming_it(pair):
    _, requester, _ = pair
    buf = np.zeros(64, np.uint8)
    target = hostport()
    rc = requester.transfer_sync_read(target, buf.ctypes.data, 4096, 64)
    assert code(rc) == K.kRuntimeError and target in rc.get_msg()


# ---- the requester's buffers ----


def test_destination_need_not_be_registered_and_may_overlap_a_registered_one(pair):
    owner, requester, o = pair
    src = np.arange(4096, dtype=np.uint64).astype(np.uint8)
    assert owner.register_memory(src.ctypes.data, 4096).is_ok()
    dst = np.zeros(4096, np.uint8)
    # Half of the destination is registered by the requester itself: the
    # read straddles it, and te goes through a bounce buffer.
    assert requester.register_memory(dst.ctypes.data, 1024).is_ok()
    assert requester.transfer_sync_read(o, dst.ctypes.data + 512, src.ctypes.data, 2048).is_ok()
    assert np.array_equal(dst[512:2560], src[:2048])
    # Inside the registered part: used as it is.
    assert requester.transfer_sync_read(o, dst.ctypes.data, src.ctypes.data + 7, 100).is_ok()
    assert np.array_equal(dst[:100], src[7:107])
    # Never registered: registered for the call, then let go.
    other = np.zeros(4096, np.uint8)
    assert requester.transfer_sync_read(o, other.ctypes.data, src.ctypes.data, 4096).is_ok()
    assert np.array_equal(other, src)
    assert code(requester.unregister_memory(other.ctypes.data)) == K.kNotFound


# ---- finalize drains ----


def test_finalize_drains_reads_in_flight(pair):
    owner, requester, o = pair
    n, block = 64, 1 << 20
    src = np.random.default_rng(1).integers(0, 256, n * block, dtype=np.uint8)
    assert owner.register_memory(src.ctypes.data, src.nbytes).is_ok()
    dst = np.zeros_like(src)
    results = []

    def read():
        results.append(requester.batch_transfer_sync_read(
            o, [dst.ctypes.data + i * block for i in range(n)],
            [src.ctypes.data + i * block for i in range(n)], [block] * n))

    t = threading.Thread(target=read)
    t.start()
    native = requester._engine
    while native.waiting == 0 and t.is_alive():
        time.sleep(0.0005)  # polling a state, not synchronising by time
    assert requester.finalize().is_ok()
    t.join()
    assert results[0].is_ok(), results[0].to_string()
    assert np.array_equal(dst, src)
    assert code(requester.transfer_sync_read(o, dst.ctypes.data, src.ctypes.data, 64)) == K.kNotReady


# ---- two processes ----


def test_two_processes_read_each_others_arrays(peer):
    mine = TransferEngine()
    me = hostport()
    assert mine.initialize(me, "ascend", "cpu").is_ok()
    a = (np.arange(1 << 20, dtype=np.uint64) % 239).astype(np.uint8)
    assert mine.register_memory(a.ctypes.data, a.nbytes).is_ok()
    theirs = hostport()
    addr_x = peer.run(f"""
        from te.compat.datasystem import TransferEngine
        ds = TransferEngine()
        assert ds.initialize({theirs!r}, "ascend", "cpu").is_ok()
        x = (np.arange(1 << 20, dtype=np.uint64) % 233).astype(np.uint8)
        assert ds.register_memory(x.ctypes.data, x.nbytes).is_ok()
        result = x.ctypes.data
    """)
    got = np.zeros(1 << 20, np.uint8)
    half = 1 << 19
    rc = mine.batch_transfer_sync_read(theirs, [got.ctypes.data, got.ctypes.data + half], [addr_x, addr_x + half], [half, half])
    assert rc.is_ok(), rc.to_string()
    assert np.array_equal(got, (np.arange(1 << 20, dtype=np.uint64) % 233).astype(np.uint8))
    assert peer.run(f"""
        got = np.zeros(1 << 20, np.uint8)
        rc = ds.transfer_sync_read({me!r}, got.ctypes.data, {a.ctypes.data}, 1 << 20)
        assert rc.is_ok(), rc.to_string()
        result = bool(np.array_equal(got, (np.arange(1 << 20, dtype=np.uint64) % 239).astype(np.uint8)))
        ds.finalize()
    """)
    mine.finalize()

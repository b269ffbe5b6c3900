"""te.compat.mooncake: Mooncake's Python API as vLLM and SGLang call it."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import free_port
from te.compat.mooncake import TransferEngine, TransferNotify, TransferOpcode


@pytest.fixture
def pair():
    p, d = TransferEngine(), TransferEngine()
    assert p.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == 0
    assert d.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    yield p, d
    p._engine.finalize()
    d._engine.finalize()


def session(e: TransferEngine) -> str:
    return f"127.0.0.1:{e.get_rpc_port()}"


def test_initialize_conventions(caplog):
    e = TransferEngine()
    assert e.get_rpc_port() == -1
    with caplog.at_level(logging.ERROR, logger="te.compat.mooncake"):
        assert e.initialize("127.0.0.1", "http://127.0.0.1:8080/metadata", "tcp", "") == -1
    assert "etcd://, redis:// and P2PHANDSHAKE" in caplog.text
    port = free_port()
    assert e.initialize(f"127.0.0.1:{port}:npu_0", "P2PHANDSHAKE", "ascend", "") == 0  # SGLang's Ascend form
    assert e.get_rpc_port() == port
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == -1  # twice
    assert isinstance(e.get_local_topology(), str)
    e._engine.finalize()


def test_rdma_protocol_falls_back_and_says_so_once(caplog):
    import te.compat.mooncake as mc

    mc._said.discard("protocol rdma")
    with caplog.at_level(logging.WARNING, logger="te.compat.mooncake"):
        a, b = TransferEngine(), TransferEngine()
        assert a.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "mlx5_0") == 0
        assert b.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "mlx5_1") == 0
    assert caplog.text.count("'rdma' is not available") == 1
    a._engine.finalize()
    b._engine.finalize()


def test_vllm_connector_style_writes_from_a_pool_of_ten_threads(pair):
    """As vLLM's MooncakeConnector: P registers its KV caches with
    batch_register_memory, D too; P writes runs of blocks into D with
    batch_transfer_sync_write from a ThreadPoolExecutor of 10 workers."""
    prefill, decode = pair
    layers, blocks, block = 4, 64, 16384
    p_kv = [np.random.default_rng(i).integers(0, 256, blocks * block, dtype=np.uint8) for i in range(layers)]
    d_kv = [np.zeros(blocks * block, np.uint8) for _ in range(layers)]
    assert prefill.batch_register_memory([t.ctypes.data for t in p_kv], [t.nbytes for t in p_kv]) == 0
    assert decode.batch_register_memory([t.ctypes.data for t in d_kv], [t.nbytes for t in d_kv]) == 0
    remote = session(decode)
    # D asks for blocks (local ids on P -> ids on D), contiguous runs merged.
    wanted = [(list(range(s, s + 4)), list(range(60 - s, 64 - s))) for s in range(0, 32, 4)]

    def send(layer, src_ids, dst_ids):
        src = [p_kv[layer].ctypes.data + i * block for i in src_ids[:1]]
        dst = [d_kv[layer].ctypes.data + i * block for i in dst_ids[:1]]
        return prefill.batch_transfer_sync_write(remote, src, dst, [block * len(src_ids)])

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(send, layer, s, d) for layer in range(layers) for s, d in wanted]
        assert [f.result() for f in futures] == [0] * len(futures)
    for layer in range(layers):
        for s, d in wanted:
            got = d_kv[layer][d[0] * block:(d[-1] + 1) * block]
            want = p_kv[layer][s[0] * block:(s[-1] + 1) * block]
            assert np.array_equal(got, want)


def test_sglang_calls(pair):
    a, b = pair
    src = np.arange(8192, dtype=np.uint64).astype(np.uint8)
    dst = np.zeros(8192, np.uint8)
    assert a.register_memory(src.ctypes.data, src.nbytes) == 0
    assert b.register_memory(dst.ctypes.data, dst.nbytes) == 0
    assert a.transfer_sync_write(session(b), src.ctypes.data, dst.ctypes.data, 4096) == 0
    assert np.array_equal(dst[:4096], src[:4096])
    assert a.send_probe(session(b)) == 0
    assert a.send_probe(f"127.0.0.1:{free_port()}") == -102  # unreachable: Mooncake's ERR_SOCKET
    assert b.unregister_memory(dst.ctypes.data) == 0
    assert b.unregister_memory(dst.ctypes.data) == -3  # ERR_ADDRESS_NOT_REGISTERED
    assert a.transfer_sync_write(session(b), src.ctypes.data, dst.ctypes.data, 4096) == -1  # no longer registered


def test_reads_batches_async_and_status(pair):
    a, b = pair
    n, block = 16, 4096
    remote = np.random.default_rng(3).integers(0, 256, n * block, dtype=np.uint8)
    assert b.register_memory(remote.ctypes.data, remote.nbytes) == 0
    buf = a.allocate_managed_buffer(n * block)
    assert buf != 0
    assert a.transfer_sync_read(session(b), buf, remote.ctypes.data, block) == 0
    assert a.read_bytes_from_buffer(buf, block) == remote[:block].tobytes()
    addrs = [buf + i * block for i in range(n)]
    peers = [remote.ctypes.data + i * block for i in range(n)]
    assert a.batch_transfer_sync_read(session(b), addrs, peers[::-1], [block] * n) == 0
    got = np.frombuffer(a.read_bytes_from_buffer(buf, n * block), np.uint8).reshape(n, block)
    assert np.array_equal(got, remote.reshape(n, block)[::-1])
    # Async: ids, check status, blocking status.
    bid = a.batch_transfer_async_read(session(b), addrs, peers, [block] * n)
    assert bid != 0
    assert a.get_batch_transfer_status([bid]) == 0
    assert a.read_bytes_from_buffer(buf, n * block) == remote.tobytes()
    assert a.write_bytes_to_buffer(buf, b"\x07" * block, block) == 0
    bid = a.transfer_submit_write(session(b), buf, remote.ctypes.data, block)
    assert bid != 0
    while (rc := a.transfer_check_status(bid)) == 0:
        pass
    assert rc == 1 and (remote[:block] == 7).all()
    bad = a.transfer_submit_write(session(b), buf, remote.ctypes.data + n * block - 1, block)
    while (rc := a.transfer_check_status(bad)) == 0:
        pass
    assert rc == -1
    bid = a.batch_transfer_async(session(b), [buf], [remote.ctypes.data], [block], TransferOpcode.Read)
    assert a.get_batch_transfer_status([bid]) == 0
    assert a.batch_transfer_async_write(session(b), [buf], [], []) == 0  # failure is 0
    empty = a.batch_transfer_async_write(session(b), [], [], [])  # as Mooncake: a batch, done at once
    assert empty != 0 and a.transfer_check_status(empty) == 1
    assert a.get_batch_transfer_status([a.batch_transfer_async_read(session(b), [], [], [])]) == 0
    assert a.get_first_buffer_address(session(b)) == remote.ctypes.data
    assert a.free_managed_buffer(buf, n * block) == 0
    assert a.free_managed_buffer(buf, n * block) < 0


def test_notifications_after_data(pair):
    a, b = pair
    src = np.full(1 << 20, 3, np.uint8)
    dst = np.zeros(1 << 20, np.uint8)
    assert b.register_memory(dst.ctypes.data, dst.nbytes) == 0
    assert a.batch_transfer_sync(session(b), [src.ctypes.data], [dst.ctypes.data], [src.nbytes], TransferOpcode.Write,
                                 TransferNotify("kv", "layer 3")) == 0
    notes = []
    while not notes:
        notes = b.get_notifies()
    assert notes == [TransferNotify("kv", "layer 3")]
    assert (dst == 3).all()
    assert a.transfer_sync(session(b), src.ctypes.data, dst.ctypes.data, 16, TransferOpcode.Read) == 0


def test_failures_return_mooncakes_numbers(pair, caplog):
    """Mooncake's sync transfers return -1 on any failure; registration
    returns its error.h numbers. te's message goes to the log."""
    a, b = pair
    e = TransferEngine()
    assert e.register_memory(4096, 4096) == -1  # not initialized
    assert e.transfer_sync_write("127.0.0.1:1", 1, 1, 1) == -1
    buf = np.zeros(8192, np.uint8)
    x = buf.ctypes.data
    assert a.batch_register_memory([1, 2], [1]) == -1  # ERR_INVALID_ARGUMENT
    assert a.register_memory(0, 10) == -1
    assert a.register_memory(x, 0) == -1  # zero length: ERR_INVALID_ARGUMENT
    assert a.register_memory(x, 4096) == 0
    assert a.register_memory(x + 16, 64) == -7  # ERR_ADDRESS_OVERLAPPED
    assert a.batch_register_memory([x + 4096, x + 100], [64, 64]) == -7
    assert a.unregister_memory(x + 16) == -3  # ERR_ADDRESS_NOT_REGISTERED
    assert a.batch_register_memory([], []) == 0 and a.batch_unregister_memory([]) == 0
    with caplog.at_level(logging.ERROR, logger="te.compat.mooncake"):
        assert a.transfer_sync_write(session(b), x, 4096, 64) == -1  # the peer registered nothing
        assert a.batch_transfer_sync_write(session(b), [x], [4096, 8192], [64]) == -1  # different lengths
        assert a.transfer_sync_read(f"127.0.0.1:{free_port()}", x, 4096, 64) == -1  # unreachable
    assert "unreachable" in caplog.text
    assert a.batch_transfer_sync_write(session(b), [], [], []) == 0  # empty: done, as Mooncake


def test_get_batch_transfer_status_frees_every_batch_on_failure(pair):
    a, b = pair
    n, block = 8, 1 << 16
    remote = np.zeros(n * block, np.uint8)
    assert b.register_memory(remote.ctypes.data, remote.nbytes) == 0
    buf = a.allocate_managed_buffer(n * block)
    good = [a.batch_transfer_async_write(session(b), [buf + i * block], [remote.ctypes.data + i * block], [block])
            for i in range(n)]
    bad = a.transfer_submit_write(session(b), buf, remote.ctypes.data + remote.nbytes - 1, block)
    assert 0 not in good and bad != 0
    assert a.get_batch_transfer_status([bad] + good) == -1
    # Every batch was freed: none is known any more.
    assert all(a.transfer_check_status(bid) == -1 for bid in [bad] + good)
    assert a.transfer_sync_write(session(b), buf, remote.ctypes.data, block) == 0


def test_module_surface_matches_mooncake_engine():
    import te.compat.mooncake as engine

    assert engine.TransferOpcode.Read == 0 and engine.TransferOpcode.Write == 1
    assert engine.Read is engine.TransferOpcode.Read and engine.Write is engine.TransferOpcode.Write
    assert engine.TransferEngine.TransferOpcode is engine.TransferOpcode
    assert engine.SUPPORT_CUDA is False and engine.SUPPORT_EFA is False
    n = TransferNotify()
    assert (n.name, n.msg) == ("", "")
    n = TransferNotify(name="a", msg="b")
    n.msg = "c"
    assert (n.name, n.msg) == ("a", "c")
    # As a Mooncake built without CUDA: the *_on_cuda calls are absent.
    e = TransferEngine()
    for name in ("transfer_write_on_cuda", "transfer_read_on_cuda", "batch_transfer_write_on_cuda",
                 "batch_transfer_read_on_cuda"):
        assert not hasattr(e, name)
    # Keyword names as pybind declares them.
    import inspect

    want = {
        "transfer_sync_write": ["target_hostname", "buffer", "peer_buffer_address", "length", "transport_hint"],
        "batch_transfer_sync_read": ["target_hostname", "buffers", "peer_buffer_addresses", "lengths",
                                     "transport_hint"],
        "transfer_sync": ["target_hostname", "buffer", "peer_buffer_address", "length", "opcode", "notify",
                          "transport_hint"],
        "batch_transfer_async": ["target_hostname", "buffers", "peer_buffer_addresses", "lengths", "opcode",
                                 "transport_hint"],
        "register_memory": ["buffer_addr", "capacity", "location"],
        "batch_register_memory": ["buffer_addresses", "capacities", "location"],
        "get_local_topology": ["device_name"],
        "send_probe": ["peer_server_name"],
        "warmup_efa_segment": ["segment_name"],
    }
    for name, params in want.items():
        assert list(inspect.signature(getattr(e, name)).parameters) == params, name


def test_sglang_wrapper_style(pair):
    """As SGLang's MooncakeTransferEngine wraps it: session id from the host
    and get_rpc_port(), register / batch_register checked with ``!= 0``,
    transfers checked with ``ret < 0``, send_probe for a failed session."""
    a, b = pair
    src = [np.full(4096, i + 1, np.uint8) for i in range(4)]
    dst = [np.zeros(4096, np.uint8) for _ in range(4)]
    assert a.batch_register_memory([t.ctypes.data for t in src], [4096] * 4) == 0
    for t in dst:
        assert b.register_memory(t.ctypes.data, t.nbytes) == 0
    session_id = f"127.0.0.1:{b.get_rpc_port()}"
    ret = a.batch_transfer_sync_write(session_id, [t.ctypes.data for t in src], [t.ctypes.data for t in dst],
                                      [4096] * 4)
    assert not ret < 0
    assert all((d == i + 1).all() for i, d in enumerate(dst))
    ret = a.transfer_sync_write(session_id, src[0].ctypes.data, dst[3].ctypes.data, 4096)
    assert ret == 0 and (dst[3] == 1).all()
    assert a.send_probe(session_id) == 0
    b._engine.finalize()  # the peer goes away
    assert a.transfer_sync_write(session_id, src[0].ctypes.data, dst[3].ctypes.data, 4096) < 0
    assert a.send_probe(session_id) != 0
    assert a.batch_unregister_memory([t.ctypes.data for t in src]) == 0


def test_two_processes_write_and_read_each_others_arrays(peer):
    mine = TransferEngine()
    assert mine.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == 0
    a = (np.arange(1 << 20, dtype=np.uint64) % 211).astype(np.uint8)
    b = np.zeros(1 << 20, np.uint8)
    assert mine.batch_register_memory([a.ctypes.data, b.ctypes.data], [a.nbytes, b.nbytes]) == 0
    theirs, x_addr, y_addr = peer.run("""
        from te.compat.mooncake import TransferEngine
        mc = TransferEngine()
        assert mc.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == 0
        x = (np.arange(1 << 20, dtype=np.uint64) % 199).astype(np.uint8)
        y = np.zeros(1 << 20, np.uint8)
        assert mc.batch_register_memory([x.ctypes.data, y.ctypes.data], [x.nbytes, y.nbytes]) == 0
        result = [f"127.0.0.1:{mc.get_rpc_port()}", x.ctypes.data, y.ctypes.data]
    """)
    assert mine.transfer_sync_read(theirs, b.ctypes.data, x_addr, 1 << 20) == 0
    assert np.array_equal(b, (np.arange(1 << 20, dtype=np.uint64) % 199).astype(np.uint8))
    assert mine.batch_transfer_sync_write(theirs, [a.ctypes.data], [y_addr], [a.nbytes]) == 0
    assert peer.run("result = bool(np.array_equal(y, (np.arange(1 << 20, dtype=np.uint64) % 211).astype(np.uint8)))")
    me = f"127.0.0.1:{mine.get_rpc_port()}"
    assert peer.run(f"""
        z = np.zeros(1 << 20, np.uint8)
        assert mc.transfer_sync_read({me!r}, z.ctypes.data, {a.ctypes.data}, 1 << 20) == 0
        x[:] = 5
        assert mc.batch_transfer_sync_write({me!r}, [x.ctypes.data], [{b.ctypes.data}], [1 << 20]) == 0
        result = bool(np.array_equal(z, (np.arange(1 << 20, dtype=np.uint64) % 211).astype(np.uint8)))
    """)
    assert (b == 5).all()
    mine._engine.finalize()


@pytest.mark.parametrize("name, host, port", [
    ("10.0.0.1", "10.0.0.1", 0), ("10.0.0.1:5000", "10.0.0.1", 5000), ("10.0.0.1:5000:npu_3", "10.0.0.1", 5000),
    ("[::1]", "::1", 0), ("[::1]:5000", "::1", 5000), ("[fe80::1]:5000:npu_0", "fe80::1", 5000),
    ("fe80::1", "fe80::1", 0), ("", "127.0.0.1", 0),
])
def test_local_hostname_forms(name, host, port):
    from te.compat.mooncake import _split_hostname

    assert _split_hostname(name) == (host, port)


def test_ipv6_session_as_sglang_writes_it():
    """SGLang's session id for an IPv6 host is ``[host]:port``."""
    a, b = TransferEngine(), TransferEngine()
    assert a.initialize("::1", "P2PHANDSHAKE", "rdma", "") == 0
    assert b.initialize("[::1]", "P2PHANDSHAKE", "rdma", "") == 0
    src, dst = np.full(4096, 9, np.uint8), np.zeros(4096, np.uint8)
    assert b.register_memory(dst.ctypes.data, dst.nbytes) == 0
    assert a.transfer_sync_write(f"[::1]:{b.get_rpc_port()}", src.ctypes.data, dst.ctypes.data, 4096) == 0
    assert (dst == 9).all()
    a._engine.finalize()
    b._engine.finalize()

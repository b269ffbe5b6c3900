"""The native API: te.Engine in one process and between two."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import te


@pytest.fixture
def pair():
    with te.Engine() as target, te.Engine() as initiator:
        yield target, initiator


def test_error_codes_are_tes():
    assert te.CODES == {
        "Ok": 0, "Invalid": 2, "NotFound": 3, "RuntimeError": 5, "NotReady": 8, "NotAuthorized": 9,
        "NotSupported": 36, "Timeout": 100, "Canceled": 101, "Disconnected": 102,
    }
    for cls, code in [
        (te.InvalidError, 2), (te.NotFoundError, 3), (te.RuntimeError, 5), (te.NotReadyError, 8),
        (te.NotAuthorizedError, 9), (te.NotSupportedError, 36), (te.TimeoutError, 100),
        (te.CanceledError, 101), (te.DisconnectedError, 102),
    ]:
        assert cls.code == code and issubclass(cls, te.Error)
    assert issubclass(te.InvalidError, ValueError)
    assert issubclass(te.TimeoutError, TimeoutError)


def test_config_kwargs_and_bad_values():
    with te.Engine(listen="127.0.0.1:0", location="cpu", path="tcp", secret="s", max_batches=8,
                   connect_timeout=2.5, transfer_timeout=30, busy_poll=False) as e:
        assert e.location == "cpu" and e.path == "tcp"
        assert e.segment_name == f"127.0.0.1:{e.rpc_port}"
    for kwargs, word in [
        ({"bogus": 1}, "bogus"),
        ({"location": "gpu:0"}, "gpu:0"),
        ({"path": "infiniband"}, "infiniband"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"transfer_timeout": 0}, "transfer_timeout"),
        ({"max_batches": 0}, "max_batches"),
        ({"max_payload": "big"}, "max_payload"),
        ({"listen": "nowhere"}, "nowhere"),
    ]:
        with pytest.raises(te.InvalidError, match=word) as info:
            te.Engine(**kwargs)
        assert info.value.code == 2


def test_context_manager_finalizes():
    with te.Engine() as e:
        mem = e.alloc(4096)
    assert e.closed
    with pytest.raises(te.NotReadyError) as info:
        e.alloc(4096)
    assert info.value.code == 8
    del mem


def test_alloc_memory_is_a_buffer_without_copy(pair):
    target, initiator = pair
    mem = target.alloc(1 << 16)
    assert len(mem) == 1 << 16 and mem.location == "cpu"
    view = np.frombuffer(mem, dtype=np.uint8)
    view[:] = np.arange(1 << 16, dtype=np.uint64).astype(np.uint8)
    mv = memoryview(mem)
    assert mv[5] == 5 and not mv.readonly
    assert target.read_memory(mem.addr + 3, 2) == bytes([3, 4])
    mem.write(b"\xff\xfe", offset=10)
    assert view[10] == 0xFF and mem.read(10, 2) == b"\xff\xfe"
    dst = bytearray(1 << 16)
    initiator.register(dst, perm="local_only")
    initiator.transfer_sync_read(target.segment_name, dst, mem.addr)
    assert bytes(dst) == view.tobytes()
    with pytest.raises(te.NotReadyError, match="view"):
        mem.free()
    del view
    mv.release()
    mem.free()
    assert mem.freed
    with pytest.raises(BufferError):
        memoryview(mem)


class ArrayInterface:
    def __init__(self, arr):
        self.arr = arr
        self.__array_interface__ = arr.__array_interface__


class TorchLike:
    """What te takes from a torch tensor: data_ptr(), nbytes, is_contiguous()."""

    def __init__(self, arr):
        self.arr = arr

    def data_ptr(self):
        return self.arr.ctypes.data

    @property
    def nbytes(self):
        return self.arr.nbytes

    def is_contiguous(self):
        return self.arr.flags["C_CONTIGUOUS"]


class DLPackOnly:
    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, **kw):
        return self.arr.__dlpack__(**kw)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda a: a,
        lambda a: memoryview(a),
        lambda a: ArrayInterface(a),
        lambda a: TorchLike(a),
        lambda a: DLPackOnly(a),
    ],
    ids=["numpy", "memoryview", "array_interface", "data_ptr", "dlpack"],
)
def test_memory_from_caller_objects(pair, wrap):
    target, initiator = pair
    src = (np.arange(4096, dtype=np.uint32) * 7).astype(np.uint32)
    remote = target.register(wrap(src))
    assert remote == src.ctypes.data
    dst = np.zeros_like(src)
    initiator.register(wrap(dst), perm="local_only")
    initiator.transfer_sync_read(target.segment_name, wrap(dst), remote)
    assert np.array_equal(src, dst)
    out = np.full_like(src, 9)
    initiator.register(out, perm="local_only")
    initiator.transfer_sync_write(target.segment_name, wrap(out), remote)
    assert (src == 9).all()
    target.unregister(wrap(src))


def test_int_address_with_length(pair):
    target, initiator = pair
    src = bytearray(b"abcdefgh" * 512)
    dst = np.zeros(4096, dtype=np.uint8)
    remote = target.register(src)
    initiator.register(dst.ctypes.data, dst.nbytes, perm="local_only")
    initiator.transfer_sync_read(target.segment_name, dst.ctypes.data + 8, remote + 8, 100)
    assert dst[8:108].tobytes() == bytes(src[8:108])
    with pytest.raises(te.InvalidError, match="needs a length"):
        initiator.transfer_sync_read(target.segment_name, dst.ctypes.data, remote)


def test_bad_memory_arguments(pair):
    target, initiator = pair
    with pytest.raises(te.InvalidError, match="read-only"):
        initiator.transfer_sync_read(target.segment_name, b"x" * 16, 1234)
    ro = np.zeros(16, dtype=np.uint8)
    ro.flags.writeable = False
    with pytest.raises(te.InvalidError, match="read-only"):
        initiator.register(ro)
    initiator.register(ro, perm="remote_read")  # peers only read it: fine
    strided = np.zeros((8, 8), dtype=np.uint8)[:, ::2]
    with pytest.raises(te.InvalidError, match="contiguous"):
        initiator.register(strided)
    with pytest.raises(te.InvalidError, match="not memory"):
        initiator.register("a string")
    with pytest.raises(te.InvalidError, match="larger"):
        initiator.register(bytearray(8), 16)
    with pytest.raises(te.InvalidError, match="permission"):
        initiator.register(bytearray(8), perm="everything")
    with pytest.raises(te.InvalidError, match="unsigned"):
        initiator.register(-5, 10)


def test_register_rules(pair):
    target, _ = pair
    a = bytearray(4096)
    base = target.register(a)
    with pytest.raises(te.InvalidError):
        target.register(a)  # overlaps itself
    with pytest.raises(te.NotFoundError) as info:
        target.unregister(base + 1)
    assert info.value.code == 3
    target.unregister(base)
    b, c = bytearray(100), bytearray(100)
    bases = target.register_batch([b, c])
    assert {r.addr for r in target.regions()} >= set(bases)
    target.unregister_batch(bases)
    with pytest.raises(te.InvalidError, match="empty"):
        target.register_batch([])


def test_remote_access_rules(pair):
    target, initiator = pair
    a, b = np.zeros(4096, np.uint8), np.zeros(4096, np.uint8)
    ra, rb = target.register(a), target.register(b)
    dst = initiator.alloc(8192)
    name = target.segment_name
    with pytest.raises(te.NotAuthorizedError) as info:
        initiator.transfer_sync_read(name, dst, ra + 4000, 200)
    assert info.value.code == 9
    target.unregister(ra)
    with pytest.raises(te.NotAuthorizedError):
        initiator.transfer_sync_read(name, dst, ra, 64)
    with pytest.raises(te.NotFoundError):
        initiator.transfer_sync_read(name, bytearray(64), rb, 64)  # local side not registered
    del b, rb


def test_batches(pair):
    target, initiator = pair
    remote = target.alloc(1 << 20)
    np.frombuffer(remote, np.uint8)[:] = np.arange(1 << 20, dtype=np.uint64).astype(np.uint8)
    local = initiator.alloc(1 << 20)
    seg = initiator.open_segment(target.segment_name)
    info = initiator.segment_info(seg)
    assert any(r.addr == remote.addr and r.length == 1 << 20 for r in info)
    assert initiator.segment_path(seg) in ("shm", "tcp")
    b = initiator.allocate_batch(16)
    assert initiator.batch_status(b).state == "initial"
    reqs = [("read", local.addr + i * 65536, seg, remote.addr + i * 65536, 65536) for i in range(15)]
    reqs.append(te.Request("read", local.addr + 15 * 65536, seg, remote.addr + 15 * 65536, 65536))
    initiator.submit(b, reqs)
    st = initiator.wait_batch(b, timeout=30)
    assert st.ok and st.done and st.completed == st.total == 16 and st.transferred == 1 << 20
    assert all(t.state == "completed" for t in initiator.tasks_status(b))
    assert initiator.task_status(b, 3).transferred == 65536
    assert initiator.batch_error(b) is None
    initiator.free_batch(b)
    assert bytes(memoryview(local)) == bytes(memoryview(remote))
    with pytest.raises(te.InvalidError):
        initiator.batch_status(b)  # freed
    with pytest.raises(te.InvalidError, match="op"):
        initiator.submit(initiator.allocate_batch(1), [("copy", local, seg, remote.addr, 1)])
    # A failing task: the batch says which and why.
    b = initiator.allocate_batch(1)
    initiator.submit(b, [(te.READ, local.addr, seg, remote.addr + (1 << 20) - 10, 100)], path="tcp")
    st = initiator.wait_batch(b, timeout=30)
    assert st.state == "failed" and st.code == 9
    err = initiator.batch_error(b)
    assert isinstance(err, te.NotAuthorizedError)
    initiator.free_batch(b)
    initiator.close_segment(seg)


def test_cancel(pair):
    target, initiator = pair
    remote = target.alloc(1 << 24)
    local = initiator.alloc(1 << 24)
    seg = initiator.open_segment(target.segment_name)
    b = initiator.allocate_batch(64)
    initiator.submit(b, [("read", local.addr, seg, remote.addr, 1 << 24)] * 1, path="tcp")
    initiator.cancel_batch(b)
    st = initiator.wait_batch(b, timeout=30)
    assert st.state in ("canceled", "completed")
    initiator.free_batch(b)
    b = initiator.allocate_batch(1)
    initiator.submit(b, [("write", local, seg, remote.addr, None)])
    initiator.cancel_task(b, 0)
    assert initiator.task_status(b, 0).done
    initiator.free_batch(b)


def test_notifications(pair):
    target, initiator = pair
    seg = initiator.open_segment(target.segment_name)
    initiator.send_notification(seg, "hello", b"world")
    initiator.send_notification(target.segment_name, "text", "as str")
    got = []
    while len(got) < 2:
        got += target.wait_notifications(timeout=10)
    assert [(n.name, n.msg) for n in got] == [("hello", b"world"), ("text", b"as str")]
    assert got[0].sender == initiator.segment_name
    assert target.take_notifications() == []
    assert target.wait_notifications(timeout=0.05) == []


@pytest.mark.parametrize("path", ["tcp", "shm"])
def test_notification_after_batch_data(pair, path):
    target, initiator = pair
    n = 64
    remote = target.alloc(n * 65536)
    view = np.frombuffer(remote, np.uint8)
    local = initiator.alloc(n * 65536)
    np.frombuffer(local, np.uint8)[:] = 0xA5
    seg = initiator.open_segment(target.segment_name)
    b = initiator.allocate_batch(n)
    initiator.submit(b, [("write", local.addr + i * 65536, seg, remote.addr + i * 65536, 65536) for i in range(n - 1)], path=path)
    initiator.submit_with_notify(b, [("write", local.addr + (n - 1) * 65536, seg, remote.addr + (n - 1) * 65536, 65536)], "kv", b"layer 0")
    notes = target.wait_notifications(timeout=30)
    # When the notification is seen, every byte of the batch is in place.
    assert (view == 0xA5).all()
    assert [(x.name, x.msg) for x in notes] == [("kv", b"layer 0")]
    assert initiator.wait_batch(b, timeout=30).ok
    initiator.free_batch(b)


def test_threads_transfer_at_once_from_one_engine(pair):
    target, initiator = pair
    threads, block, rounds = 4, 65536, 50
    remote = target.alloc(threads * block)
    np.frombuffer(remote, np.uint8)[:] = np.repeat(np.arange(threads, dtype=np.uint8) + 1, block)
    locals_ = [np.zeros(block, np.uint8) for _ in range(threads)]
    for a in locals_:
        initiator.register(a, perm="local_only")
    errors = []

    def work(t):
        try:
            for _ in range(rounds):
                locals_[t][:] = 0
                initiator.transfer_sync_read(target.segment_name, locals_[t], remote.addr + t * block)
                assert (locals_[t] == t + 1).all()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_unreachable_peer_names_address():
    with te.Engine(connect_timeout=1) as e:
        from conftest import free_port

        port = free_port()
        with pytest.raises(te.RuntimeError, match=f"127.0.0.1:{port}") as info:
            e.open_segment(f"127.0.0.1:{port}")
        assert info.value.code == 5


def test_sim_device_memory():
    with te.Engine(location="sim:0") as dev, te.Engine() as host:
        mem = dev.alloc(1 << 16)
        assert mem.location == "sim:0"
        with pytest.raises(BufferError, match="not host-addressable"):
            memoryview(mem)
        src = np.arange(1 << 16, dtype=np.uint64).astype(np.uint8)
        host.register(src, perm="local_only")
        host.transfer_sync_write(dev.segment_name, src, mem.addr)
        assert mem.read() == src.tobytes()
        with pytest.raises(te.InvalidError, match="device memory"):
            host.send_notification(dev.segment_name, "x", mem)


@pytest.mark.parametrize("path", ["tcp", "auto"])
def test_two_processes_read_and_write_each_others_arrays(peer, path):
    """Another Python process and this one read and write each other's numpy arrays."""
    with te.Engine(path=path) as mine:
        a = (np.arange(1 << 20, dtype=np.uint64) % 251).astype(np.uint8)  # mine, pattern
        b = np.zeros(1 << 20, dtype=np.uint8)  # mine, written by the peer
        addr_a, addr_b = mine.register(a), mine.register(b)
        info = peer.run(f"""
            e = te.Engine(path={path!r})
            x = (np.arange(1 << 20, dtype=np.uint64) % 241).astype(np.uint8)
            y = np.zeros(1 << 20, dtype=np.uint8)
            result = [e.segment_name, e.register(x), e.register(y)]
        """)
        name, addr_x, addr_y = info
        # This process reads the peer's x and writes into its y.
        got = np.zeros(1 << 20, dtype=np.uint8)
        mine.register(got, perm="local_only")
        mine.transfer_sync_read(name, got, addr_x)
        assert np.array_equal(got, (np.arange(1 << 20, dtype=np.uint64) % 241).astype(np.uint8))
        mine.batch_transfer_sync_write(name, [a[: 1 << 19], a[1 << 19:]], [addr_y, addr_y + (1 << 19)])
        assert peer.run("result = bool(np.array_equal(y, (np.arange(1 << 20, dtype=np.uint64) % 251).astype(np.uint8)))")
        # The peer reads this process's a and writes its x into b.
        assert peer.run(f"""
            got = np.zeros(1 << 20, dtype=np.uint8)
            e.register(got, perm="local_only")
            e.transfer_sync_read({mine.segment_name!r}, got, {addr_a})
            e.transfer_sync_write({mine.segment_name!r}, x, {addr_b})
            result = bool(np.array_equal(got, (np.arange(1 << 20, dtype=np.uint64) % 251).astype(np.uint8)))
        """)
        assert np.array_equal(b, (np.arange(1 << 20, dtype=np.uint64) % 241).astype(np.uint8))
        # A batch from the peer with a notification: seen after its data.
        peer.run(f"""
            y[:] = 77
            seg = e.open_segment({mine.segment_name!r})
            bt = e.allocate_batch(16)
            e.submit_with_notify(bt, [("write", y.ctypes.data + i * 65536, seg, {addr_b} + i * 65536, 65536) for i in range(16)], "done", b"16 blocks")
        """)
        notes = mine.wait_notifications(timeout=30)
        assert (b == 77).all()
        assert [(n.name, n.msg) for n in notes] == [("done", b"16 blocks")]
        assert peer.run("result = e.wait_batch(bt, 30).ok; e.free_batch(bt); e.finalize()")

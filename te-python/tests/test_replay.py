"""te.replay: host batches through a ring into sim:0, every byte verified."""

from __future__ import annotations

import numpy as np
import pytest

import te
from te.replay import TeReplayTransferBackend, build_replay_transfer_backend

SHAPE = (32, 64)  # 8 KiB of float32


def batch(i: int) -> np.ndarray:
    return (np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + i * 1000.0).astype(np.float32)


@pytest.mark.parametrize("depth", [2, 4])
def test_stream_of_batches_through_the_ring(depth):
    b = build_replay_transfer_backend(device="sim:0", ring_depth=depth)
    assert isinstance(b, TeReplayTransferBackend)
    assert b.supports_async_submit and b.device == "sim:0"
    host = [np.empty(SHAPE, np.float32) for _ in range(depth)]
    b.register_host_slots(host)
    dev = b.allocate_device_slots(count=depth, shape=SHAPE, dtype=np.float32)
    pending: dict[int, int] = {}
    verified = 0

    def land(slot):
        nonlocal verified
        b.synchronize_ready(slot)
        assert b.ready_query(slot)
        got = dev[slot].numpy()
        assert np.array_equal(got, batch(pending.pop(slot)))
        verified += 1
        b.clear_ready(slot)
        assert not b.ready_query(slot)

    for i in range(1000):
        slot = i % depth
        if slot in pending:
            land(slot)
        host[slot][:] = batch(i)
        t = b.submit_h2d(slot=slot, dst=dev[slot], src=host[slot], metadata={"i": i}, trace_recorder=None,
                         trace_cuda_events=False, h2d_bytes=None, pack_layout=None, pack_executor=None)
        assert isinstance(t, float) and t >= 0
        pending[slot] = i
    for slot in list(pending):
        land(slot)
    assert verified == 1000
    b.close()
    b.close()  # idempotent


def test_misuse_is_refused():
    b = build_replay_transfer_backend(device="sim:0", ring_depth=2)
    host = [np.zeros(SHAPE, np.float32) for _ in range(2)]
    with pytest.raises(te.NotReadyError, match="register_host_slots"):
        b.submit_h2d(slot=0, dst=None, src=host[0], metadata=None, trace_recorder=None, trace_cuda_events=False,
                     h2d_bytes=None, pack_layout=None, pack_executor=None)
    with pytest.raises(te.InvalidError, match="3 host slots"):
        b.register_host_slots(host + [np.zeros(SHAPE, np.float32)])
    b.register_host_slots(host)
    with pytest.raises(te.InvalidError, match="count 3"):
        b.allocate_device_slots(count=3, shape=SHAPE, dtype=np.float32)
    dev = b.allocate_device_slots(count=2, shape=SHAPE, dtype="float32")

    def submit(**kw):
        args = dict(slot=0, dst=dev[0], src=host[0], metadata=None, trace_recorder=None, trace_cuda_events=False,
                    h2d_bytes=None, pack_layout=None, pack_executor=None)
        args.update(kw)
        return b.submit_h2d(**args)

    with pytest.raises(te.InvalidError, match="shape"):
        submit(src=np.zeros((16, 64), np.float32))
    with pytest.raises(te.InvalidError, match="dtype"):
        submit(src=np.zeros(SHAPE, np.int32))
    with pytest.raises(te.InvalidError, match="host slot 0"):
        submit(src=np.zeros(SHAPE, np.float32))  # right shape, not the registered slot
    with pytest.raises(te.InvalidError, match="device slot 0"):
        submit(dst=dev[1])
    with pytest.raises(te.InvalidError, match="slot 5"):
        submit(slot=5)
    with pytest.raises(te.InvalidError, match="h2d_bytes"):
        submit(h2d_bytes=1 << 30)
    submit()
    with pytest.raises(te.NotReadyError, match="in flight"):
        submit()  # refill in flight
    b.synchronize_ready(0)
    submit(h2d_bytes=64)  # a prefix; allowed once seen ready
    b.wait_current_stream_for_ready(0)
    b.close()
    for call in (lambda: b.ready_query(0), lambda: b.synchronize_ready(0), lambda: b.clear_ready(0), lambda: submit()):
        with pytest.raises(te.NotReadyError, match="closed"):
            call()
    with pytest.raises(te.InvalidError, match="ring_depth"):
        build_replay_transfer_backend(device="sim:0", ring_depth=0)
    with pytest.raises(te.InvalidError, match="gpu:0"):
        build_replay_transfer_backend(device="gpu:0", ring_depth=2)


def test_close_with_copies_in_flight():
    b = build_replay_transfer_backend(device="sim:1", ring_depth=4)
    host = [np.full((1 << 20,), i, np.uint8) for i in range(4)]
    b.register_host_slots(host)
    dev = b.allocate_device_slots(count=4, shape=(1 << 20,), dtype=np.uint8)
    for i in range(4):
        b.submit_h2d(slot=i, dst=dev[i], src=host[i], metadata=None, trace_recorder=None, trace_cuda_events=False,
                     h2d_bytes=None, pack_layout=None, pack_executor=None)
    b.close()  # cancels or waits, frees

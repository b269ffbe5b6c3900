"""Child of test_sigint: blocks in te waits until the test sends SIGINT.

argv: the target's segment name and a remote address. Protocol on
stdout: "opened", then (after "go" on stdin) "waiting sync" / "waiting
batch" right before each blocking call, and what it found after each
KeyboardInterrupt; "clean" at the end.
"""

import sys
import threading
import time

import numpy as np

import te

target, remote = sys.argv[1], int(sys.argv[2])
e = te.Engine(path="tcp", max_batches=2)
dst = np.zeros(1 << 20, dtype=np.uint8)
e.register(dst, perm="local_only")
e.open_segment(target)
print("opened", flush=True)


def announce(what):
    """Prints `what` once the main thread is inside a blocking te wait
    (e.waiting counts it), so that the test's SIGINT lands in the wait."""

    def watch():
        while e.waiting == 0:
            time.sleep(0.001)  # polling a state, not synchronising by time
        print(what, flush=True)

    threading.Thread(target=watch, daemon=True).start()

sys.stdin.readline()  # the test stopped the target

announce("waiting sync")
try:
    e.transfer_sync_read(target, dst, remote)
    print("sync read returned", flush=True)
except KeyboardInterrupt:
    # The sync read's own batch is gone: both batches can be allocated.
    b1, b2 = e.allocate_batch(1), e.allocate_batch(1)
    e.free_batch(b1)
    e.free_batch(b2)
    print("interrupted sync: batches free", flush=True)

b = e.allocate_batch(1)
seg = e.open_segment(target)
e.submit(b, [("read", dst, seg, remote, None)])
announce("waiting batch")
try:
    e.wait_batch(b)
    print("wait returned", flush=True)
except KeyboardInterrupt:
    st = e.batch_status(b)
    e.free_batch(b)
    print(f"interrupted batch: {st.state}", flush=True)

e.finalize()
print("clean", flush=True)

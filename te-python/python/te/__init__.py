"""te: a transfer engine, from Python.

Register memory, then read from or write into the registered memory of
other processes by address: one transfer or a batch of thousands, blocking
or asynchronous, with notifications that arrive after the data. The path is
chosen per peer: shared memory on the same host, TCP elsewhere.

Quick start::

    import numpy as np
    import te

    with te.Engine() as target, te.Engine() as initiator:
        src = np.arange(1 << 20, dtype=np.uint8)
        remote = target.register(src)                 # numpy, no copy
        dst = initiator.alloc(1 << 20)                # engine memory
        initiator.transfer_sync_read(target.segment_name, dst, remote)
        assert bytes(memoryview(dst)) == src.tobytes()

Modules:

- :class:`te.Engine` -- the native API (mirrors te_runtime's ``Engine``).
- :mod:`te.compat.datasystem` -- drop-in ``yr.datasystem.TransferEngine``.
- :mod:`te.compat.mooncake` -- drop-in ``mooncake.engine.TransferEngine``.
- :mod:`te.replay` -- a ``ReplayTransferBackend`` for replay pipelines.
- ``python -m te.bench`` -- the loopback benchmark through Python.

Errors raise subclasses of :class:`te.Error` with ``code`` and ``message``.
"""

from __future__ import annotations

from te._errors import (
    CODES,
    CanceledError,
    DisconnectedError,
    Error,
    InvalidError,
    NotAuthorizedError,
    NotFoundError,
    NotReadyError,
    NotSupportedError,
    RuntimeError,
    TimeoutError,
)
from te._te import (
    BatchStatus,
    Engine,
    Memory,
    Notification,
    Region,
    Request,
    TaskStatus,
    __version__,
)

#: ``op`` of a read (also Mooncake's ``TransferOpcode.Read``).
READ = "read"
#: ``op`` of a write (also Mooncake's ``TransferOpcode.Write``).
WRITE = "write"

__all__ = [
    "Engine",
    "Memory",
    "Request",
    "TaskStatus",
    "BatchStatus",
    "Notification",
    "Region",
    "Error",
    "InvalidError",
    "NotFoundError",
    "RuntimeError",
    "NotReadyError",
    "NotAuthorizedError",
    "NotSupportedError",
    "TimeoutError",
    "CanceledError",
    "DisconnectedError",
    "CODES",
    "READ",
    "WRITE",
    "__version__",
]

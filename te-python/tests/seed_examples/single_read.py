import numpy as np
from te.compat.datasystem import TransferEngine

owner = TransferEngine()
requester = TransferEngine()
owner_device_id = 0
requester_device_id = 1
size = 64
rc = owner.initialize("127.0.0.1:60551", "ascend", f"npu:{owner_device_id}")
assert rc.is_ok(), rc.to_string()
rc = requester.initialize("127.0.0.1:60552", "ascend", f"npu:{requester_device_id}")
assert rc.is_ok(), rc.to_string()
src = np.arange(size, dtype=np.uint8)
dst = np.zeros(size, dtype=np.uint8)
src_addr = int(src.ctypes.data)
dst_addr = int(dst.ctypes.data)
rc = owner.register_memory(src_addr, size)
assert rc.is_ok(), rc.to_string()
rc = requester.transfer_sync_read("127.0.0.1:60551", dst_addr, src_addr, size)
assert rc.is_ok(), rc.to_string()
print(np.array_equal(src, dst))
requester.finalize()
owner.finalize()

import torch
import torch_npu
from yr.datasystem import TransferEngine
owner = TransferEngine()
requester = TransferEngine()
owner_device_id = 0
requester_device_id = 1
size = 64
rc = owner.initialize("127.0.0.1:60551", "ascend", f"npu:{owner_device_id}")
assert rc.is_ok(), rc.to_string()
rc = requester.initialize("127.0.0.1:60552", "ascend", f"npu:{requester_device_id}")
assert rc.is_ok(), rc.to_string()
src = torch.arange(size, dtype=torch.uint8, device=f"npu:{owner_device_id}")
dst = torch.zeros(size, dtype=torch.uint8, device=f"npu:{requester_device_id}")
src_addr = int(src.data_ptr())
dst_addr = int(dst.data_ptr())
rc = owner.register_memory(src_addr, size)
assert rc.is_ok(), rc.to_string()
rc = requester.transfer_sync_read("127.0.0.1:60551", dst_addr, src_addr, size)
assert rc.is_ok(), rc.to_string()
print(torch.equal(src.cpu(), dst.cpu()))
requester.finalize()
owner.finalize()

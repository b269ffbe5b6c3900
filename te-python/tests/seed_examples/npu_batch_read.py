import torch
import torch_npu
from yr.datasystem import TransferEngine
owner = TransferEngine()
requester = TransferEngine()
owner_id = 0
requester_id = 1
size = 256
batch_count = 3
assert owner.initialize("127.0.0.1:61051", "ascend", f"npu:{owner_id}").is_ok()
assert requester.initialize("127.0.0.1:61052", "ascend", f"npu:{requester_id}").is_ok()
src_tensors = [
torch.full((size,), (i + 1) * 17, dtype=torch.uint8, device=f"npu:{owner_id}")
for i in range(batch_count)
]
dst_tensors = [
torch.zeros((size,), dtype=torch.uint8, device=f"npu:{requester_id}")
for _ in range(batch_count)
]
src_addrs = [int(t.data_ptr()) for t in src_tensors]
dst_addrs = [int(t.data_ptr()) for t in dst_tensors]
lengths = [size] * batch_count
assert owner.batch_register_memory(src_addrs, lengths).is_ok()
assert requester.batch_transfer_sync_read("127.0.0.1:61051", dst_addrs, src_addrs, lengths).is_ok()
requester.finalize()
owner.finalize()

"""Test-only: importing torch_npu initialises ACL, as the real one does (te then finds it initialised)."""

import torch

torch._acl()

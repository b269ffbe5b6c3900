from te.compat.datasystem import TransferEngine

engine = TransferEngine()
rc = engine.initialize("127.0.0.1:60551", "ascend", "npu:0")
if rc.is_error():
    raise RuntimeError(rc.to_string())
port = engine.get_rpc_port()
print("rpc port:", port)
engine.finalize()

"""Named segments through a directory from Python: the native keyword and
Mooncake's metadata server strings, against real etcd and Redis servers
(started here on free loopback ports, stopped by their PID)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pytest

import te
from conftest import free_port
from te.compat.mooncake import TransferEngine


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(kind: str, tmp: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind == "redis":
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", tmp]
    else:
        peer = free_port()
        cmd = ["etcd", "--name", "t", "--data-dir", f"{tmp}/etcd",
               "--listen-client-urls", f"http://127.0.0.1:{port}", "--advertise-client-urls", f"http://127.0.0.1:{port}",
               "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
               "--initial-cluster", f"t=http://127.0.0.1:{peer}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _answers(port):
        assert proc.poll() is None, f"{cmd[0]} exited: {proc.returncode}"
        assert time.monotonic() < deadline, f"{cmd[0]} does not answer on {port}"
        time.sleep(0.02)  # polling a server that starts
    return proc, port


@pytest.fixture(params=["etcd", "redis"])
def store(request) -> Iterator[str]:
    """A store's URL, as te spells it."""
    binary = {"etcd": "etcd", "redis": "redis-server"}[request.param]
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (apt-get install etcd-server redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = _start(request.param, tmp)
        try:
            yield f"{request.param}://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait()


def _ready(url: str) -> None:
    """etcd accepts connections a little before its gateway answers: wait for a publish to work."""
    deadline = time.monotonic() + 30
    while True:
        try:
            te.Engine(directory=url).finalize()
            return
        except te.RuntimeError:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling a server that starts


def test_native_engines_find_each_other_by_name(store):
    _ready(store)
    with te.Engine(segment_name="prefill-3", directory=store, directory_ttl=2) as target, \
            te.Engine(directory=store) as initiator:
        remote = target.alloc(1 << 16)
        src = initiator.alloc(1 << 16)
        data = (np.arange(1 << 16) % 251).astype(np.uint8).tobytes()
        src.write(data)
        initiator.transfer_sync_write("prefill-3", src, remote.addr)
        assert remote.read() == data
        with pytest.raises(te.InvalidError, match="held by pid"):
            te.Engine(segment_name="prefill-3", directory=store)
        with pytest.raises(te.NotFoundError, match="not in directory"):
            initiator.transfer_sync_read("decode-9", src, remote.addr)
    for bad, word in [("http://h:1", "scheme"), ("redis://h", "host:port")]:
        with pytest.raises(te.InvalidError, match=word):
            te.Engine(directory=bad)


def test_mooncake_metadata_server_strings(store):
    """As Mooncake users write them: etcd:// or redis:// URLs, or a bare
    host:port (etcd) with ``metadata_type`` saying which."""
    _ready(store)
    scheme, _, hostport = store.partition("://")
    forms = [store, hostport] if scheme == "etcd" else [store]
    for server in forms:
        p, d = TransferEngine(), TransferEngine()
        name = f"127.0.0.1:{free_port()}"
        assert p.initialize_ext(name, server, "tcp", "", scheme) == 0
        assert d.initialize("127.0.0.1", server, "tcp", "") == 0
        src = np.full(4096, 7, dtype=np.uint8)
        dst = np.zeros(4096, dtype=np.uint8)
        assert p.register_memory(dst.ctypes.data, dst.nbytes) == 0
        assert d.transfer_sync_write(name, src.ctypes.data, dst.ctypes.data, 4096) == 0
        assert np.array_equal(src, dst)
        p._engine.finalize()
        d._engine.finalize()

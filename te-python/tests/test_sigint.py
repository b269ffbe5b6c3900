"""Ctrl-C during a blocking wait ends cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import stop_process


def test_sigint_during_wait_cancels_and_frees(peer):
    name, remote, pid = peer.run("""
        e = te.Engine(path="tcp")
        m = e.alloc(1 << 20)
        result = [e.segment_name, m.addr, os.getpid()]
    """)
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "sigint_child.py"), name, str(remote)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin and child.stdout
    try:
        assert child.stdout.readline().strip() == "opened"
        stop_process(pid)  # the target answers nothing from now on
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "waiting sync"
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "interrupted sync: batches free"
        assert child.stdout.readline().strip() == "waiting batch"
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "interrupted batch: canceled"
        assert child.stdout.readline().strip() == "clean"
        assert child.wait(timeout=60) == 0
    finally:
        os.kill(pid, signal.SIGCONT)
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        child.stdin.close()

"""Helpers of te's Python tests: peer processes and free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(pid: int, timeout: float = 30.0) -> None:
    """Sends SIGSTOP to ``pid`` and returns once every thread of it is
    stopped: ``kill`` returns when the signal is queued, and a thread that
    was already runnable may still serve a request before it stops."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    tasks = Path(f"/proc/{pid}/task")
    while True:
        states = []
        for task in tasks.iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:
                continue  # a thread that has just exited
            states.append(stat[stat.rindex(")") + 2])
        if states and all(s in "Tt" for s in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout} s: {states}")
        time.sleep(0.001)  # polling a state, not synchronising by time


class Peer:
    """A Python process running snippets sent with :meth:`run`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def run(self, code: str) -> Any:
        """Runs ``code`` in the peer; returns its ``result`` or raises."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"code": textwrap.dedent(code)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"peer exited with {self.proc.wait()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError("peer failed:\n" + reply["error"])
        return reply["result"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout
        self.proc.stdout.close()


@pytest.fixture
def peer():
    """A peer process, ended after the test."""
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def make_peer():
    """Makes peer processes (with extra environment), ended after the test."""
    made: list[Peer] = []

    def make(env: dict[str, str] | None = None) -> Peer:
        p = Peer(env)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()

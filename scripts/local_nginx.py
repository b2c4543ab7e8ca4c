"""A real nginx on a loopback port with a chosen log_format, for tests and example logs.

Used by the test fixtures and by `scripts/make_example_log.py`: it writes a config into a
private directory, starts the Debian nginx binary in the foreground, and stops it on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from scripts.procs import free_port, stop, wait_listening

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    log_format shadowtap {escape}{format};
    access_log {dir}/access.log shadowtap;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
{location_extra}            return 200 "ok\\n";
        }}
    }}
}}
"""


def find_nginx() -> str:
    """The nginx binary's path; RuntimeError with a hint when it is not installed."""
    for path in (shutil.which("nginx"), *NGINX_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light; `make test` does it)")


def quote_format(fmt: str) -> str:
    """The format string as one nginx config string argument."""
    if "'" not in fmt:
        return f"'{fmt}'"
    if '"' not in fmt:
        return f'"{fmt}"'
    raise ValueError("a log format with both quote kinds cannot be written as one config string")


class LocalNginx:
    """Context manager: a running nginx logging with `log_format` (and `escape`) to `access_log`."""

    def __init__(self, log_format: str, escape: str = "default", workdir: str | None = None,
                 location_extra: str = "") -> None:
        self.log_format = log_format
        self.escape = escape
        self.location_extra = location_extra
        """Directives added to `location /` (e.g. `access_log off;` for benchmarks); none by default."""
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="shadowtap-nginx-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        escape = "" if self.escape == "default" else f"escape={self.escape} "
        fmt = quote_format(self.log_format)
        extra = "".join(f"            {line.strip()}\n" for line in self.location_extra.splitlines() if line.strip())
        return CONFIG.format(dir=self.dir, port=self.port, escape=escape, format=fmt, location_extra=extra)

    def __enter__(self) -> LocalNginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config_text())
        binary = find_nginx()
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        wait_listening(self.process, self.port, "nginx", 10, self._why_exited)
        return self

    def _why_exited(self) -> str:
        err = self.process.stderr.read().decode(errors="replace") if self.process and self.process.stderr else ""
        error_log = self.dir / "error.log"
        return err + (error_log.read_text(errors="replace") if error_log.exists() else "")

    def log_lines(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until the access log holds `count` lines and return them (nginx writes at request end)."""
        deadline = time.monotonic() + timeout
        lines: list[bytes] = []
        while time.monotonic() < deadline:
            if self.access_log.exists():
                lines = self.access_log.read_bytes().splitlines()
                if len(lines) >= count:
                    return lines
            time.sleep(0.05)
        raise RuntimeError(f"nginx logged {len(lines)} lines, expected {count}")

    def reopen(self) -> None:
        """`nginx -s reopen`: reopen the log files (after they were renamed away).

        With master_process off there is no master to signal with `-s`; SIGUSR1 to the single
        process does the same.
        """
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("nginx is not running")
        self.process.send_signal(signal.SIGUSR1)

    def __exit__(self, *exc: object) -> None:
        stop(self.process, signal.SIGQUIT)
        if self.process and self.process.stderr:
            self.process.stderr.close()

"""A real Prefect server for tests of flows, slots, deployments and workers.

``prefect_server`` (session scope) starts ``prefect server start`` on 127.0.0.1 at a free port,
with its own PREFECT_HOME and SQLite database under pytest's temporary folder, and points this
process at it (``PREFECT_API_URL``) until the session ends. Subprocesses (workers, fake tasks) get
``prefect_server.env`` on top of ``os.environ``.

The server's loops are shortened so tests see the effects within seconds: expired concurrency
leases are repossessed every second and a waiter on a full concurrency limit retries at most a
second later (Prefect's defaults: 15 s and 30 s).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flows.ui import stop_groups

SERVER_START_TIMEOUT = 180.0  # ~35 s on a busy 2-core machine
SERVER_STOP_TIMEOUT = 20.0
REPOSSESSOR_LOOP_SECONDS = 1
SLOT_WAIT_SECONDS = 1


@dataclass(frozen=True)
class PrefectServer:
    """A running test server: where it answers and what a client process needs to reach it."""

    api_url: str
    ui_url: str
    home: Path
    log_path: Path
    pid: int
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        return _tail(self.log_path, chars)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _point_prefect_at(env: dict[str, str | None]) -> None:
    """Set (or, for None, unset) environment variables and make Prefect re-read them.

    Prefect snapshots its settings into a global context at import time; without the refresh, a
    process that imported prefect before this fixture ran would keep talking to its old API.
    """
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    ui_url = f"http://127.0.0.1:{port}"
    log_path = home / "server.log"
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": str(REPOSSESSOR_LOOP_SECONDS),
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": str(SLOT_WAIT_SECONDS),
    }
    server_env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # own process group: stopped as a whole below
    try:
        started = time.monotonic()
        while not _healthy(api_url):
            if process.poll() is not None:
                pytest.fail(f"prefect server exited with {process.returncode} before it was healthy; "
                            f"log tail:\n{_tail(log_path, 4000)}")
            if time.monotonic() - started > SERVER_START_TIMEOUT:
                pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s; "
                            f"log tail:\n{_tail(log_path, 4000)}")
            time.sleep(0.5)
        client_env = {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        saved = {key: os.environ.get(key) for key in client_env}
        _point_prefect_at(client_env)
        try:
            yield PrefectServer(api_url=api_url, ui_url=ui_url, home=home, log_path=log_path, pid=process.pid,
                                env=dict(client_env))
        finally:
            _point_prefect_at(saved)
    finally:
        stop_groups([process], timeout=SERVER_STOP_TIMEOUT)

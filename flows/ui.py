"""The two web UIs on this machine: a Prefect server (launch and watch the flows) and MLflow (the runs)::

    make ui                         # = python -m flows.ui
    python -m flows.ui --prefect-port 4300 --mlflow-port 5001

Both listen on 127.0.0.1 only. Once both answer (Prefect: GET /api/health, MLflow: GET /health; the Prefect
server takes about 35 s to start on a small machine) their addresses are printed, with the command that serves
the flows to this server from another terminal (flows.serve): the Prefect UI's deployments then have a "Run"
form with the flows' typed parameters (docs/UI.md). Ctrl-C stops both servers.

MLflow reads ``sqlite:///<root>/mlflow.db``, the database the stages write (or ``TALKHEAD_MLFLOW_URI`` where
that is set; a tracking server there is not started again here). The servers' own output goes to log files in
a temporary folder (or ``--log-dir``), named at start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import flows  # noqa: F401  (environment before Prefect does anything)
from stages._stage import tracking_uri

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
START_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0
LOG_TAIL = 3000


class UIError(RuntimeError):
    """A server that cannot start (a port taken, a process that died, one that never answered)."""


@dataclass
class Server:
    """One started server: its process (a process group of its own), where it answers, where it logs."""

    name: str
    url: str
    health_url: str
    process: subprocess.Popen
    log_path: Path

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL:]
        except OSError as exc:
            return f"<no log: {exc}>"


def port_taken(port: int, host: str = HOST) -> bool:
    """Whether something listens on ``host:port`` already (a server's own bind, SO_REUSEADDR, would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ports: dict[str, int]) -> None:
    """Refuse taken or clashing ports before starting anything; ``ports`` maps the flag to its port."""
    if len(set(ports.values())) < len(ports):
        raise UIError(f"{' and '.join(ports)} are both {next(iter(ports.values()))}: give them different ports")
    for flag, port in ports.items():
        if not 0 < port < 65536:
            raise UIError(f"{flag} {port} is not a port number")
        if port_taken(port):
            raise UIError(f"port {port} on {HOST} is taken (another `make ui`, or another program, listens "
                          f"there): stop it, or choose another port with {flag} PORT")


def prefect_environment(port: int) -> dict[str, str]:
    """The server's environment: on a port other than 4200 the UI only finds its API through
    PREFECT_UI_API_URL (without it: "Can't connect to Server API")."""
    env = {**os.environ,
           "PREFECT_SERVER_API_HOST": HOST,
           "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    return env


def mlflow_environment() -> dict[str, str]:
    """The MLflow UI's environment: without its job runner (six huey processes for GenAI scoring and trace
    archival, nothing the runs' pages need), unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def _start(name: str, command: list[str], env: dict[str, str], cwd: Path, log_dir: Path, url: str,
           health_url: str) -> Server:
    log_path = log_dir / f"{name.lower()}.log"
    log.info("starting %s on %s (log: %s)", name, url, log_path)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # own process group: Ctrl-C reaches us, we stop it
    return Server(name, url, health_url, process, log_path)


def start_prefect(port: int, root: Path, log_dir: Path) -> Server:
    url = f"http://{HOST}:{port}"
    return _start("Prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port",
                              str(port)],
                  prefect_environment(port), root, log_dir, url, f"{url}/api/health")


def start_mlflow(port: int, root: Path, backend_uri: str, log_dir: Path) -> Server:
    url = f"http://{HOST}:{port}"
    return _start("MLflow", [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_uri,
                             "--host", HOST, "--port", str(port), "--workers", "1"],
                  mlflow_environment(), root, log_dir, url, f"{url}/health")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def stop_groups(processes: list[subprocess.Popen], names: list[str] | None = None,
                timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process groups of ``processes`` (each started with ``start_new_session``), all at once; SIGKILL
    a group whose leader lingers past ``timeout``, and whatever a leader left behind in its group."""
    names = names or [f"process {process.pid}" for process in processes]
    running = [(process, name) for process, name in zip(processes, names) if process.poll() is None]
    for process, name in running:
        log.info("stopping %s", name)
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process, name in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", name, timeout)
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=timeout)
        _signal_group(process, signal.SIGKILL)


def stop(servers: list[Server]) -> None:
    """Stop the servers (:func:`stop_groups`)."""
    stop_groups([server.process for server in servers], [server.name for server in servers])


def _died(server: Server) -> UIError:
    return UIError(f"{server.name} exited with {server.process.returncode}; the end of {server.log_path}:\n"
                   f"{server.log_tail()}")


def wait_healthy(servers: list[Server], timeout: float = START_TIMEOUT) -> None:
    """Until every server answers its health check; a server that exits or stays silent is an error."""
    waiting = list(servers)
    started = time.monotonic()
    while waiting:
        for server in list(waiting):
            if server.healthy():
                log.info("%s answers on %s (%.0f s)", server.name, server.url, time.monotonic() - started)
                waiting.remove(server)
            elif server.process.poll() is not None:
                raise _died(server)
        if waiting and time.monotonic() - started > timeout:
            raise UIError(f"{', '.join(s.name for s in waiting)} not answering after {timeout:.0f} s "
                          f"(see {', '.join(str(s.log_path) for s in waiting)})")
        if waiting:
            time.sleep(0.5)


def _raise_interrupt(signum, frame):  # noqa: ARG001  (signal handler's signature)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-port", type=int, default=DEFAULT_PREFECT_PORT,
                        help=f"the Prefect server's port (default {DEFAULT_PREFECT_PORT})")
    parser.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT,
                        help=f"the MLflow UI's port (default {DEFAULT_MLFLOW_PORT})")
    parser.add_argument("--root", default=".", help="the repository whose mlflow.db MLflow shows (default: here)")
    parser.add_argument("--log-dir", help="where the servers' logs go (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=START_TIMEOUT,
                        help=f"seconds to wait for both to answer (default {START_TIMEOUT:.0f})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.root).resolve()
    backend_uri = tracking_uri(root)
    remote_mlflow = backend_uri.startswith(("http://", "https://"))
    ports = {"--prefect-port": args.prefect_port}
    if not remote_mlflow:
        ports["--mlflow-port"] = args.mlflow_port
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the servers as Ctrl-C does
    # Ctrl-C stops them even when this process inherited SIGINT ignored: Python leaves an ignored SIGINT ignored,
    # and a shell's background job (`make ui &`) or a parent that ignores it hands it down that way.
    signal.signal(signal.SIGINT, _raise_interrupt)
    servers: list[Server] = []
    try:
        check_ports(ports)
        if args.log_dir:
            log_dir = Path(args.log_dir).resolve()
            log_dir.mkdir(parents=True, exist_ok=True)
        else:
            log_dir = Path(tempfile.mkdtemp(prefix="talkhead-ui-"))
        servers.append(start_prefect(args.prefect_port, root, log_dir))
        if remote_mlflow:
            log.info("TALKHEAD_MLFLOW_URI is the tracking server %s: its own UI shows the runs", backend_uri)
            mlflow_url = backend_uri
        else:
            servers.append(start_mlflow(args.mlflow_port, root, backend_uri, log_dir))
            mlflow_url = servers[-1].url
        wait_healthy(servers, args.timeout)
        prefect_url = servers[0].url
        print(f"Prefect UI: {prefect_url}", flush=True)
        print(f"MLflow UI:  {mlflow_url}", flush=True)
        print(f"Serve the flows (another terminal, this repository): PREFECT_API_URL={prefect_url}/api make serve",
              flush=True)
        log.info("Ctrl-C stops both")
        while True:
            for server in servers:
                if server.process.poll() is not None:
                    raise _died(server)
            time.sleep(1)
    except UIError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("interrupted")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a server behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(servers)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())

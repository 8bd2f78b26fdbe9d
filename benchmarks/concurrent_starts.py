"""Several stages started at the same moment on a fresh checkout: does any crash in MLflow's start?

Usage: ``python -m benchmarks.concurrent_starts [--tries 10] [--processes 2]
[--output reports/bench/concurrent_starts.json]``. Each try makes a fresh
temporary root (no ``mlflow.db`` yet, as after a clone), starts
``--processes`` Python processes that each run a stage through
``Stage.execute`` (the path ``python -m stages.<name>`` and the flows take),
and releases them together once all have imported their libraries, so their
first MLflow calls collide. A try passes when every process exits 0 and the
database holds one FINISHED run per process. The JSON records the machine,
the date, the count of passing tries and, for a failing one, each process's
last error line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("benchmarks.concurrent_starts")

REPOSITORY = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120.0
"""Longest wait for the processes to import their libraries (MLflow takes a few seconds on a loaded machine)."""


@dataclass(frozen=True)
class StartConfig:
    """The benchmark stage's settings (it has none that matter)."""

    seconds: float = 0.0
    """Seconds the stage's body sleeps inside its MLflow run."""


def _run(cfg: StartConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Any:
    from stages._stage import StageResult

    time.sleep(cfg.seconds)
    return StageResult(metrics={"slept_seconds": cfg.seconds})


def worker(root: Path, go: Path, index: int) -> int:
    """One stage start: import everything, say so on stdout, wait for ``go`` to appear, execute the stage."""
    from stages._stage import Stage

    stage = Stage(name=f"concurrent_start_{index}", config=StartConfig, section="concurrent_start", run=_run,
                  description="benchmarks.concurrent_starts")
    print("ready", flush=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        time.sleep(0.001)
    stage.execute({}, root=root)
    return 0


def one_try(root: Path, processes: int) -> dict[str, Any]:
    """Start ``processes`` stages at once on the fresh ``root``; what happened."""
    go = root / "go"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY),
                                                                             os.environ.get("PYTHONPATH")]))}
    environment.pop("TALKHEAD_MLFLOW_URI", None)  # the fresh root's own database
    started = [subprocess.Popen([sys.executable, "-m", "benchmarks.concurrent_starts", "--worker", str(root),
                                 str(go), str(index)], cwd=root, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for index in range(processes)]
    try:
        for process in started:
            line = process.stdout.readline()
            if line.strip() != "ready":
                break  # it failed before the start; its error is collected below
        go.touch()
        outcomes = [process.communicate(timeout=READY_TIMEOUT_S) for process in started]
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    errors = [f"exit {process.returncode}: {error_line(stderr)}"
              for process, (_, stderr) in zip(started, outcomes) if process.returncode != 0]
    statuses = finished_runs(root) if (root / "mlflow.db").is_file() else []
    ok = not errors and statuses.count("FINISHED") == processes
    return {"ok": ok, "errors": errors, "run_statuses": statuses}


def finished_runs(root: Path) -> list[str]:
    """The statuses of the runs in ``root``'s database, or why it cannot be read."""
    import mlflow

    from stages._stage import EXPERIMENT, tracking_uri

    try:
        client = mlflow.MlflowClient(tracking_uri(root))
        experiment = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id]) if experiment is not None else []
    except Exception as error:  # noqa: BLE001 - a half-created database fails in many ways; the try failed
        return [f"database unreadable: {type(error).__name__}: {str(error).splitlines()[0]}"]
    return sorted(run.info.status for run in runs)


def error_line(stderr: str) -> str:
    """The last line of a traceback that names an exception (SQLAlchemy ends with a link instead)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b", line)]
    return (named or lines or ["(no output)"])[-1]


def run(tries: int, processes: int) -> dict[str, Any]:
    results = []
    for number in range(tries):
        with tempfile.TemporaryDirectory(prefix="concurrent_starts_") as scratch:
            started = time.perf_counter()
            result = one_try(Path(scratch), processes)
            result["seconds"] = round(time.perf_counter() - started, 2)
        logger.info("try %d of %d: %s%s", number + 1, tries, "ok" if result["ok"] else "FAILED",
                    "" if result["ok"] else f" ({result['errors']}, runs {result['run_statuses']})")
        results.append(result)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "processes_per_try": processes,
        "tries": tries,
        "passed": sum(result["ok"] for result in results),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10, help="fresh roots to try (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="stages started at once per try (default 2)")
    parser.add_argument("--output", type=Path, default=Path("reports/bench/concurrent_starts.json"))
    parser.add_argument("--worker", nargs=3, metavar=("ROOT", "GO", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        root, go, index = args.worker
        return worker(Path(root), Path(go), int(index))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run(args.tries, args.processes)
    from talkhead_models.atomic import write_text

    write_text(args.output, json.dumps(results, indent=2) + "\n")
    logger.info("%d of %d tries passed; wrote %s", results["passed"], results["tries"], args.output)
    return 0 if results["passed"] == results["tries"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a stage command's fixed cost goes, outside DVC: interpreter, imports, MLflow bookkeeping, teardown.

Usage::

    python -m benchmarks.stage_overhead [--repeat 3] [--null-work] [--profile DIR] [--db mlflow.db] \\
        -- stages.split --identity S001 --crop data/processed/S001/crop --corpus data/raw/synthetic \\
           --split /tmp/th/split

The stage command (a ``python -m stages.<name> ...`` command line without ``python -m``) runs ``--repeat`` times,
each in a fresh process started as DVC starts it. Point its outputs at a throwaway folder: this script does not
rewrite them. Its MLflow runs go to a copy of ``--db`` (default ``./mlflow.db``, so the timings see a database
of the demo's size) in a temporary folder, whose experiment's artifacts go there too; nothing is written under
data/ or reports/ (unless the stage's own output arguments say so), nor into the real mlflow.db.

Each process reports, in wall-clock seconds (its phases are summed to its total):

* ``interpreter``: process start to the first line of this script (Python, site, the venv's .pth files);
* ``imports``: importing ``stages.<name>`` (the stage module and everything it imports at module level);
* ``start``: ``Stage.main`` to the stage's run function: argparse, params.yaml, config, the MLflow run
  (tags, git commit, database, experiment, dead runs, start_run, params); ``start_mlflow`` is the
  ``tracked_run`` part of it;
* ``work``: the stage's run function (``--null-work``: replaced by one that returns no metrics, to time the
  bookkeeping of train or evaluate without training);
* ``end``: the run function's return to ``Stage.execute``'s: metrics, artifacts, end_run (system metrics stopped);
* ``teardown``: ``Stage.execute``'s return to the process's exit (atexit handlers, threads, interpreter
  shutdown).

``--profile DIR`` writes one cProfile file per process (``DIR/<stage>.<k>.prof``) of ``Stage.main``, and prints
its top functions by cumulative time (writing it lengthens that run's teardown); ``-X importtime`` is the tool for the imports
(``python -X importtime -c 'import stages.split' 2>&1 | sort -t'|' -k2 -n | tail``).
"""

from __future__ import annotations

import time

_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

PHASES = ("interpreter", "imports", "start", "work", "end", "teardown")
REPORT_ENV = "TALKHEAD_STAGE_OVERHEAD_REPORT"
PROFILE_ENV = "TALKHEAD_STAGE_OVERHEAD_PROFILE"
NULL_WORK_ENV = "TALKHEAD_STAGE_OVERHEAD_NULL_WORK"


def inner(module: str, argv: list[str]) -> int:
    """Run one stage in this process, timing its phases into the JSON file named by REPORT_ENV."""
    import functools
    import importlib

    marks = {"process": _STARTED}
    marks["imported_from"] = time.time()
    stage_module = importlib.import_module(module)
    marks["imported"] = time.time()
    from stages import _stage

    stage = stage_module.STAGE
    original_run = stage.run

    @functools.wraps(original_run)
    def timed_run(*args, **kwargs):
        marks["work_from"] = time.time()
        try:
            if os.environ.get(NULL_WORK_ENV):
                return _stage.StageResult()
            return original_run(*args, **kwargs)
        finally:
            marks["work_to"] = time.time()

    object.__setattr__(stage, "run", timed_run)
    enter = _stage.tracked_run.__enter__

    def timed_enter(self):
        marks["mlflow_from"] = time.time()
        try:
            return enter(self)
        finally:
            marks["mlflow_to"] = time.time()

    def timed_init_marker(original_init):
        @functools.wraps(original_init)
        def timed_init(self, *args, **kwargs):
            marks.setdefault("tracked_from", time.time())
            return original_init(self, *args, **kwargs)
        return timed_init

    _stage.tracked_run.__init__ = timed_init_marker(_stage.tracked_run.__init__)
    _stage.tracked_run.__enter__ = timed_enter

    profile_path = os.environ.get(PROFILE_ENV)
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
    execute = _stage.Stage.execute

    def timed_execute(self, *args, **kwargs):
        try:
            return execute(self, *args, **kwargs)
        finally:
            # Stage.main does nothing after execute but what ends the process (gc.freeze()); the marks are
            # written here, so that what follows, to the exit, is the teardown.
            marks["main_to"] = time.time()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile_path)
            Path(os.environ[REPORT_ENV]).write_text(json.dumps(marks))

    _stage.Stage.execute = timed_execute
    # As under ``python -m stages.<name>``: the program's __main__ module holds the stage (Stage.main checks).
    globals()["STAGE"] = stage
    marks["main_from"] = time.time()
    if profiler is not None:
        profiler.enable()
    return stage.main(argv)


def tracking_copy(db: Path, folder: Path) -> str:
    """A copy of ``db`` in ``folder`` whose experiments keep their artifacts there; its tracking URI."""
    copy = folder / "mlflow.db"
    if db.is_file():
        shutil.copyfile(db, copy)
        with sqlite3.connect(copy) as connection:
            connection.execute("UPDATE experiments SET artifact_location = ?", ((folder / "mlruns").as_uri(),))
    return f"sqlite:///{copy}"


def phases(spawned: float, exited: float, marks: dict) -> dict:
    work_from, work_to = marks.get("work_from", marks["main_to"]), marks.get("work_to", marks["main_to"])
    return {
        "interpreter": marks["process"] - spawned,
        "imports": marks["imported"] - marks["imported_from"],
        "start": work_from - marks["main_from"],
        "start_mlflow": (marks.get("mlflow_to", work_from) - marks.get("tracked_from", work_from)),
        "work": work_to - work_from,
        "end": marks["main_to"] - work_to,
        "teardown": exited - marks["main_to"],
        "total": exited - spawned,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        return inner(argv[1], argv[2:])
    if "--" not in argv:
        raise SystemExit("usage: python -m benchmarks.stage_overhead [options] -- stages.<name> [args ...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_overhead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--null-work", action="store_true", help="replace the stage's work by nothing")
    parser.add_argument("--profile", type=Path, help="folder for one cProfile file per process")
    parser.add_argument("--db", type=Path, default=Path("mlflow.db"),
                        help="MLflow database copied for the runs (default ./mlflow.db; a missing one: a fresh one)")
    parser.add_argument("--json", action="store_true", help="print the per-run phases as JSON too")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    module, stage_args = command[0], command[1:]
    runs = []
    with tempfile.TemporaryDirectory(prefix="stage_overhead.") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "TALKHEAD_MLFLOW_URI": tracking_copy(args.db, folder),
               REPORT_ENV: str(folder / "marks.json")}
        if args.null_work:
            env[NULL_WORK_ENV] = "1"
        for k in range(args.repeat):
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                env[PROFILE_ENV] = str((args.profile / f"{module.split('.')[-1]}.{k}.prof").resolve())
            spawned = time.time()
            done = subprocess.run([sys.executable, "-m", "benchmarks.stage_overhead", "--inner", module,
                                   *stage_args], env=env, capture_output=True, text=True)
            exited = time.time()
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"{module} failed (exit {done.returncode})")
            runs.append(phases(spawned, exited, json.loads((folder / "marks.json").read_text())))
            if args.profile:
                import pstats

                print(f"--- {env[PROFILE_ENV]}")
                pstats.Stats(env[PROFILE_ENV]).sort_stats("cumulative").print_stats(25)
    keys = (*PHASES[:3], "start_mlflow", *PHASES[3:], "total")
    print(f"{module} ({args.repeat} runs{', null work' if args.null_work else ''}): median s")
    print("  " + "  ".join(f"{key:>12}" for key in keys))
    print("  " + "  ".join(f"{statistics.median(run[key] for run in runs):12.3f}" for key in keys))
    fixed = [run["total"] - run["work"] for run in runs]
    print(f"  fixed (total - work): median {statistics.median(fixed):.3f} s, runs {[round(f, 2) for f in fixed]}")
    if args.json:
        print(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

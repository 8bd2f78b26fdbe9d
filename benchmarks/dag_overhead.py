"""Where the DAG's time goes besides the stages' own work: each stage's fixed cost, and ``dvc status``.

The fixed cost of a stage is what ``dvc repro`` spends on it beyond the
stage's own ``stage_seconds`` (stages/_stage.py logs "stage <name> done in
<s> s" at the end of each run): DVC hashing its deps and outputs before and
after, the new Python process and its imports, MLflow's run bookkeeping,
teardown. It is read from the log of one ``make demo`` as the gap between
two consecutive "done" lines minus the second stage's own seconds (the first
stage has no predecessor and is left out), so the same measurement can be
taken again after a change::

    make demo 2>&1 | tee demo.log
    python -m benchmarks.dag_overhead --demo-log demo.log [--status-repetitions 5]

``dvc status`` is timed on the workspace as it stands (the demo's data), a
few repetitions, median and range, and the files under each
``data/processed/<ID>`` are counted (what DVC stats). Each measurement is
kept in reports/bench/dag_overhead.json under its ``--label`` (``before`` and
``after`` a change, measured the same way), with the after/before medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from benchmarks.bench_components import cpu_model
from stages._stage import git_commit
from talkhead_models.atomic import write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO stages\._stage: stage (?P<stage>\S+) "
                  r"done in (?P<seconds>[0-9.]+) s$")


def stage_costs(log_text: str) -> list[dict]:
    """Per stage after the first: its own seconds and its fixed cost (gap since the previous stage's end minus its
    own seconds), in the order the log shows them."""
    done = []
    for line in log_text.splitlines():
        match = DONE.match(line.strip())
        if match:
            stamp = datetime.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            done.append((match["stage"], stamp, float(match["seconds"])))
    if len(done) < 2:
        raise ValueError("fewer than two 'stage <name> done in <s> s' lines: pass the log of a whole `make demo`")
    return [{"stage": stage, "own_s": round(own, 3), "fixed_s": round(stamp - previous - own, 3)}
            for (_, previous, _), (stage, stamp, own) in zip(done, done[1:])]


def spread(values: list[float]) -> dict:
    ordered = sorted(values)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {"median": round(statistics.median(ordered), 3), "q1": round(quartiles[0], 3),
            "q3": round(quartiles[2], 3), "min": round(ordered[0], 3), "max": round(ordered[-1], 3),
            "count": len(ordered)}


def time_dvc_status(repetitions: int) -> list[float]:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        done = subprocess.run(["dvc", "status", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        # -q exits 1 when something changed; anything else (another DVC command holds the lock) is quick and would
        # pass for a fast status
        if done.returncode not in (0, 1):
            raise RuntimeError(f"dvc status failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return times


def files_per_identity(processed: Path) -> dict[str, int]:
    """Files under each ``processed/<ID>`` (what DVC stats and hashes for a stage depending on it)."""
    if not processed.is_dir():
        return {}
    return {folder.name: sum(1 for path in folder.rglob("*") if path.is_file())
            for folder in sorted(processed.iterdir()) if folder.is_dir()}


def comparison(before: dict, after: dict) -> dict:
    """after / before of the medians that the issue's targets read."""
    keys = (("fixed_cost_per_stage_s", "median"), ("dvc_status_s", "median"))
    ratios = {f"{section}.{field}": round(after[section][field] / before[section][field], 3)
              for section, field in keys if before.get(section, {}).get(field)}
    before_files, after_files = before.get("files_per_identity"), after.get("files_per_identity")
    if before_files and after_files:
        ratios["files_per_identity.max"] = round(max(after_files.values()) / max(before_files.values()), 5)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dag_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-log", type=Path, required=True, help="the output of one `make demo`")
    parser.add_argument("--status-repetitions", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench" / "dag_overhead.json")
    parser.add_argument("--label", default="after", help="the name this measurement is kept under (before, after)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    costs = stage_costs(args.demo_log.read_text(errors="replace"))
    status = time_dvc_status(args.status_repetitions)
    commit = git_commit(ROOT)
    fixed = [c["fixed_s"] for c in costs]
    result = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit.removesuffix("-dirty"),
        "tree_dirty": commit.endswith("-dirty"),
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count()},
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "fixed_cost_per_stage_s": spread(fixed),
        "fixed_cost_total_s": round(sum(fixed), 1),
        "own_work_total_s": round(sum(c["own_s"] for c in costs), 1),
        "dvc_status_s": {**spread(status), "repetitions": [round(t, 2) for t in status]},
        "files_per_identity": files_per_identity(ROOT / "data" / "processed"),
        "stages": costs,
    }
    kept = json.loads(args.output.read_text()) if args.output.is_file() else {}
    # A file written before labels existed is one measurement: the one made before this change.
    measurements = kept.get("measurements") or ({"before": kept} if kept else {})
    measurements[args.label] = result
    report = {"measurements": measurements}
    if "before" in measurements and "after" in measurements:
        report["after_over_before"] = comparison(measurements["before"], measurements["after"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.output, json.dumps(report, indent=1) + "\n")
    log.info("fixed cost per stage: median %.1f s (total %.0f s over %d stages); dvc status: median %.1f s -> %s",
             result["fixed_cost_per_stage_s"]["median"], result["fixed_cost_total_s"], len(costs),
             result["dvc_status_s"]["median"], args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

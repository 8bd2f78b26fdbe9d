"""Deploy the flows to a process work pool, for workers on several machines (docs/DISTRIBUTED.md)::

    python -m flows.deploy --source /srv/talkhead            # once, from any machine that reaches the server
    prefect worker start --pool talkhead                     # on each machine, with the venv's prefect

``--source`` is the repository as the workers see it: the same absolute path
on every machine (a shared mount, or one checkout per machine at that path).
A run of a deployment changes into that directory on the worker's machine
(a ``set_working_directory`` pull step) and executes there, in the worker's
Python, with ``--env`` on top of the worker's environment (point
``TALKHEAD_MLFLOW_URI`` at the shared MLflow tracking server there, not at a
SQLite file many writers would lock). Where ``--source`` exists on the
deploying machine the flows' parameter forms are read from the code there;
elsewhere (deploying from a laptop) from this checkout's code, which should
then be the same commit. The work pool (type ``process``) is created when
missing.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import flows  # noqa: F401  (environment before Prefect is imported)

log = logging.getLogger(__name__)

POOL = "talkhead"
ENTRYPOINT_FILE = "flows/identity.py"
"""The flows' file, relative to the source: the deployments' entrypoints are ``flows/identity.py:<function>``."""


def ensure_pool(name: str = POOL) -> None:
    """Create the process work pool ``name`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
            if pool.type != "process":
                raise ValueError(f"work pool {name!r} exists with type {pool.type!r}; the flows need a 'process' pool")
            return
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            log.info("created work pool %s (process)", name)
        except ObjectAlreadyExists:
            pass  # another machine created it in between


def _storage(source: str):
    """Prefect's local storage at ``source``, the path kept as given (absolute, symlinks not resolved: a shared
    mount's link may point elsewhere on the deploying machine than on the workers)."""
    from prefect.runner.storage import LocalStorage

    class SharedPath(LocalStorage):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self._path = Path(path)  # LocalStorage resolves symlinks on this machine

    return SharedPath(source)


def _source_path(source: str | Path) -> tuple[str, bool]:
    """``source`` as an absolute path, and whether it is a repository on this machine."""
    text = str(source)
    if "://" in text or text.startswith("git@"):
        raise ValueError(f"--source {text!r}: give the repository's path on the workers, not a URL: a run must "
                         f"execute in the shared workspace (its dvc.lock and data), not in a fresh clone")
    path = Path(os.path.abspath(os.path.expanduser(text)))
    here = (path / ENTRYPOINT_FILE).is_file()
    if not here and not Path(text).expanduser().is_absolute():
        raise ValueError(f"--source {text!r} is not a repository here; on another machine give its absolute path")
    return str(path), here


def deploy(source: str | Path, pool: str = POOL, env: dict[str, str] | None = None,
           names: list[str] | None = None) -> list[str]:
    """Deploy the flows (all four, or ``names``) from ``source`` to ``pool``; returns the deployment ids."""
    from prefect.deployments.runner import deploy as prefect_deploy

    from flows.identity import FLOWS
    from flows.serve import DESCRIPTIONS

    chosen = names or list(FLOWS)
    unknown = sorted(set(chosen) - set(FLOWS))
    if unknown:
        raise ValueError(f"unknown flow(s) {unknown}; the flows are {sorted(FLOWS)}")
    path, here = _source_path(source)
    if not here:
        log.warning("%s is not a repository on this machine: the parameter forms come from this checkout's code "
                    "(%s); the runs execute the code at %s on the workers", path,
                    Path(__file__).resolve().parents[1], path)
    ensure_pool(pool)
    deployments = []
    for name in chosen:
        flow = FLOWS[name]
        entrypoint = f"{ENTRYPOINT_FILE}:{flow.fn.__name__}"
        if here:  # the flow as the workers' code defines it (its parameters: the UI's Run form)
            flow = flow.from_source(source=_storage(path), entrypoint=entrypoint)
        deployment = flow.to_deployment(name=name, work_pool_name=pool, description=DESCRIPTIONS[name],
                                        tags=["talkhead"], job_variables={"env": dict(env or {})})
        if not here:
            deployment.storage = _storage(path)
            deployment.entrypoint = entrypoint
        deployments.append(deployment)
    ids = prefect_deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False,
                         ignore_warnings=True)  # the process pool is meant: no "use .serve" hint
    for deployment in deployments:
        log.info("deployed %s/%s from %s to pool %s", deployment.flow_name, deployment.name, path, pool)
    return [str(i) for i in ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=".", help="the repository as the workers see it (default: here)")
    parser.add_argument("--pool", default=POOL)
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment of the runs, e.g. TALKHEAD_MLFLOW_URI=http://mlflow-host:5000")
    parser.add_argument("--flows", nargs="+", help="deploy only these (default: all four)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bad = [item for item in args.env if "=" not in item or item.startswith("=")]
    if bad:
        parser.error(f"--env takes KEY=VALUE, got {bad}")
    try:
        ids = deploy(args.source, args.pool, dict(item.split("=", 1) for item in args.env), args.flows)
    except ValueError as error:
        parser.error(str(error))
    print(f"{len(ids)} deployment(s) in work pool {args.pool!r}; start a worker on each machine: "
          f"prefect worker start --pool {args.pool}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

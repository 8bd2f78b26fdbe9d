"""Serve the flows on this machine, so that the Prefect UI can launch them::

    make serve                      # = python -m flows.serve (needs a Prefect server: `make ui` starts one)

Each of ``train-identity``, ``preprocess-identity``, ``evaluate-identity``
and ``reproduce`` becomes a deployment whose "Run" form shows its typed
parameters (flows.identity); a run started from the UI or the API executes
in a child process of this one, in this repository. For several machines
(a work pool and one worker per GPU machine) see flows.deploy and
docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import argparse
import logging

import flows  # noqa: F401  (environment before Prefect is imported)

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "train-identity": "Train one method on one identity (the DAG's own run, or an experiment with overrides).",
    "preprocess-identity": "Crop, landmarks, parsing, audio features, tracking and split of one identity.",
    "evaluate-identity": "Evaluate one method on one identity (trains first where needed).",
    "reproduce": "The whole DAG, or the chosen methods' and identities' stages.",
}


def deployments(names: list[str] | None = None) -> list:
    """The flows as deployments (named as the flows), ready to serve."""
    from flows.identity import FLOWS

    chosen = names or list(FLOWS)
    unknown = sorted(set(chosen) - set(FLOWS))
    if unknown:
        raise ValueError(f"unknown flow(s) {unknown}; the flows are {sorted(FLOWS)}")
    return [FLOWS[name].to_deployment(name=name, description=DESCRIPTIONS[name], tags=["talkhead"])
            for name in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", nargs="+", help="serve only these (default: all four)")
    parser.add_argument("--limit", type=int, default=None,
                        help="flow runs at once in this process (default: no limit; device slots still apply)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from prefect import serve

    serve(*deployments(args.flows), limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

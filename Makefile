# Two commands from a fresh clone: `make test` and `make demo`.
# Only pip is needed: torch's CPU wheel first (so nothing pulls a CUDA build),
# then the project against the committed constraints file.

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.talkhead-installed
SYSTEM_PYTHON ?= python3
TORCH_VERSION := 2.13.0

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.torch_extensions

.PHONY: setup test demo tables-full clean-demo ui serve

setup: $(STAMP)

# The environment takes about 3.1 GB and pip unpacks torch's wheel in $TMPDIR
# first; a full disk otherwise surfaces as pip's bare "[Errno 28]".
SETUP_FREE_KB := 4500000

$(STAMP): pyproject.toml constraints.txt
	@for dir in $(CURDIR) $${TMPDIR:-/tmp}; do \
	  free_kb=$$(df -Pk "$$dir" | awk 'NR==2 {print $$4}'); \
	  if [ "$$free_kb" -lt $(SETUP_FREE_KB) ]; then \
	    echo "setup needs about 4.5 GB free in $$dir to build $(VENV); df shows $$((free_kb / 1024)) MB." >&2; \
	    echo "Free some space there (or point TMPDIR at a disk with room) and run make again." >&2; \
	    exit 1; \
	  fi; \
	done
	test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $(STAMP)

test: setup
	$(PYTHON) -m pytest

# params.yaml is checked before any work (stages/check.py: one line per mistake); once it passes, the same
# command writes dvc.runs.yaml from its runs x seeds.
demo: setup
	$(PYTHON) -m stages.check --write-runs
	test -d .dvc || dvc init --quiet
	dvc config core.analytics false
	dvc repro
	@echo
	@echo "Reports: $(CURDIR)/reports (index.html: tables, claims, videos; dataset.md, preprocess_accuracy.md, pretrain.md)"
	@echo "MLflow:  .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1"

# The ablation tables and S3D-NeRF too: tables_scope: full in params.yaml, then the DAG (docs/BUDGET.md: about 120
# minutes more than the demo on 2 cores). `python -m stages._runs --scope demo` goes back to the demo's runs.
tables-full: setup
	$(PYTHON) -m stages._runs --scope full
	$(MAKE) demo

# The Prefect server (http://127.0.0.1:4200) and the MLflow UI (http://127.0.0.1:5000) on this machine, until Ctrl-C.
ui: setup
	$(PYTHON) -m flows.ui

# The four flows as deployments the Prefect UI can launch (train-identity, preprocess-identity, evaluate-identity,
# reproduce); runs execute here. Needs a server: `make ui` in another terminal (PREFECT_API_URL defaults to it).
serve: setup
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(PYTHON) -m flows.serve

clean-demo:
	rm -rf data/raw mlflow.db mlruns

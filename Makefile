# Two entry points for a fresh machine (Python >= 3.10 and pip):
#   make run   - set up .venv and run the whole pipeline (dvc repro) on the default digits config, on CPU
#   make test  - set up .venv and run the test suite
# Comparing runs: make exps (every experiment, headline columns), make ui (MLflow, prints the comparison URL)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MAMBAPRUNE_NO_PROGRESS ?= 0
# torch and torchvision first, pinned to the builds these machines serve from local disk
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup run exps test lint ui clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

run: setup
	dvc repro
	@$(PY) -m mambaprune.headline

# One row per experiment: the params and headline metrics (metrics/summary.json) that differ between the rows, plus
# test_acc, params and speedup always. The dependencies' hashes (columns named by path) are dropped.
exps: setup
	dvc exp show --no-pager --only-changed --drop '^(data$$|models/|src/|stages/|metrics/)' --keep '^(test_acc|params|speedup)$$'

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src stages tests benchmarks

# The URL opens the runs table with the comparison columns and charts (README "Comparing runs"); a bare
# http://127.0.0.1:5000 opens MLflow 3 on its GenAI pages.
ui: setup
	@$(PY) -c "from mambaprune.tracking import ui_url; print('MLflow UI, runs compared:', ui_url())"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .cache/resume

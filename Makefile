# Two entry points for a fresh machine (Python >= 3.10 and pip):
#   make run   - set up .venv and run the whole pipeline (dvc repro) on the default digits config, on CPU
#   make test  - set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MAMBAPRUNE_NO_PROGRESS ?= 0
# torch and torchvision first, pinned to the builds these machines serve from local disk
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup run test lint ui clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

run: setup
	dvc repro
	dvc metrics show

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src stages tests benchmarks

ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .cache/resume

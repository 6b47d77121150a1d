# The two commands of the README: `make run` (serve on the embedded default) and `make test`.
# Both create the virtualenv, install, and fetch the pinned models on first use.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# insightface's wheel is installed without its dependencies (which would bring the GUI
# OpenCV beside the headless one) only for its sample photos, which the tests use.
INSIGHTFACE_SAMPLES := insightface==2.1

.PHONY: run test lint models bench clean

run: $(VENV)/.installed models
	$(BIN)/homeward serve --host $(HOST) --port $(PORT)

# The test command also fetches InsightFace's buffalo_s pack, for its tests on real weights:
# research use, which its non-commercial licence allows. `make run` never fetches it.
test: $(VENV)/.installed-dev models
	$(BIN)/python scripts/fetch_models.py --insightface buffalo_s --accept-non-commercial
	$(BIN)/python -m pytest
	$(BIN)/ruff check service tests scripts
	$(BIN)/mypy

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check service tests scripts
	$(BIN)/ruff format --check service tests scripts
	$(BIN)/mypy

models: $(VENV)/.installed
	$(BIN)/python scripts/fetch_models.py

bench: $(VENV)/.installed-dev models
	$(BIN)/python scripts/bench_match.py
	$(BIN)/python scripts/bench_speed.py
	$(BIN)/python scripts/bench.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps '$(INSIGHTFACE_SAMPLES)'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

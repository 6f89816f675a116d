# Two commands matter (see README): `make demo` (set up + run the main job locally) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: setup test demo down bench clean

# Re-install only when a requirements file changes.
$(VENV)/.installed: requirements.txt aks_jobs/requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt -c constraints.txt
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/preprocess_bench.py

clean:
	rm -rf .local out

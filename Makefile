# Two commands matter (see README): `make demo` (set up + run the main job locally) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: setup chromium tesseract test demo down bench bench-preprocess bench-train bench-loss bench-serve bench-serve-load bench-cpu-serve clean

# Re-install only when a requirements file changes.
$(VENV)/.installed: requirements.txt aks_jobs/requirements.txt ui/requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements-dev.txt -c constraints.txt
	$(PIP_INSTALL) --no-deps --editable .
	touch $@

# Infra lint tools (checkov, shellcheck, hadolint) pin their own versions: a separate venv.
.venv-infra/.installed: requirements-infra.txt
	$(PYTHON) -m venv .venv-infra
	.venv-infra/bin/pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

# Azurite (local Blob/Queue/Table) from npm, into node_modules/, never global.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The browser tests drive Debian's chromium (browsers cannot be downloaded: never `playwright install`).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

setup: $(VENV)/.installed .venv-infra/.installed node_modules/.installed

# OCR for scanned PDFs (aks_jobs/pdf_text/ocr.py) calls Debian's Tesseract, as the job image does.
tesseract:
	@command -v tesseract >/dev/null || (apt-get update -qq && apt-get install -y -qq tesseract-ocr tesseract-ocr-eng)

test: setup chromium tesseract
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

demo: setup
	$(BIN)/python -m local_stack up

down:
	$(BIN)/python -m local_stack down

bench: bench-preprocess bench-train bench-loss bench-serve bench-serve-load bench-cpu-serve

bench-preprocess: setup
	$(BIN)/python -m bench.preprocess_bench

bench-train: setup
	$(BIN)/python -m bench.train_bench

bench-loss: setup
	$(BIN)/python -m bench.loss_bench

bench-serve: setup
	$(BIN)/python -m bench.serve_bench

bench-serve-load: setup
	$(BIN)/python -m bench.serve_load

# CPU serving: int8 weights beside float32 through azmlinfsrv, and the candidates inside the decode step
bench-cpu-serve: setup
	$(BIN)/python -m bench.cpu_serve_bench
	$(BIN)/python -m bench.cpu_weights_bench

clean:
	rm -rf .local out

# Two entry points (see README): `make serve` and `make test`. Everything else is a helper target.
PYTHON ?= python3
DEV_VENV := .venv
SERVE_VENV := .venv-serve
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint typecheck pytest install-dev install-serve chromium clean gpu-check

# Serving install (the server extra): no torch, shipped default model, ONNX Runtime CPU.
serve: install-serve
	$(SERVE_VENV)/bin/cuematte serve --host $(HOST) --port $(PORT)

install-serve: $(SERVE_VENV)/.installed
$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[server]'
	touch $@

# Everything (serving + train + dev), Chromium for the browser tests, then lint, types and tests.
test: install-dev chromium lint typecheck pytest

install-dev: $(DEV_VENV)/.installed
$(DEV_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/pip install -q --upgrade pip
	$(DEV_VENV)/bin/pip install -q -e '.[dev]'
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

lint:
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

typecheck:
	$(DEV_VENV)/bin/mypy cuematte

pytest:
	$(DEV_VENV)/bin/pytest -q -ra

# On a machine with an NVIDIA GPU (and the [gpu] / [tensorrt] extras): plans, parity against CPU, 720p/1080p bench.
gpu-check:
	PYTHON=$(DEV_VENV)/bin/python scripts/gpu-check.sh

clean:
	rm -rf $(DEV_VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache

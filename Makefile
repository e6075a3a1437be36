# Two entry points (see README): `make serve` and `make test`. Everything else is a helper target.
PYTHON ?= python3
DEV_VENV := .venv
SERVE_VENV := .venv-serve
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint typecheck pytest install-dev install-serve chromium clean gpu-check soak fuzz

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

# The slowest tests in every log: the CI run has to stay under 20 minutes on 2 cores.
pytest:
	$(DEV_VENV)/bin/pytest -q -ra --durations=15

# On a machine with an NVIDIA GPU (and the [gpu] / [tensorrt] extras): plans, parity against CPU, 720p/1080p bench.
gpu-check:
	PYTHON=$(DEV_VENV)/bin/python scripts/gpu-check.sh

clean:
	rm -rf $(DEV_VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache

# Leak soak (issue 27, docs/soak.md): 100 connect/close cycles against a real `cuematte serve`, fds/threads/RSS
# sampled; exits 1 on a missed target. SOAK_ARGS="--long 30" adds the 30-minute session. Uses .venv as it is
# (an existing venv is not reinstalled: a soak must not change what it measures).
soak:
	@test -x $(DEV_VENV)/bin/python || $(MAKE) install-dev
	$(DEV_VENV)/bin/python scripts/soak.py $(SOAK_ARGS)

# Every input surface (offers, control messages, matte's files, model folders) fuzzed with 1000 Hypothesis
# examples each, fixed seeds; `make test` runs the same file with a few dozen.
fuzz:
	CUEMATTE_FUZZ_EXAMPLES=1000 $(DEV_VENV)/bin/pytest -q tests/test_fuzz.py

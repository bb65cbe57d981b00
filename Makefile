# The Farm: `make run` serves everything; `make test` runs the whole suite.
# The virtual environment must be readable by the sandbox uid, so prefer the system Python 3.11.
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11 python3; do command -v $$p >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make test runs test modules on this many pytest-xdist workers (they mostly wait on sandboxes and servers).
TEST_WORKERS ?= 2

.PHONY: run test lint format openapi bench bench-web sandbox-deps browser-deps torch-cpu image manifests clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# bubblewrap runs agents; libseccomp2 builds their syscall filter (through pyseccomp).
sandbox-deps:
	@{ command -v bwrap >/dev/null 2>&1 && /sbin/ldconfig -p | grep -q 'libseccomp\.so\.2'; } || { \
	  echo "Installing bubblewrap and libseccomp2 (the agent sandbox)..."; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq bubblewrap libseccomp2; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq bubblewrap libseccomp2; \
	  else echo "warning: install bubblewrap and libseccomp2 (apt-get install bubblewrap libseccomp2) to run agents"; fi; }

# Debian's Chromium: the web app's browser tests drive it through Playwright (never a download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing chromium (the web app's browser tests)..."; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium; \
	  else echo "warning: install chromium (apt-get install chromium) to run the browser tests"; fi; }

run: $(STAMP) sandbox-deps
	$(BIN)/farm up

test: $(STAMP) sandbox-deps browser-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/test_contract.py
	@# schemathesis gives every operation of the contract run one node id, which xdist would run once.
	$(BIN)/pytest tests/test_contract.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples deploy
	$(BIN)/ruff format --check src tests bench examples deploy
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench examples deploy
	$(BIN)/ruff format src tests bench examples deploy

openapi: $(STAMP)
	$(BIN)/farm openapi --output docs/openapi.json

bench: $(STAMP) sandbox-deps
	$(BIN)/python bench/backtest.py

bench-web: $(STAMP)
	$(BIN)/python bench/web.py

# Opt-in PyTorch for agents, never PyPI's multi-GB CUDA build. On Linux the pin names the CPU
# build (`+cpu`; PyPI has no such version), taken from PyTorch's CPU index or, where that index
# is out of reach, from a wheel pip finds locally (its find-links or another index); elsewhere
# PyPI's wheel is CPU-only already. TORCH_VERSION=... picks another release.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := torch==$(TORCH_VERSION)$(if $(filter Linux,$(shell uname -s)),+cpu)
torch-cpu: $(STAMP)
	$(BIN)/pip install --retries 1 --timeout 15 --extra-index-url $(TORCH_INDEX) '$(TORCH_PIN)'
	$(BIN)/python -c 'import torch; print("torch", torch.__version__, "CUDA:", torch.version.cuda)'

# The container image (deploy/Dockerfile; needs a Docker engine with BuildKit): builds it, runs
# `farm --help` in it and prints its size. Not part of `make test` (minutes, and a daemon).
IMAGE ?= the-farm:dev
image:
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t $(IMAGE) .
	docker run --rm $(IMAGE) farm --help >/dev/null
	@docker image inspect $(IMAGE) --format 'built $(IMAGE): {{.Size}} bytes'

# The production manifests, rendered by the kustomize inside kubectl (docs/deploying.md).
manifests: $(STAMP)
	@$(BIN)/kubectl kustomize deploy/k8s/overlays/production

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

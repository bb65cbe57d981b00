# The Farm: `make run` serves everything; `make test` runs the whole suite.
# The virtual environment must be readable by the sandbox uid, so prefer the system Python 3.11.
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11 python3; do command -v $$p >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format openapi bench sandbox-deps torch-cpu image manifests clean

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

run: $(STAMP) sandbox-deps
	$(BIN)/farm up

test: $(STAMP) sandbox-deps
	$(BIN)/pytest

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

# Opt-in PyTorch for agents: the CPU wheel (+cpu, preferred by pip), never PyPI's CUDA build.
torch-cpu: $(STAMP)
	$(BIN)/pip install -e '.[torch]' --extra-index-url https://download.pytorch.org/whl/cpu

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

# The Farm: `make run` serves everything; `make test` runs the whole suite.
# The virtual environment must be readable by the sandbox uid, so prefer the system Python 3.11.
PYTHON ?= $(shell for p in /usr/bin/python3.11 python3.11 python3; do command -v $$p >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format openapi bench bench-web sandbox-deps browser-deps torch-cpu clean

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
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

openapi: $(STAMP)
	$(BIN)/farm openapi --output docs/openapi.json

bench: $(STAMP) sandbox-deps
	$(BIN)/python bench/backtest.py

bench-web: $(STAMP)
	$(BIN)/python bench/web.py

# Opt-in PyTorch for agents: the CPU wheel (+cpu, preferred by pip), never PyPI's CUDA build.
torch-cpu: $(STAMP)
	$(BIN)/pip install -e '.[torch]' --extra-index-url https://download.pytorch.org/whl/cpu

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

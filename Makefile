# Every README command is a target here. `make setup` is idempotent and safe to re-run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench-moe clean

$(STAMP): pyproject.toml
	@# bubblewrap: the evaluation sandbox; a C compiler: the few-row CPU decode kernel (smallcode.runtime.cpu_decode)
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null || echo "warning: bubblewrap missing and cannot be installed (not root)"; }
	@command -v cc >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq gcc libc6-dev) >/dev/null || echo "warning: no C compiler and cannot install one (not root): CPU decoding will use torch's slower products"; }
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	@# Install the CPU torch build that lies on disk before anything can ask for a CUDA one.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

# The main job: the most complete real thing smallcode does today (see README).
run: setup
	$(BIN)/python -m smallcode.cli.main recipe configs/nano/recipe.yaml

# Two workers (pytest-xdist), each file on one of them so that its module-scoped servers and models
# are built once: the suite is sized for two cores.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench-moe: setup
	$(BIN)/python benchmarks/moe_vs_hf.py

clean:
	rm -rf $(VENV) runs

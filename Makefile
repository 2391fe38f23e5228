# `make demo` and `make test` each set up .venv when missing, then run.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU_WHEEL ?= torch==2.13.0
STAMP := $(VENV)/.installed
# exact versions of everything but torch (constraints.txt says why); empty: pyproject's ranges
CONSTRAINTS ?= constraints.txt

.PHONY: setup demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# The CPU wheel of torch when no GPU is visible; otherwise pip resolves torch>=2.4 normally.
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing torch from the index"; $(BIN)/pip install -q "torch>=2.4"; \
	else \
	  echo "no GPU: installing the CPU torch wheel"; \
	  $(BIN)/pip install -q "$(TORCH_CPU_WHEEL)"; \
	fi
	$(BIN)/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/clicker init-model
	$(BIN)/clicker compare --preset quick --out runs/demo

# The suite runs in TEST_WORKERS processes (pytest-xdist; slow tests are scheduled first).
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/rollout_throughput.py
	$(BIN)/python benchmarks/multiturn_rollout.py

clean:
	rm -rf $(VENV) runs .pytest_cache

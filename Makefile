# RPAccel generator. `make demo` and `make test` are all a fresh clone needs: each creates
# the virtual environment on first use (and only when pyproject.toml changes after that).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: all demo test test-all bench lint clean distclean venv

all: test

# Re-installs only when pyproject.toml changes; the project itself is installed editable.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 found: install Python 3.11 (or run make PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

venv: $(STAMP)

# The main job end to end on the embedded default configuration.
demo: $(STAMP)
	$(BIN)/rpaccel demo

# The fast suite (under 20 minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal --durations=25 -m "not slow"

# Everything, including long soaks and sweeps.
test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal --durations=25

# Performance and quality reports (RTL cycles, utilization, top-k, NDCG) into reports/.
bench: $(STAMP)
	@mkdir -p reports
	$(BIN)/rpaccel core-bench --preset default --sim verilator --json reports/core-bench-default-verilator.json
	$(BIN)/rpaccel eval --json reports/quality.json
	$(BIN)/rpaccel sim --preset default --sim verilator --queries all --json reports/cosim-default-all.json
	$(BIN)/rpaccel sim-sweep --preset default --queries 4 --json reports/sim-sweep-default.json --markdown reports/sim-sweep-default.md --plot reports/sim-sweep-default.png

lint: $(STAMP)
	for unit in pe systolic_array vector_unit interaction mlp_engine compute_core topk; do \
	    $(BIN)/rpaccel lint --preset default --unit $$unit | tail -1 || exit 1; done

clean:
	rm -rf build .pytest_cache

distclean: clean
	rm -rf $(VENV) data

# overlayd — everything a fresh machine needs is built from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench bench-quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	@# compat mode: a plain .pth path entry, not an import hook that costs every start ~13 ms
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	touch $(STAMP)

demo: venv
	@$(BIN)/python examples/demo/run_demo.py

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

# Benchmarks run on compiled bytecode, as an image would ship it (this machine sets
# PYTHONDONTWRITEBYTECODE, which would otherwise make every start recompile every module).
bench: venv
	$(BIN)/python -m compileall -q overlayd overlayctl protocol bench > /dev/null
	$(BIN)/python -m bench

bench-quick: venv
	$(BIN)/python -m compileall -q overlayd overlayctl protocol bench > /dev/null
	BENCH_QUICK=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info

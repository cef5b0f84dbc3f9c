# overlayd — everything a fresh machine needs is built from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DIST   := dist/overlayd-$(VERSION)-x86_64.tar.gz
# Debian packages `make dist` and `make test-dist` need, installed only when missing.
DIST_TOOLS      := patchelf musl-tools binutils gcc libc6-dev make dpkg-dev libexpat1-dev \
		   zlib1g-dev
TEST_DIST_TOOLS := busybox-static mmdebstrap
apt_ensure = missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q >/dev/null && \
	apt-get install -y -q $$missing >/dev/null; fi

.PHONY: venv s6-tools demo test lint bench bench-quick soak clean dist test-dist

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

# Debian's s6 and execline: the real s6-svc, s6-svstat, fdmove… that tests run against overlayd.
# Skipped when already there; without root (or apt) the tests that need them skip.
s6-tools:
	@command -v s6-svc >/dev/null 2>&1 && [ -x /usr/lib/execline/bin/fdmove ] || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q s6 execline >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q s6 execline >/dev/null 2>&1; }; \
	  } || echo "s6/execline not installed: the tests that need them will skip"; }

test: venv s6-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

# Benchmarks run on compiled bytecode, as an image would ship it (this machine sets
# PYTHONDONTWRITEBYTECODE, which would otherwise make every start recompile every module).
bench: venv s6-tools
	$(BIN)/python -m compileall -q overlayd overlayctl protocol bench > /dev/null
	$(BIN)/python -m bench

bench-quick: venv s6-tools
	$(BIN)/python -m compileall -q overlayd overlayctl protocol bench > /dev/null
	BENCH_QUICK=1 $(BIN)/python -m bench

# PID 1's memory under abusive clients, minutes long (README "PID 1 under abuse"): RSS over
# time while 20 clients poll status for SOAK_SECONDS, then before/after/peak per abuse.
SOAK_SECONDS ?= 600
soak: venv
	$(BIN)/python -m bench.soak $(SOAK_SECONDS)

# One archive for any image (DESIGN §9): extract at / and ENTRYPOINT ["/init"]. Inputs come
# from Debian's and PyPI's registries only, cached in build/dist-cache (see tarball/build.py).
dist: venv
	@$(call apt_ensure,$(DIST_TOOLS))
	$(BIN)/python -m tarball

# The archive booted as PID 1 in a busybox root and two Debian minbase roots (tests/test_dist.py),
# and README's pip recipe run as written in one of those roots (test_overlayctl_pip_recipe.py).
test-dist: dist
	@$(call apt_ensure,$(TEST_DIST_TOOLS))
	OVERLAYD_DIST=$(CURDIR)/$(DIST) $(BIN)/python -m pytest -q tests/test_dist.py \
		tests/test_overlayctl_pip_recipe.py

clean:
	rm -rf $(VENV) build dist *.egg-info

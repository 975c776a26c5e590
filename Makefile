# Two set-up commands (README quick start): `make demo` and `make test`.
# Each creates .venv and installs the project on first use; later runs skip the install
# unless pyproject.toml changed. --no-compile: pip skips byte-compiling the ~6 GB it installs
# (torch's CUDA build); Python compiles only the modules it imports, on first import.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/demo
PIP_FLAGS := --quiet --disable-pip-version-check --progress-bar off --no-compile

export PREFECT_HOME ?= $(CURDIR)/.state/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# Python keeps the compiled modules it imports (__pycache__, in .venv and the checkout): with
# PYTHONDONTWRITEBYTECODE set, as some shells and containers do, every process compiles torch,
# timm and torchvision again (~9 s before its first line runs, against ~4 s), and the tests
# start dozens of processes (CLI commands, Dask workers, torchrun ranks, Prefect servers).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test bench clean serve

install: $(STAMP)

$(STAMP): pyproject.toml
	@mkdir -p $(PREFECT_HOME)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing wsss and its dependencies into $(VENV) (first run: a few minutes) ..."
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import torch, torchvision, timm, cv2, scipy, pydensecrf.densecrf, segment_anything, pycocotools, prefect, wsss" \
		|| { echo "install check failed: see the pip output above"; exit 1; }
	@touch $@

demo: $(STAMP)
	$(BIN)/wsss demo --out $(RUN_DIR)

# Two pytest workers (pytest-xdist), a test module each at a time, one torch thread each
# (tests/conftest.py): the suite's processes wait on servers and subprocesses half the time.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# A local Prefect server on 127.0.0.1:$(PREFECT_PORT) (UI there, SQLite under PREFECT_HOME) serving
# the label-inbox flow on flow.inbox's schedule; Ctrl-C stops both. Label runs/inbox/ with the
# classifier of `make demo`.
PREFECT_PORT ?= 4200
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/wsss flow serve --start-server --port $(PREFECT_PORT) --config configs/demo.yaml $(SERVE_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_getam.py

clean:
	rm -rf $(VENV) .state runs

# autoresearch-bench: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench images gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV) || { echo 'error: cannot create a venv; on Debian/Ubuntu: apt-get install python3-venv' >&2; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/python -m bench.prepare --profile cpu-tiny --source corpus
	$(BIN)/arbench run harness/configs/demo.toml --out demo
	$(BIN)/arbench leaderboard demo

test: install
	$(BIN)/pytest -q -ra

bench: install
	$(BIN)/python -m harness.benchmark

# the images this host can build (cpu; cuda where nvidia-smi answers), cached: see images/build.py
images: install
	$(BIN)/python images/build.py

# on a machine with an NVIDIA GPU (~15 min): the CUDA image sees it, the h100 baseline's figures, σ, two sessions
gpu-check: images
	$(BIN)/python -m harness.gpu_check

clean:
	rm -rf $(VENV) demo build

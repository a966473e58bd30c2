# autoresearch-bench: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench images clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/arbench run harness/configs/demo.toml --out demo
	$(BIN)/arbench leaderboard demo

test: install
	$(BIN)/pytest -q -ra

bench: install
	$(BIN)/python -m harness.benchmark

clean:
	rm -rf $(VENV) demo build

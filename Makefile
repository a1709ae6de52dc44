# juno-dci: `make demo` and `make test` do all set-up on a fresh machine (both idempotent).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help install system venv chroot grid-up grid-down grid-status demo test test-unit lint bench clean

help:
	@echo "make demo       install, start the local grid, run the JUNO flow end to end"
	@echo "make test       install, start what tests need, run the test suite"
	@echo "make grid-up | grid-down | grid-status"
	@echo "make lint       ruff"
	@echo "make bench      every benchmark in bench/"

install: system venv chroot

# The HTCondor mini-pool's chroot: built once per machine, cached under /var/cache/juno-dci.
chroot: venv
	@$(VENV)/bin/juno-grid build-chroot

system:
	@deploy/local/bin/install-system

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

grid-up: install
	$(VENV)/bin/juno-grid up

grid-down:
	$(VENV)/bin/juno-grid down

grid-status:
	$(VENV)/bin/juno-grid status

demo: install
	$(VENV)/bin/juno-grid up
	@$(VENV)/bin/juno-grid exec -- $(PY) -m juno_grid.demo

# The session fixture (tests/conftest.py) starts the grid if it is not running and stops what it started.
test: install
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi; exit $$rc

test-unit: venv
	$(PY) -m pytest -m "not grid" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: grid-down
	rm -rf .grid

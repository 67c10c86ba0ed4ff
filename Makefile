# Two entry points, both from a fresh checkout: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

$(VENV)/.installed-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

.PHONY: demo test lint bench
demo: $(VENV)/.installed-demo
	$(VENV)/bin/pdebug-jupyter demo

lint: $(VENV)/.installed-test
	$(PY) -m ruff check pdebug_jupyter tests benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_core.py

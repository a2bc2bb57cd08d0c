# The two commands of the README: `make demo` (set up, then the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/advlab demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check advlab tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

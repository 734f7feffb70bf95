# abs-ray: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test venv lint birds assets clean

# (Re)install when pyproject.toml changes; a half-made venv is rebuilt.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "abs-ray needs Python 3.11, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: local Ray, local storage, bundled demo data.
run: $(STAMP)
	$(PY) jobs/pipeline.py $(ARGS)

## Photo assets for the offline birds benchmark (Debian packages; never committed).
assets: $(STAMP)
	$(PY) -m abs_ray.data.birds --fetch-only

## The test suite (what .ci/run runs).
test: $(STAMP) assets
	$(PY) -m pytest $(PYTEST_ARGS)

## The offline birds benchmark (Waterbirds layout) and its contact sheet, in data/birds.
birds: $(STAMP)
	$(PY) -m abs_ray.data.birds --out data/birds --contact-sheet data/birds/contact_sheet.png

lint: $(STAMP)
	$(VENV)/bin/ruff check abs_ray jobs tests deployments bench
	$(VENV)/bin/ruff format --check abs_ray jobs tests deployments bench

clean:
	rm -rf runs .pytest_cache .ruff_cache

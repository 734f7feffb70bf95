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

## Photo assets for the offline birds benchmark (Debian packages; never committed), and
## Debian's chromium + chromium-driver for the labelling page's browser test (root, once).
assets: $(STAMP)
	$(PY) -m abs_ray.data.birds --fetch-only
	@if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
	      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
	      || echo "assets: apt-get could not install chromium chromium-driver: the browser test will fail" >&2; \
	  else \
	    echo "assets: chromium/chromium-driver missing and not root: the browser test will fail;" \
	      "run: sudo apt-get install -y --no-install-recommends chromium chromium-driver" >&2; \
	  fi; \
	fi

## The test suite (what .ci/run runs). tests/k8s validates the KubeRay manifests against the
## operator's CRDs from ABS_RAY_KUBERAY_CRDS: ../shared/kuberay-crds when present, unless set.
test: export ABS_RAY_KUBERAY_CRDS ?= $(wildcard $(abspath ../shared/kuberay-crds))
test: $(STAMP) assets
	$(PY) -m pytest $(PYTEST_ARGS)

## The offline birds benchmark (Waterbirds layout) and its contact sheet, in data/birds.
birds: $(STAMP)
	$(PY) -m abs_ray.data.birds --out data/birds --contact-sheet data/birds/contact_sheet.png

lint: $(STAMP)
	$(VENV)/bin/ruff check abs_ray jobs tests deployments bench k8s docker
	$(VENV)/bin/ruff format --check abs_ray jobs tests deployments bench k8s docker

clean:
	rm -rf runs .pytest_cache .ruff_cache

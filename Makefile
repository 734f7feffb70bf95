# abs-ray: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test venv lint birds assets clean bench-speed bench-quality bench-detector bench-report cluster cluster-stop

# (Re)install when pyproject.toml or the version (abs_ray/__init__.py) changes; a half-made
# venv is rebuilt.
$(STAMP): pyproject.toml abs_ray/__init__.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "abs-ray needs Python 3.11, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: local Ray, local storage, bundled demo data.
run: $(STAMP)
	$(PY) jobs/pipeline.py $(ARGS)

## A local Ray head for `ray job submit` (README, "On a cluster"): .venv's bin first on its PATH
## (a job's `python` is looked up there), the project's environment defaults, 127.0.0.1 only.
## Ports: ABS_RAY_PORT (6379), ABS_RAY_DASHBOARD_PORT (8265), ABS_RAY_CLIENT_PORT (10001),
## ABS_RAY_AGENT_PORT (52365); state in ABS_RAY_CLUSTER_DIR (runs/cluster). cluster-stop stops
## this head only (never `ray stop`, which stops every Ray cluster on the machine).
cluster: $(STAMP)
	$(PY) -m abs_ray.cluster start

cluster-stop:
	$(PY) -m abs_ray.cluster stop

## Photo assets for the offline birds benchmark (Debian packages; never committed), and
## Debian's chromium + chromium-driver for the labelling page's browser test (root, once).
assets: $(STAMP)
	PYTHON=$(PY) scripts/fetch-birds-assets.sh
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
birds: $(STAMP) assets
	$(PY) -m abs_ray.data.birds --out data/birds --contact-sheet data/birds/contact_sheet.png

## Benchmarks (bench/): small mode by default (minutes on 2 cores), BENCH_FULL=1 for the full
## one; BENCH_DEVICE=cuda runs the compositing and training-step suites on a GPU. Results go
## to bench/results/*.json, then bench/report.py writes bench/results/README.md and the PNGs.
BENCH_FULL ?=
BENCH_DEVICE ?=
bench-speed: $(STAMP)
	$(PY) bench/composite.py $(if $(BENCH_FULL),--full,) $(if $(BENCH_DEVICE),--device $(BENCH_DEVICE),)
	$(PY) bench/pipeline.py $(if $(BENCH_FULL),--full,)
	$(PY) bench/train_step.py --threads 1 $(if $(BENCH_FULL),--steps 10 --setups resnet50:224:32 efficientnet_lite0:224:32,) $(if $(BENCH_DEVICE),--device $(BENCH_DEVICE),)
	$(PY) bench/serve_load.py $(if $(BENCH_FULL),--requests 480,)
	$(PY) bench/report.py

bench-quality: $(STAMP)
	$(PY) bench/quality.py $(if $(BENCH_FULL),--full,)
	$(PY) bench/report.py

## Detector heads (dense vs pooled vs the zero-shot prior) on the birds benchmark at 224 px,
## G 16, shared and held-out-species splits (built in data/ once); resumable, in priority order.
DETECTOR_BIRDS := --size 224 --n-train 500 --n-val 80 --n-test 200 -q
data/birds224-shared/config.json: | $(STAMP) assets
	$(PY) -m abs_ray.data.birds --out data/birds224-shared --bird-split shared $(DETECTOR_BIRDS)
data/birds224-heldout/config.json: | $(STAMP) assets
	$(PY) -m abs_ray.data.birds --out data/birds224-heldout --bird-split held_out $(DETECTOR_BIRDS)
bench-detector: $(STAMP) data/birds224-shared/config.json data/birds224-heldout/config.json
	$(PY) bench/detector.py $(if $(BENCH_DEVICE),--device $(BENCH_DEVICE),)
	$(PY) bench/report.py

bench-report: $(STAMP)
	$(PY) bench/report.py

lint: $(STAMP)
	$(VENV)/bin/ruff check abs_ray jobs tests deployments bench k8s docker
	$(VENV)/bin/ruff format --check abs_ray jobs tests deployments bench k8s docker

clean:
	rm -rf runs .pytest_cache .ruff_cache

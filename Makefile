# Serve and test a PyTorch image classifier on KServe.  `make help` lists the targets.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
MODEL_DIR ?= models/efficientnet-lite0
MODEL_NAME ?= efficientnet-lite0
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
SERVE_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m [VAR=value]\n"} \
	/^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
	/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

$(VENV)/.installed: pyproject.toml isvctl/pyproject.toml
	test -x $(PYTHON) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch/torchvision are pinned in pyproject; pip takes them from the local wheel cache where one exists.
	$(PYTHON) -m pip install --quiet -e '.[dev,ray]'
	$(PYTHON) -m pip install --quiet -e './isvctl[deploy]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install the predictor with its dev and ray extras

$(MODEL_DIR)/model.json: | $(VENV)/.installed
	$(PYTHON) scripts/export_model.py --output $(MODEL_DIR)

.PHONY: model
model: $(MODEL_DIR)/model.json ## Build the default model artifact (EfficientNet-Lite0, ImageNet) if missing

.PHONY: serve
serve: install model ## Serve the default model: REST on HTTP_PORT (8080), gRPC on GRPC_PORT (8081)
	$(PYTHON) -m predictor --model_name $(MODEL_NAME) --model_dir $(MODEL_DIR) \
		--http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT) $(SERVE_ARGS)

.PHONY: lint
lint: install ## Check formatting, lint (ruff) and types (mypy --strict on the [tool.mypy] files in pyproject.toml)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

.PHONY: test
test: install lint ## Lint, then run the whole test suite (real servers on loopback, real artifacts)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

.PHONY: bench
bench: install model ## Benchmark: batched vs max_batch_size=1, engine-only vs plain model(x); writes bench-results/
	$(PYTHON) scripts/bench.py --model_dir $(MODEL_DIR) $(BENCH_ARGS)

.PHONY: soak
soak: install model ## Bounded overload + soak run: status codes, p99, memory growth; writes soak-report.json
	$(PYTHON) scripts/soak.py --model_dir $(MODEL_DIR)

.PHONY: gpu-check
gpu-check: install model ## With an NVIDIA GPU: GPU tests, then engine and end-to-end GPU benchmarks; writes bench-results/gpu/
	PYTHON=$(PYTHON) MODEL_DIR=$(MODEL_DIR) bash scripts/gpu_check.sh

.PHONY: clean
clean: ## Remove everything make created: venvs, models, benchmark and soak results, caches
	rm -rf $(VENV) .tools models bench-results soak-report.json *.egg-info build dist \
		.pytest_cache .hypothesis .ruff_cache .mypy_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

include mk/image.mk
include mk/deploy.mk
include mk/pipeline.mk
include mk/ray.mk

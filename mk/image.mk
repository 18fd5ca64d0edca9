# The predictor's container image: lock, base, build, test, size, push. Included by the top-level Makefile.
# docs/IMAGE.md explains the layers and the figures.

IMAGE ?= ghcr.io/example/image-classifier-predictor:0.1.0
# docker when a Docker daemon answers, else podman (which `make image` installs with apt-get where missing).
ifndef CONTAINER_ENGINE
CONTAINER_ENGINE := $(shell scripts/image/engine.sh detect)
endif
# The Dockerfile's first FROM, made available (pulled, or built from Debian packages) by scripts/image/base.sh.
BASE_IMAGE := $(shell awk '/^FROM /{print $$2; exit}' Dockerfile)
IMAGE_BUILD_ARGS ?=

ifeq ($(CONTAINER_ENGINE),podman)
# The project's podman settings (runc; the host's ulimits), unless the caller brings their own.
export CONTAINERS_CONF ?= $(CURDIR)/scripts/image/containers.conf
# --format docker keeps HEALTHCHECK, which the OCI format has no field for. Host networking reaches the same
# indexes as the host, with the host's pip configuration (scripts/image/pip_config.py; $$pipdir lives for one
# build).
ENGINE_BUILD_FLAGS = --format docker --layers --network host \
	$$($(PYTHON_BOOTSTRAP) scripts/image/pip_config.py "$$pipdir" $(if $(wildcard $(PYTHON)),$(PYTHON),$(PYTHON_BOOTSTRAP)) -m pip)
endif

# What the image tests read from the environment.
export IMAGE CONTAINER_ENGINE

##@ Container image

.PHONY: lock
lock: install ## Resolve pyproject.toml's dependencies into requirements.txt (hash-pinned; what the image installs)
	$(VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_36 --output-file requirements.txt

.PHONY: image-base
image-base: ## Make the Dockerfile's base image available: pulled, or else built here from Debian packages
	scripts/image/engine.sh ensure $(CONTAINER_ENGINE)
	scripts/image/base.sh $(CONTAINER_ENGINE) $(BASE_IMAGE)

.PHONY: image
image: image-base ## Build the predictor image IMAGE with docker or podman (CONTAINER_ENGINE)
	pipdir=$$(mktemp -d) && trap 'rm -rf "$$pipdir"' EXIT && \
		$(CONTAINER_ENGINE) build $(ENGINE_BUILD_FLAGS) $(IMAGE_BUILD_ARGS) --tag $(IMAGE) .

.PHONY: image-test
image-test: install image ## Build IMAGE, then run it as Kubernetes would and classify over v1, v2 REST and v2 gRPC
	$(PYTHON) -m pytest tests/image $(PYTEST_ARGS)

.PHONY: image-size
image-size: install image ## Measure IMAGE: per layer and per package, uncompressed and gzip-compressed
	$(PYTHON) scripts/image/measure.py --engine $(CONTAINER_ENGINE) --image $(IMAGE)

.PHONY: push
push: ## Push IMAGE to its registry
	$(CONTAINER_ENGINE) push $(IMAGE)

# The suite includes the image tests, so `make test` builds the image first (cached layers keep reruns short).
test: image

# The predictor's container image: lock, base, build, test, size, push. Included by the top-level Makefile.
# docs/IMAGE.md explains the layers and the figures.

# The release number lives in predictor/__init__.py; the image tag follows it.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' predictor/__init__.py)
IMAGE ?= ghcr.io/example/image-classifier-predictor:$(VERSION)
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

# uv pip compile's settings for both locks: the image's Python and platform (bookworm's glibc), every file hashed.
LOCK_FLAGS = --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36

# What the image tests read from the environment (and RAY_IMAGE, from mk/ray.mk).
export IMAGE CONTAINER_ENGINE

##@ Container image

# The Ray image is the predictor image plus one layer, so its lock is constrained to keep every pin of the main one.
.PHONY: lock
lock: install ## Resolve pyproject.toml into requirements.txt and, with the ray extra, requirements-ray.txt (hash-pinned)
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) --output-file requirements.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra ray --constraint requirements.txt $(LOCK_FLAGS) \
		--output-file requirements-ray.txt

.PHONY: image-base
image-base: ## Make the Dockerfile's base image available: pulled, or else built here from Debian packages
	scripts/image/engine.sh ensure $(CONTAINER_ENGINE)
	scripts/image/base.sh $(CONTAINER_ENGINE) $(BASE_IMAGE)

.PHONY: image
image: image-base ## Build the predictor image IMAGE with docker or podman (CONTAINER_ENGINE)
	pipdir=$$(mktemp -d) && trap 'rm -rf "$$pipdir"' EXIT && \
		$(CONTAINER_ENGINE) build $(ENGINE_BUILD_FLAGS) $(IMAGE_BUILD_ARGS) --tag $(IMAGE) .

.PHONY: image-ray
image-ray: image-base ## Build the Ray image RAY_IMAGE: IMAGE's layers plus one with the ray extra (for the RayService)
	pipdir=$$(mktemp -d) && trap 'rm -rf "$$pipdir"' EXIT && \
		$(CONTAINER_ENGINE) build $(ENGINE_BUILD_FLAGS) $(IMAGE_BUILD_ARGS) --build-arg EXTRAS=ray --tag $(RAY_IMAGE) .

.PHONY: image-test
image-test: install image image-ray ## Build IMAGE and RAY_IMAGE, then run them as Kubernetes and KubeRay would and classify
	$(PYTHON) -m pytest tests/image $(PYTEST_ARGS)

.PHONY: image-size
image-size: install image ## Measure IMAGE: per layer and per package, uncompressed and gzip-compressed
	$(PYTHON) scripts/image/measure.py --engine $(CONTAINER_ENGINE) --image $(IMAGE)

.PHONY: push
push: ## Push IMAGE to its registry
	$(CONTAINER_ENGINE) push $(IMAGE)

.PHONY: push-ray
push-ray: ## Push RAY_IMAGE to its registry
	$(CONTAINER_ENGINE) push $(RAY_IMAGE)

# The suite includes the image tests, so `make test` builds both images first (cached layers keep reruns short).
test: image image-ray

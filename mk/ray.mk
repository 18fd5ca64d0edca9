# Ray Serve: the predictor as Ray Serve replicas, locally and on KubeRay (the `ray` extra).
# Included by the top-level Makefile; cluster targets take DRY_RUN=1 like the others.

RAY_DIR ?= inferenceservices/ray
# The Ray image (`make image-ray`) is named after IMAGE: its repository with -ray, the same tag.
RAY_IMAGE ?= $(call image_variant,$(IMAGE),-ray)
export RAY_IMAGE
RAY_HTTP_PORT ?= 8000
RAY_GRPC_PORT ?= 9000
RAY_READY_TIMEOUT_S ?= $(TIMEOUT_S)
RAY_BUILD ?= build/ray

RAY_CONFIG = $(PYTHON) -m predictor.ray.serve_config
RAY_RENDER = $(KUBECTL) kustomize $(RAY_DIR) \
	| $(RAY_CONFIG) render - --namespace '$(NAMESPACE)' --image '$(RAY_IMAGE)' --storage_uri '$(STORAGE_URI)'

# $(call image_variant,REPOSITORY:TAG,SUFFIX) -> REPOSITORY<SUFFIX>:TAG. The tag is what follows a ':' in the
# last path segment (in registry.example.com:5000/predictor, 5000 is a port and there is no tag).
image_tag = $(word 2,$(subst :, ,$(lastword $(subst /, ,$(1)))))
image_variant = $(patsubst %:$(call image_tag,$(1)),%,$(1))$(2)$(if $(call image_tag,$(1)),:$(call image_tag,$(1)))

##@ Ray Serve

.PHONY: serve-ray
serve-ray: install model ## Serve the default model on a local Ray with the RayService's Serve config: REST on RAY_HTTP_PORT, gRPC on RAY_GRPC_PORT
	@mkdir -p $(RAY_BUILD)
	$(RAY_CONFIG) local $(RAY_DIR)/serve-config.yaml --model_dir $(MODEL_DIR) \
		--http_port $(RAY_HTTP_PORT) --grpc_port $(RAY_GRPC_PORT) > $(RAY_BUILD)/serve-config.local.yaml
	$(PYTHON) -m predictor.ray.run $(RAY_BUILD)/serve-config.local.yaml

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

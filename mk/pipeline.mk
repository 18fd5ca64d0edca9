# The pipeline: a CPU transformer in front of the predictor (locally, as the transformer overlays run it
# in a cluster), and canaries that move an InferenceGraph Splitter's weights.

# `make serve-pipeline`: the transformer answers on HTTP_PORT and GRPC_PORT (8080, 8081), the predictor
# behind it on these.
PREDICTOR_HTTP_PORT ?= 8085
PREDICTOR_GRPC_PORT ?= 8086
TRANSFORMER_ARGS ?=
# `make graph-canary`: the InferenceGraph, its Splitter node, and the step that takes the new traffic.
GRAPH ?=
GRAPH_NODE ?= root
GRAPH_CANARY_STEP ?=

##@ Pipeline

.PHONY: serve-pipeline
serve-pipeline: install model ## Predictor on PREDICTOR_HTTP_PORT/PREDICTOR_GRPC_PORT (8085/8086), transformer in front on HTTP_PORT/GRPC_PORT
	$(PYTHON) -m predictor --model_name $(MODEL_NAME) --model_dir $(MODEL_DIR) \
		--http_port $(PREDICTOR_HTTP_PORT) --grpc_port $(PREDICTOR_GRPC_PORT) $(SERVE_ARGS) & predictor=$$!; \
	trap 'kill -TERM $$predictor 2>/dev/null; wait $$predictor' EXIT; \
	$(PYTHON) -m predictor.transformer --model_name $(MODEL_NAME) --model_dir $(MODEL_DIR) \
		--http_port $(HTTP_PORT) --grpc_port $(GRPC_PORT) --predictor_host 127.0.0.1:$(PREDICTOR_GRPC_PORT) $(TRANSFORMER_ARGS)

.PHONY: graph-canary
graph-canary: deploy-tools ## Move GRAPH's Splitter weights to GRAPH_CANARY_STEP through CANARY_STEPS, gated per InferenceService; rollback on failure
	@$(ISVCTL) graph-canary --namespace '$(NAMESPACE)' --graph '$(GRAPH)' --node '$(GRAPH_NODE)' \
		--canary-step '$(GRAPH_CANARY_STEP)' --steps '$(CANARY_STEPS)' --bake-time-s '$(BAKE_TIME_S)' \
		--gate-interval-s '$(GATE_INTERVAL_S)' --prometheus-url '$(PROMETHEUS_URL)' --timeout-s '$(TIMEOUT_S)' \
		--kubectl '$(KUBECTL)' --dry-run='$(DRY_RUN)'

.PHONY: graph-rollback
graph-rollback: deploy-tools ## All of GRAPH's Splitter traffic back to its other step at once
	@$(ISVCTL) graph-rollback --namespace '$(NAMESPACE)' --graph '$(GRAPH)' --node '$(GRAPH_NODE)' \
		--canary-step '$(GRAPH_CANARY_STEP)' --timeout-s '$(TIMEOUT_S)' --kubectl '$(KUBECTL)' --dry-run='$(DRY_RUN)'

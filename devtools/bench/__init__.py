"""The benchmark behind `make bench` and `scripts/bench.py`: dynamic batching against
max_batch_size=1 over the network, and the engine against a plain `model(x)`.

- `cli`: flags and the run (`python -m devtools.bench`);
- `workload`: the image every request carries;
- `clients`: the load generator's gRPC and HTTP clients, requests built once and sent as bytes;
- `load`: one closed-loop step, in this process or spread over several;
- `sweep`: the servers, every protocol x concurrency step against each, and the summary;
- `engine`: `Engine.predict_tensor` against plain `model(x)` (the one module that imports the predictor);
- `report`: the machine, the tables and the plot.
"""

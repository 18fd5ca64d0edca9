"""Development tooling shared by the tests, the benchmark, the soak run and the example client.

Not part of the served predictor (the image installs `predictor` only):

- `launcher`: start the real `python -m predictor` (or its transformer and combiner roles) on free
  loopback ports and wait until it is ready;
- `photos`: real photos from scikit-image's bundled data, and the image encoders;
- `payloads`: request bodies for v1, v2 JSON, v2 binary and v2 gRPC, and readers for the answers;
- `metrics`: the server's /metrics, parsed with `prometheus_client.parser`;
- `artifacts`: model artifacts for tests (the default model and small, fast ones);
- `triton_grpc`: `tritonclient.grpc` in a child process (it cannot share one with KServe);
- `bench`, `soak`, `client`: the programs behind `scripts/bench.py`, `scripts/soak.py`, `scripts/client.py`.
"""

#!/usr/bin/env bash
# The GPU checks and GPU benchmarks, on a machine with an NVIDIA GPU (`make gpu-check` runs it
# after `make install model`; docs/BENCHMARKS.md, "GPU", says what each stage measures):
#   1. tests/test_gpu.py: nvJPEG against the CPU decoder, bf16/fp16/fp32 against CPU answers, compiled
#      CUDA-graph buckets against eager, a real CUDA out-of-memory, the server on --device cuda;
#   2. engine only: ResNet-50 (random weights: fine for throughput), bf16, compiled, batch 256,
#      Engine.predict_tensor against plain compiled model(x);
#   3. end to end: v2 gRPC, one 500x375 JPEG per request, concurrency 1 and 256, batched against
#      max_batch_size=1, both servers with --workers.
# Each stage runs under its own time limit and logs to $OUTPUT_DIR/<stage>.log; the tail of each log
# (for the benchmarks, their tables) is printed as it ends. Exit status: 0 when every stage passed.
#
# Settings (environment): WORKERS=6 MBS=64 BUCKETS=1,8,32,64 MAX_LATENCY_MS=1 CLIENTS=4 CHANNELS=16
# DURATION_S=8, OUTPUT_DIR=bench-results/gpu, PYTHON=.venv/bin/python, MODEL_DIR=models/efficientnet-lite0.
# WORKERS: about 0.5 ms of CPU per request and one core per process means 10,000 requests/s needs 5 or
# more processes. MAX_LATENCY_MS is small because at concurrency 1 the first image of a batch would
# otherwise wait for companions that never come; under load, batches form while the device is busy.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
MODEL_DIR=${MODEL_DIR:-models/efficientnet-lite0}
OUTPUT_DIR=${OUTPUT_DIR:-bench-results/gpu}
WORKERS=${WORKERS:-6} MBS=${MBS:-64} BUCKETS=${BUCKETS:-1,8,32,64} MAX_LATENCY_MS=${MAX_LATENCY_MS:-1}
CLIENTS=${CLIENTS:-4} CHANNELS=${CHANNELS:-16} DURATION_S=${DURATION_S:-8}
RESNET_DIR=$OUTPUT_DIR/resnet50
export PYTHONUNBUFFERED=1

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to $PYTHON (torch.cuda.is_available() is False): nothing to check" >&2
  exit 2
fi
mkdir -p "$OUTPUT_DIR"
failed=0

stage() {  # name limit_s command...: log to $OUTPUT_DIR/name.log, print its exit status and tail
  local name=$1 limit=$2 started=$SECONDS status
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" >"$OUTPUT_DIR/$name.log" 2>&1
  status=$?
  echo "   exit $status after $((SECONDS - started)) s; log: $OUTPUT_DIR/$name.log"
  tail -n 12 "$OUTPUT_DIR/$name.log"
  [ "$status" -eq 0 ] || failed=1
}

{
  nvidia-smi
  echo "CPU cores: $(nproc)"
  "$PYTHON" -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"
} >"$OUTPUT_DIR/machine.log" 2>&1
tail -n 1 "$OUTPUT_DIR/machine.log"

PREDICTOR_TEST_MODEL_DIR=$(realpath "$MODEL_DIR") stage test_gpu 300 "$PYTHON" -m pytest tests/test_gpu.py -q -p no:cacheprovider
stage export_resnet50 300 "$PYTHON" scripts/export_model.py --arch resnet50 --output "$RESNET_DIR"

stage engine 300 "$PYTHON" scripts/bench.py --model_dir "$RESNET_DIR" --engine_only --engine_batch_size 256 \
  --device cuda --precision bf16 --compile --duration_s 5 --repeats 3 --output_dir "$OUTPUT_DIR/engine"

stage e2e 600 "$PYTHON" scripts/bench.py --model_dir "$RESNET_DIR" --model_name resnet50 \
  --device cuda --precision bf16 --compile --batch_buckets "$BUCKETS" --max_batch_size "$MBS" \
  --max_latency_ms "$MAX_LATENCY_MS" --protocols grpc --concurrency 1,256 --image chelsea-500x375 \
  --duration_s "$DURATION_S" --warmup_s 3 --skip_engine --client_processes "$CLIENTS" --grpc_channels "$CHANNELS" \
  --server_args "--workers $WORKERS --max_queue_size 4096" --output_dir "$OUTPUT_DIR/e2e"

nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv >>"$OUTPUT_DIR/machine.log" 2>&1
echo "results: $OUTPUT_DIR/{engine,e2e}/bench.json and bench.png, logs in $OUTPUT_DIR"
exit "$failed"

#!/usr/bin/env bash
# Issue 3's GPU checks and figures in ONE device call (about 10 minutes; see docs/BENCHMARKS.md):
#   here:   make model && bash scripts/device/fetch_wheels.sh
#   device: run(command="bash scripts/device/check.sh", carry=[".whl", "models/efficientnet-lite0"], timeout_s=600)
# Every stage has its own time limit, so a slow one cannot starve the rest; results land in $OUT
# (at most 8 files come back: the logs and the two bench.json).
# Knobs (env): WORKERS=6 MBS=64 BUCKETS=1,8,32,64 MAX_LATENCY_MS=1 CLIENTS=4 CHANNELS=16 DURATION_S=8
# MAX_LATENCY_MS is small because at concurrency 1 the first image of a batch would otherwise
# wait for companions that never come; under load, batches form while the device is busy.
set -uo pipefail
OUT=${OUT:-device-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PREDICTOR_TEST_MODEL_DIR=$PWD/models/efficientnet-lite0
WORKERS=${WORKERS:-6} MBS=${MBS:-64} BUCKETS=${BUCKETS:-1,8,32,64} MAX_LATENCY_MS=${MAX_LATENCY_MS:-1}
CLIENTS=${CLIENTS:-4} CHANNELS=${CHANNELS:-16} DURATION_S=${DURATION_S:-8}

stage() {  # name limit_s command...: log to $OUT/name.log, show its tail
  local name=$1 limit=$2 started=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - started)) s"
  tail -n 12 "$OUT/$name.log"
}

{ nvidia-smi; nproc; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"; } >"$OUT/machine.log" 2>&1
cat "$OUT/machine.log" | tail -n 3

stage test_gpu 170 python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider
python3 scripts/export_model.py --arch resnet50 --output /tmp/resnet50 >/dev/null 2>&1 || echo "resnet50 export failed"

# Engine alone, batch 256, bf16, compiled: against plain compiled model(x).
stage engine 130 python3 scripts/bench.py --model_dir /tmp/resnet50 --engine_only --engine_batch_size 256 \
  --device cuda --precision bf16 --compile --duration_s 5 --repeats 3 --output_dir /tmp/engine
cp /tmp/engine/bench.json "$OUT/engine.json" 2>/dev/null

# End to end, v2 gRPC, one 500x375 JPEG per request, c=1 and c=256, batched vs max_batch_size=1.
stage e2e 290 python3 scripts/bench.py --model_dir /tmp/resnet50 --model_name resnet50 \
  --device cuda --precision bf16 --compile --batch_buckets "$BUCKETS" --max_batch_size "$MBS" --max_latency_ms "$MAX_LATENCY_MS" \
  --protocols grpc --concurrency 1,256 --image chelsea-500x375 --duration_s "$DURATION_S" --warmup_s 3 \
  --skip_engine --client_processes "$CLIENTS" --grpc_channels "$CHANNELS" \
  --server_args "--workers $WORKERS --max_queue_size 4096" --output_dir /tmp/e2e
cp /tmp/e2e/bench.json "$OUT/e2e.json" 2>/dev/null
tail -n 40 /tmp/e2e/server-*.log >"$OUT/e2e-servers.log" 2>/dev/null
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv >>"$OUT/machine.log" 2>&1

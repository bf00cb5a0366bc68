#!/usr/bin/env bash
# UNTESTED ON A GPU (written and checked on CPU only). A larger zero-shot model in about ten minutes on one
# H100 with bf16: a 256x256 f16 tokenizer (16.3M parameters, 8192 codes; ~4 min) then an LVM-100M-layout
# transformer (117M parameters, 16-image sentences of 256 tokens; ~5 min + tokenising). Non-medical data only.
# The exported model folder (MedLVM format) is copied to $RESULT_DIR (default: $OUT when set, else runs/gpu).
# A session's first GPU call is tools/device_run.sh (benchmarks + a small CT motion model in one 9-minute call);
# this larger zero-shot recipe (4 + 5 minutes of training by its configs, plus data and start-up) needs its own call.
#   tools/train_gpu.sh                      # on the GPU machine, from the repository root
#   medlvm predict motion ... --model runs/gpu/medlvm-100m-zs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}  # the GPU machine has python3 only
RUNS=${RUNS:-runs/gpu}
RESULT_DIR=${RESULT_DIR:-${OUT:-$RUNS}}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -m MedLVMLib train tokenizer --config Resources/configs/tokenizer_256_gpu.yaml --out "$RUNS/tokenizer"
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_100m_gpu.yaml \
    --set data.tokenizer="$RUNS/tokenizer/model" --out "$RUNS/transformer"
mkdir -p "$RESULT_DIR"
cp -r "$RUNS/transformer/model" "$RESULT_DIR/medlvm-100m-zs"
cp "$RUNS/tokenizer/summary.json" "$RESULT_DIR/tokenizer_summary.json"
cp "$RUNS/transformer/summary.json" "$RESULT_DIR/transformer_summary.json"
$PY -m MedLVMLib.training.checks curves "$RUNS/tokenizer" "$RUNS/transformer" --out "$RESULT_DIR"
echo "model: $RESULT_DIR/medlvm-100m-zs"

#!/usr/bin/env bash
# The prepared GPU script: what a session with a GPU machine (one H100/H200) runs first, whatever its issue, in
# ONE call of at most 9 minutes. Every step has a time limit; a failed step (out of memory, say) is logged and the
# next one runs. Nothing is downloaded there: random weights are made on the GPU, training data is generated.
#
# Before the call, here (pynrrd is missing there; SimpleITK and pydicom are never needed):
#   bash tools/fetch_device_wheels.sh                  # pure-Python wheels into .whl/ (ignored by git)
# The call (device tool):
#   run(command="bash tools/device_run.sh", carry=[".whl"], timeout_s=590)
# CPU dry run of every step with tiny sizes (~1-2 minutes; Testing/engine/test_device_run.py runs it):
#   MEDLVM_DEVICE_DRY_RUN=1 OUT=/tmp/x bash tools/device_run.sh
#
# Steps and their limits (seconds; the whole script ends within MEDLVM_DEVICE_BUDGET_S, default 555):
#   setup         carried wheels -> $WORK/site; versions, GPU, /dev/shm                      ~10
#   decode-*      benchmarks/decode.py, bf16, ours vs HF generate (default and static cache, eager), random
#                 weights built on the GPU: lvm-100m (B 1, 16; 1280 + 128 tokens)             60
#                 and lvm-7b (B 1, 16; 1280 + 64 tokens; ~60 GB of GPU memory)              100
#   motion        benchmarks/motion.py: LVM-7B layout + open-muse tokenizer (muse-f16-8192), 10 phases of
#                 128 slices of 256x256, 5 observed -> 5 predicted, batch 64 (KV cache 86 GB + weights 13.5 GB),
#                 render direct (no registration, so no SimpleITK): seconds per patient, tokens/s, % of the
#                 bandwidth bound, peak GPU memory                                             170
#   train         tools/device_train.py: tokenizer_tiny_gpu.yaml then transformer_tiny_ct_gpu.yaml on
#                 phantoms (seeds < 1000) + natural videos / pairs, each stage sized to the time left;
#                 at most 300 s, ending 35 s before the budget (15 s grace + 20 s for what follows)
#   package       the exported model as a tar split into 15 MB parts, curves, summary
#   decode-compiled  only if 110 s are left (90 s for it): lvm-7b B 16 against HF static cache compiled
#                 (torch.compile, HF's default on GPUs; the compilation is not timed)
#
# What comes back in $OUT (at most 8 files, each < 16 MiB):
#   device_run.log        everything printed
#   decode.md, motion.md  the benchmark tables (decode.md gains the compiled-HF table when that step ran)
#   curves.png            training loss (and tokenizer PSNR) against step
#   summary.json          each step's exit status and seconds; training steps, tokens, data-build seconds;
#                         the model's parts, sha256 and rejoin command
#   model.tar.part0, model.tar.part1 (, part2)   the model folder (tokenizer + transformer, ~28 MB)
#
# Bringing the model home (here, after the call; the files lie, read-only, under the call's files_at):
#   cat FILES_AT/model.tar.part* | sha256sum                   # equals summary.json's model.sha256
#   mkdir -p runs/gpu_tiny && cat FILES_AT/model.tar.part* | tar -xf - -C runs/gpu_tiny
#   M=runs/gpu_tiny/medlvm-tiny-ct-gpu
#   python benchmarks/motion_likelihood.py --model $M --out runs/gpu_tiny/likelihood   # margin vs copy-last
#   medlvm evaluate motion runs/cases --make-phantoms 5 --real --model $M --out runs/gpu_tiny/report \
#       --methods medlvm,copy-last,mirror,dvf                    # and the same with the bundled default
#   Ship it (python -m MedLVMLib.training.bundle, as tools/train_bundled.sh does) only if it beats the bundled
#   default there (margin > 0 and better than copy-last on phases 6-9); record either outcome in docs/motion/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
DRY=${MEDLVM_DEVICE_DRY_RUN:-0}
: "${OUT:?set OUT to the folder for the results (the device tool sets it)}"
mkdir -p "$OUT"
WORK=${MEDLVM_DEVICE_WORK:-$(mktemp -d /tmp/medlvm_device.XXXXXX)}
mkdir -p "$WORK"
START=$(date +%s)

if [ "$DRY" = 1 ]; then
    PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    BUDGET=${MEDLVM_DEVICE_BUDGET_S:-420}
    DEVICE=cpu
    export MEDLVM_CPU_KERNELS=0  # nothing compiled: the CPU kernels never serve on the GPU machine either
    DECODE_RUNS=("tiny 120 --batch 1 2 --prompt 64 --new-tokens 8 --kernels off")
    MOTION_ARGS=(--preset tiny --tokenizer tiny --slices 8 --size 32 --phases 4 --observed 2 --batch-size 8)
    MOTION_LIMIT=120
    COMPILED_ARGS=(--config tiny --batch 2 --prompt 64 --new-tokens 8 --kernels off)
    COMPILED_MIN_LEFT=40
    TRAIN_ARGS=(--dry-run)
else
    PY=${PY:-python3}
    BUDGET=${MEDLVM_DEVICE_BUDGET_S:-555}
    DEVICE=cuda
    DECODE_RUNS=("lvm-100m 60 --batch 1 16 --prompt 1280 --new-tokens 128"
                 "lvm-7b 100 --batch 1 16 --prompt 1280 --new-tokens 64")
    MOTION_ARGS=(--preset lvm-7b --tokenizer muse-f16-8192 --slices 128 --size 256 --phases 10 --observed 5
                 --batch-size 64)
    MOTION_LIMIT=170
    COMPILED_ARGS=(--config lvm-7b --batch 16 --prompt 1280 --new-tokens 64)
    COMPILED_MIN_LEFT=90
    TRAIN_ARGS=()
fi
TRAIN_MAX_S=300
TRAIN_GRACE_S=15
PACK_RESERVE_S=20
export PYTHONUNBUFFERED=1 PYTHONPATH=$REPO TOKENIZERS_PARALLELISM=false

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }

# [TEE=FILE] step NAME LIMIT CMD...: CMD under `timeout` (which stops its whole process group), the limit cut to
# the time left; with TEE, CMD's stdout is also appended to FILE (its stderr goes to the log only). A non-zero
# status is logged and recorded in steps.tsv, and the script goes on.
step() {
    local name=$1 limit=$2
    shift 2
    local room=$(($(left) - PACK_RESERVE_S))
    [ "$limit" -gt "$room" ] && limit=$room
    if [ "$limit" -lt 10 ]; then
        echo "### $name: skipped, $(left) s left"
        printf '%s\tskipped\t0\t0\n' "$name" >>"$WORK/steps.tsv"
        return 0
    fi
    echo
    echo "### $name (limit ${limit} s, at ${SECONDS} s)"
    echo "\$ $*"
    local t0 rc
    t0=$(date +%s)
    if [ -n "${TEE:-}" ]; then
        timeout --kill-after=10 "$limit" bash -c 'set -o pipefail; file=$1; shift; "$@" | tee -a "$file"' _ \
            "$TEE" "$@"
    else
        timeout --kill-after=10 "$limit" "$@"
    fi
    rc=$?
    [ $rc -eq 124 ] && echo "### $name: stopped by its time limit (${limit} s)"
    echo "### $name: exit status $rc after $(($(date +%s) - t0)) s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" >>"$WORK/steps.tsv"
    return 0
}

setup() {
    echo "device_run.sh: dry run $DRY, budget ${BUDGET} s, OUT $OUT, WORK $WORK, $(date -u)"
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            .whl/*.whl && export PYTHONPATH=$WORK/site:$PYTHONPATH
    fi
    if [ "$DRY" = 1 ]; then  # as on the GPU machine: an import of SimpleITK or pydicom fails
        mkdir -p "$WORK/absent"
        for m in SimpleITK pydicom; do
            echo "raise ImportError('$m is not installed on the GPU machine (device_run.sh dry run)')" \
                >"$WORK/absent/$m.py"
        done
        export PYTHONPATH=$WORK/absent:$PYTHONPATH
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    echo "cpus $(nproc); /dev/shm: $(df -h /dev/shm 2>/dev/null | tail -1)"
    "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.cuda.is_available())
for name in ("nrrd", "pytorch_lightning", "transformers", "scipy", "skimage", "safetensors", "yaml", "matplotlib"):
    try:
        print(f"  {name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except ImportError as exc:
        print(f"  MISSING {name}: {exc} (run tools/fetch_device_wheels.sh and carry .whl)")
EOF
}

decode_steps() {
    local run preset limit rest
    for run in "${DECODE_RUNS[@]}"; do
        read -r preset limit rest <<<"$run"
        # shellcheck disable=SC2086  # $rest: the preset's flags, split on purpose
        TEE=$OUT/decode.md step "decode-$preset" "$limit" "$PY" benchmarks/decode.py --config "$preset" \
            --device "$DEVICE" --dtype bf16 --hf-compile off $rest
        echo >>"$OUT/decode.md"
    done
}

# The training tool sizes its stages to end by its deadline; the step's time limit adds TRAIN_GRACE_S so that a
# late export is not cut off, and the deadline leaves that grace inside the budget.
train_step() {
    local deadline=$((START + BUDGET - PACK_RESERVE_S - TRAIN_GRACE_S))
    local cap=$(($(date +%s) + TRAIN_MAX_S))
    [ "$deadline" -gt "$cap" ] && deadline=$cap
    # one BLAS thread per process: the phantom and sentence workers fill every core already
    step train $((deadline - $(date +%s) + TRAIN_GRACE_S)) env OPENBLAS_NUM_THREADS=1 "$PY" tools/device_train.py \
        --work "$WORK/train" --deadline "$deadline" ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
}

package() {
    local export_dir=$WORK/train/export name
    [ -f "$WORK/train/curves.png" ] && cp "$WORK/train/curves.png" "$OUT/curves.png"
    name=$(ls "$export_dir" 2>/dev/null | head -1)
    if [ -z "$name" ]; then
        echo "### package: no exported model"
        return 0
    fi
    tar -C "$export_dir" -cf "$WORK/model.tar" "$name" &&
        split -b 15m -d -a 1 "$WORK/model.tar" "$OUT/model.tar.part" &&
        echo "### package: $name -> $(ls "$OUT" | grep -c '^model.tar.part') part(s); rejoin:" \
            "cat model.tar.part* | tar -xf - -C DEST  (gives DEST/$name)"
}

summary() {
    "$PY" tools/device_summary.py --work "$WORK" --out "$OUT" --budget "$BUDGET" --elapsed "$(elapsed)" \
        --dry-run "$DRY" || echo "### summary failed"
}

main() {
    setup
    decode_steps
    TEE=$OUT/motion.md step motion "$MOTION_LIMIT" "$PY" benchmarks/motion.py "${MOTION_ARGS[@]}" \
        --device "$DEVICE" --dtype bf16
    train_step
    package
    if [ "$(left)" -ge "$((COMPILED_MIN_LEFT + PACK_RESERVE_S))" ]; then
        echo "## HF static cache compiled (torch.compile as HF does on accelerators; warmed up on the timed shapes)" \
            >>"$OUT/decode.md"
        TEE=$OUT/decode.md step decode-compiled "$(left)" "$PY" benchmarks/decode.py "${COMPILED_ARGS[@]}" \
            --device "$DEVICE" --dtype bf16 --hf-cache static --hf-compile auto
    else
        echo "### decode-compiled: skipped, $(left) s left"
        printf 'decode-compiled\tskipped\t0\t0\n' >>"$WORK/steps.tsv"
    fi
    summary
    echo "### done after $(elapsed) s; in $OUT:"
    ls -l "$OUT"
}

main 2>&1 | tee -a "$OUT/device_run.log"

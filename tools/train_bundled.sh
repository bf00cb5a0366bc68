#!/usr/bin/env bash
# Reproduces the bundled models medlvm-tiny-zs, medlvm-tiny-ct, medlvm-tiny-ct-breathing and
# medlvm-tiny-ct-breathing-v2 as they were made (CPU only).
# Each stage stops at trainer.max_steps or trainer.max_minutes, whichever comes first, so on a busy or slow
# machine the step counts (and the weights) differ from the model cards; the cards give the steps reached.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CHECKS=docs/training

# 1. tokenizer (natural images, textures, palette masks, degraded photographs; no CT)
$PY -m MedLVMLib train tokenizer --config Resources/configs/tokenizer_tiny.yaml
# 2. zero-shot transformer (deformed natural-image videos + analogy pairs; no CT)
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_zs.yaml
#    ... continued to 1500 steps (the cosine schedule restarts warm from its value at step 900 of 1500;
#    the token cache of the first stage is reused)
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_zs.yaml \
    --resume runs/transformer_tiny_zs/checkpoints/last.ckpt --max-steps 1500 \
    --set data.cache=runs/transformer_tiny_zs/tokens.npz
# 3. CT fine-tune of 2. on phantom seeds 0-23 (seeds >= 1000 are held out)
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_ct.yaml

# 4. checks: tokenizer PSNR on real CT (HU window [-1000, 1000]), continuation of a held-out phantom, curves
$PY -m MedLVMLib.training.checks tokenizer runs/tokenizer_tiny/model --out $CHECKS
$PY -m MedLVMLib.training.checks continuation runs/transformer_tiny_zs/model --out $CHECKS
$PY -m MedLVMLib.training.checks continuation runs/transformer_tiny_ct/model --out $CHECKS
$PY -m MedLVMLib.training.checks curves runs/tokenizer_tiny runs/transformer_tiny_zs runs/transformer_tiny_ct \
    --out $CHECKS

# 5. install into Resources/models/<id>/ with model cards; update sha256/size in Resources/models.json
TOK="medlvm train tokenizer --config Resources/configs/tokenizer_tiny.yaml"
$PY -m MedLVMLib.training.bundle --id medlvm-tiny-zs --run runs/transformer_tiny_zs \
    --tokenizer-run runs/tokenizer_tiny --checks $CHECKS --tokenizer-command "$TOK" \
    --transformer-command "medlvm train transformer --config Resources/configs/transformer_tiny_zs.yaml" \
    --intro "MedLVM's zero-shot tiny model: VQGAN tokenizer (64x64, f8, 1024 codes) + LLaMA decoder (2.2M), \
trained ONLY on non-medical data (scikit-image sample photographs, procedural textures, synthetic deformations). \
It has never seen a CT image."
$PY -m MedLVMLib.training.bundle --id medlvm-tiny-ct --run runs/transformer_tiny_ct \
    --tokenizer-run runs/tokenizer_tiny --checks $CHECKS --tokenizer-command "$TOK" \
    --transformer-command "medlvm train transformer --config Resources/configs/transformer_tiny_ct.yaml" \
    --intro "medlvm-tiny-zs with its transformer fine-tuned on 4D CT breathing phantoms (phantom seeds 0-23; \
seeds >= 1000 are held out for evaluation), coronal slices with the phases in breathing order. The tokenizer is \
the zero-shot one (never trained on CT)."

# 6. the motion default medlvm-tiny-ct-breathing: medlvm-tiny-ct fine-tuned on breathing sentences in the 4D CT
#    phase order (model card: Resources/models/medlvm-tiny-ct-breathing/README.md). It reads the frames cache of the
#    learned baselines (runs/motion_baselines/, written by tools/train_motion_baselines.py) and mixes in the token
#    cache of the medlvm-tiny-ct-motion run (Resources/configs/transformer_tiny_ct_motion.yaml).
$PY tools/train_motion_baselines.py
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_ct_motion.yaml
$PY tools/build_motion_tokens.py --stride 3 --mix runs/transformer_tiny_ct_motion/tokens.npz
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_ct_breathing.yaml
mkdir -p Resources/models/medlvm-tiny-ct-breathing
cp runs/transformer_tiny_ct_breathing/model/config.json runs/transformer_tiny_ct_breathing/model/model.safetensors \
    Resources/models/medlvm-tiny-ct-breathing/
echo "update sha256 and size_bytes of medlvm-tiny-ct-breathing in Resources/models.json:"
sha256sum Resources/models/medlvm-tiny-ct-breathing/model.safetensors

# 7. the motion default medlvm-tiny-ct-breathing-v2: medlvm-tiny-ct-breathing fine-tuned 60 more minutes on
#    sentences that all start at phase 0, every second coronal slice position of the same phantoms
#    (model card: Resources/models/medlvm-tiny-ct-breathing-v2/README.md).
$PY tools/build_motion_tokens.py --stride 2 --rotations 1 --out runs/motion_tokens/tokens_phase0.npz
$PY -m MedLVMLib train transformer --config Resources/configs/transformer_tiny_ct_breathing_v2.yaml
mkdir -p Resources/models/medlvm-tiny-ct-breathing-v2
cp runs/transformer_tiny_ct_breathing_v2/model/config.json runs/transformer_tiny_ct_breathing_v2/model/model.safetensors \
    Resources/models/medlvm-tiny-ct-breathing-v2/
echo "update sha256 and size_bytes of medlvm-tiny-ct-breathing-v2 in Resources/models.json:"
sha256sum Resources/models/medlvm-tiny-ct-breathing-v2/model.safetensors

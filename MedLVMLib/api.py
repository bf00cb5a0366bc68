"""MedLVM's public Python API: load a model, encode / decode images, continue visual sentences.

    from MedLVMLib import api
    model = api.load_model()                       # the bundled default (or a registry id / folder)
    codes = api.encode_images(model, images)       # (N, H, W) in [0, 1] -> (N, tokens_per_image) int64
    more = api.generate(model, codes.reshape(1, -1), n_images=2, greedy=True)   # (1, 2, tokens_per_image)
    frames = api.decode_codes(model, more[0])      # (2, image_size, image_size) float32 in [0, 1]

Task entry points (`predict_motion`, ...) live in `MedLVMLib.tasks` and take a `MedLVMModel`.
This module is the stable surface; the code lives in `MedLVMLib.engine.lvm` (models, encode, decode,
generate) and `MedLVMLib.engine.checkpoints.registry` (which folder a model id names).
"""

from __future__ import annotations

from MedLVMLib.engine.checkpoints.registry import resolve_model_folder
from MedLVMLib.engine.lvm import (
    RANDOM_FALLBACK_ID,
    MedLVMModel,
    decode_codes,
    encode_images,
    generate,
    load_model,
    random_model,
)

__all__ = [
    "RANDOM_FALLBACK_ID",
    "MedLVMModel",
    "decode_codes",
    "encode_images",
    "generate",
    "load_model",
    "random_model",
    "resolve_model_folder",
]

"""Classical baselines beside each MedLVM task: `motion`, `segment`, `denoise`, `superres`.

Each submodule exposes a registry dict (MOTION_BASELINES, SEGMENT_BASELINES, DENOISE_BASELINES,
SUPERRES_BASELINES) mapping a method name to a function; import the submodule you need.
"""

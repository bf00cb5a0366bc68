"""Learned respiratory-motion baselines: a ConvLSTM phase predictor and an RMSim-style DVF predictor.

Both read the observed phases of one coronal slice position as a sequence of frames (the model's working
grid, `imaging.resample`, frames resized to `frame_size`, HU window [-1000, 1000] -> [0, 1]) and run a
sequence-to-sequence ConvLSTM (Shi et al., NeurIPS 2015): a strided convolutional encoder per frame, a
ConvLSTM over the observed frames, the same ConvLSTM continued for each future phase (its input: the encoding
of its own previous output), and a decoder per future phase.

- "convlstm": the decoder gives the future frame as a change of the last observed frame (image in, images
  out). The prediction is the decoded frames, resampled to the native grid.
- "rmsim": after Lee et al., "RMSim: controlled respiratory motion simulation on static patient scans",
  PMB 68(4) 2023: the decoder gives a displacement field per future phase, the last observed frame is
  warped by it (spatial transformer) and compared with the true future frame during training; at inference
  the fields are stacked into a 3D field (no anterior-posterior component) and the NATIVE last observed
  phase is warped by it, so the prediction keeps the native detail.

Where they differ from the published models: 2D coronal slices (the published RMSim is 3D), about 0.1 M
parameters, trained on MedLVM's synthetic phantoms only (training/motion_baselines.py), frames of 64 x 64.

Weights: a folder with config.json ({"kind", "frame_size", "hidden", "max_shift"}) and model.safetensors
(Resources/models/baselines/<kind>/ ships one of each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import frames as frames_mod
from MedLVMLib.imaging import resample
from MedLVMLib.imaging.volume import Phases, continue_index
from MedLVMLib.paths import resources_dir
from MedLVMLib.progress import Progress, ensure

KINDS = ("convlstm", "rmsim")
HU_WINDOW = (-1000.0, 1000.0)
AXIS = "coronal"
BATCH = 64  # slice positions per forward pass at inference


@dataclass(frozen=True)
class MotionNetConfig:
    kind: str = "rmsim"
    frame_size: int = 64
    hidden: int = 32
    max_shift: float = 0.25  # largest displacement, as a fraction of the frame (rmsim)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MedLVMError(f"unknown learned motion model '{self.kind}'; choose from {', '.join(KINDS)}")
        if self.frame_size % 4 or self.frame_size < 8:
            raise MedLVMError(f"frame_size must be a multiple of 4 and at least 8, got {self.frame_size}")


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell: the four gates from a 3x3 convolution of [input, hidden]."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class MotionNet(nn.Module):
    """Observed frames [B, T, 1, S, S] in [0, 1] -> future frames [B, F, 1, S, S] (and fields [B, F, 2, S, S]).

    Fields (rmsim) are in grid_sample's normalised units (x, y), pull convention: out(p) = last(p + u(p)).
    """

    def __init__(self, config: MotionNetConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(2, h // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(h // 2, h, 3, stride=2, padding=1), nn.GELU(),
        )
        self.cell = ConvLSTMCell(h, h)
        out_channels = 2 if config.kind == "rmsim" else 1
        self.decoder = nn.Sequential(
            nn.Conv2d(2 * h, h, 3, padding=1), nn.GELU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(h, h // 2, 3, padding=1), nn.GELU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(h // 2, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.decoder[-1].weight)  # starts as copy-last: no change, no displacement
        nn.init.zeros_(self.decoder[-1].bias)

    def _encode(self, frame: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.cat([frame, frame - last], dim=1))

    def forward(self, observed: torch.Tensor, n_future: int):
        b, t, _, s, _ = observed.shape
        last = observed[:, -1]
        hidden = observed.new_zeros(b, self.config.hidden, s // 4, s // 4)
        state = (hidden, hidden)
        first_features = self._encode(observed[:, 0], last)
        for k in range(t):
            h, state = self.cell(self._encode(observed[:, k], last), state)
        frames, fields, previous = [], [], last
        for _ in range(n_future):
            h, state = self.cell(self._encode(previous, last), state)
            out = self.decoder(torch.cat([h, first_features], dim=1))
            if self.config.kind == "rmsim":
                field = torch.tanh(out) * self.config.max_shift * 2.0  # normalised units span 2 per frame
                previous = warp_frames(last, field)
                fields.append(field)
            else:
                previous = (last + out).clamp(0.0, 1.0)
            frames.append(previous)
        return torch.stack(frames, dim=1), (torch.stack(fields, dim=1) if fields else None)


def warp_frames(frames: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """frames [B, 1, S, S] pulled through field [B, 2, S, S] (normalised x, y): out(p) = frames(p + u(p))."""
    b, _, s, w = frames.shape
    ys = torch.linspace(-1 + 1 / s, 1 - 1 / s, s, device=frames.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=frames.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None] + field.permute(0, 2, 3, 1)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def default_folder(kind: str) -> Path:
    return resources_dir() / "models" / "baselines" / kind


def save(net: MotionNet, folder: Path, card: str = "") -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(net.config), indent=1) + "\n")
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    if card:
        (folder / "README.md").write_text(card)
    return folder


def load(kind: str, folder: Optional[Path] = None) -> MotionNet:
    """The shipped (or given) weights of a learned motion baseline."""
    from safetensors.torch import load_file

    folder = default_folder(kind) if folder is None else Path(folder)
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise MedLVMError(f"no trained '{kind}' model in '{folder}' (config.json + model.safetensors); train one with "
                          f"`python tools/train_motion_baselines.py --kind {kind}`")
    config = MotionNetConfig(**json.loads(config_path.read_text()))
    if config.kind != kind:
        raise MedLVMError(f"'{folder}' holds a '{config.kind}' model, not '{kind}'")
    net = MotionNet(config)
    state = load_file(str(weights))
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise MedLVMError(f"'{weights}' holds NaN or infinite weights")
    net.load_state_dict(state)
    return net.eval()


def to_frames(volumes: np.ndarray, size: int) -> np.ndarray:
    """HU volumes [V, Z, Y, X] -> coronal frames [N, V, size, size] in [0, 1]."""
    return np.stack([frames_mod.volume_frames(volume, *HU_WINDOW, AXIS, size) for volume in volumes], axis=1)


def working_frames(volumes: np.ndarray, geometry, size: int):
    """(the working grid, the volumes [V, Z, Y, X] resampled onto it, their coronal frames [N, V, size, size]):
    what the nets see, at inference and in training alike."""
    working = resample.working_grid(resample.Grid(volumes.shape[1:], geometry), AXIS, size)
    on_working = resample.resample_volumes(volumes, working.shape)
    return working, on_working, to_frames(on_working, size)


def predict_frames(net: MotionNet, frames: np.ndarray, n_future: int, progress: Optional[Progress] = None):
    """frames [N, T, S, S] -> (future frames [N, F, S, S], fields [N, F, 2, S, S] or None)."""
    progress = ensure(progress)
    progress.stage(f"{net.config.kind}: predicting", len(frames))
    images, fields = [], []
    with torch.inference_mode():
        for start in range(0, len(frames), BATCH):
            batch = torch.from_numpy(frames[start:start + BATCH])[:, :, None]
            out, field = net(batch, n_future)
            images.append(out[:, :, 0].numpy())
            if field is not None:
                fields.append(field.numpy())
            progress.advance(len(batch))
    return np.concatenate(images), (np.concatenate(fields) if fields else None)


def _field_mm(fields: np.ndarray, working: resample.Grid) -> np.ndarray:
    """Per-slice coronal frame fields [N, 2, S, S] (normalised x = column, y = row) -> a 3D field on the
    working grid [Z, Y, X, 3] in mm, physical (x, y, z) components."""
    zw, _, xw = working.shape
    per_slice = []
    for field in fields:  # (2, S, S); rows run superior -> inferior (frames flip Z)
        rows = frames_mod.resize_frames(np.ascontiguousarray(field), (zw, xw), order=1)  # (2, zw, xw)
        per_slice.append(rows[:, ::-1])  # back to increasing z
    stacked = np.stack(per_slice, axis=1)  # (2, Y, Z, X)
    d_x = stacked[0].transpose(1, 0, 2) * xw / 2.0  # normalised -> working-grid voxels along x
    d_z = -stacked[1].transpose(1, 0, 2) * zw / 2.0  # frame rows point to decreasing z
    index = np.stack([d_x, np.zeros_like(d_x), d_z], axis=-1)  # (Z, Y, X, 3) index units (x, y, z)
    spacing = np.asarray(working.geometry.spacing, dtype=float)
    direction = np.asarray(working.geometry.direction, dtype=float).reshape(3, 3)
    return (index * spacing) @ direction.T


def predict(kind: str, observed: Phases, n_future: int, n_total: Optional[int] = None, folder: Optional[Path] = None,
            progress: Optional[Progress] = None, net: Optional[MotionNet] = None) -> Phases:
    """The learned baseline `kind` on a 4D CT: `n_future` phases after the observed ones, on the native grid."""
    net = load(kind, folder) if net is None else net
    native = resample.Grid(observed.shape, observed.geometry)
    working, on_working, frames = working_frames(observed.array, observed.geometry, net.config.frame_size)
    images, fields = predict_frames(net, frames, n_future, progress)
    out = np.empty((n_future,) + observed.shape, np.float32)
    for k in range(n_future):
        if kind == "rmsim":
            field = _field_mm(fields[:, k], working)
            resample.warp_with_field(observed.array[-1], field, native, working, out=out[k])
        else:
            frames_k = frames_mod.resize_frames(images[:, k], frames_mod.to_frames(on_working[0], AXIS).shape[1:])
            volume = frames_mod.from_frames(frames_mod.unwindow(frames_k, *HU_WINDOW), AXIS)
            out[k] = resample.resample(np.ascontiguousarray(volume), observed.shape)
    labels, values = continue_index(observed, n_future, n_total)
    return Phases(out, observed.geometry, labels=labels, index_values=values, index_name=observed.index_name,
                  index_unit=observed.index_unit)

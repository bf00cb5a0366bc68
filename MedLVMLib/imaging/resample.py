"""The model's working grid: a coarser grid over the same field of view, and the way back to the native grid.

A model that sees 64 x 64 frames gains nothing from 256 slices between them: the tokenizer shrinks every
slice to the model resolution anyway. `working_grid` picks, for one slicing axis, a grid whose in-plane
axes have the model resolution (never finer than native) and whose slice axis is no finer than the finest
in-plane axis of that grid (never finer than native either). Encoding, generation, decoding and
registration then run on that grid; the motion comes back to the native grid as a displacement field
(`warp_with_field`), so the native image keeps its detail.

Grids share the field of view with pixel areas aligned (the first and last voxel edges coincide), the same
convention as `frames.resize_frames`: resampling a volume along its three axes and then slicing it gives
the frames `resize_frames` would have made from the native slices (linear interpolation is separable).

Arrays are [Z, Y, X] numpy; fields are float32 [Z, Y, X, 3] in mm with physical (x, y, z) components (the
`registration` convention).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry

# Array axis of a [Z, Y, X] volume that each slicing walks along (as in tasks.common / frames.to_frames).
SLICE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
WARP_CHUNK_VOXELS = 2_000_000  # native voxels warped per step: bounds the temporary sampling grids (~50 MB)


class Grid(NamedTuple):
    """A [Z, Y, X] shape and its geometry."""

    shape: tuple[int, int, int]
    geometry: Geometry


def spacing_zyx(geometry: Geometry) -> np.ndarray:
    return np.asarray(geometry.spacing, dtype=float)[::-1]


def grid_over(native: Grid, shape: tuple[int, int, int]) -> Grid:
    """The grid of `shape` covering the field of view of `native` (voxel areas aligned)."""
    shape = tuple(int(s) for s in shape)
    if min(shape) < 1:
        raise MedLVMError(f"a grid needs at least one voxel per axis, got {shape}")
    n_native = np.asarray(native.shape, dtype=float)
    old = spacing_zyx(native.geometry)
    new = old * n_native / np.asarray(shape, dtype=float)  # (z, y, x)
    direction = np.asarray(native.geometry.direction, dtype=float).reshape(3, 3)
    shift_xyz = (new - old)[::-1] / 2.0  # the first voxel centre moves inwards by half the spacing change
    origin = np.asarray(native.geometry.origin, dtype=float) + direction @ shift_xyz
    geometry = Geometry(tuple(float(s) for s in new[::-1]), tuple(float(o) for o in origin),
                        tuple(float(d) for d in direction.ravel()))
    return Grid(shape, geometry)


def working_grid(native: Grid, axis: str, image_size: int) -> Grid:
    """The model's grid for sentences sliced along `axis` (the native grid when that is already coarse)."""
    if axis not in SLICE_AXIS:
        raise MedLVMError(f"axis must be one of {', '.join(SLICE_AXIS)}, got '{axis}'")
    if image_size < 1:
        raise MedLVMError(f"image_size must be positive, got {image_size}")
    slice_axis = SLICE_AXIS[axis]
    spacing = spacing_zyx(native.geometry)
    shape = list(native.shape)
    in_plane = [a for a in range(3) if a != slice_axis]
    for a in in_plane:
        shape[a] = min(native.shape[a], int(image_size))
    finest = min(spacing[a] * native.shape[a] / shape[a] for a in in_plane)
    extent = spacing[slice_axis] * native.shape[slice_axis]
    shape[slice_axis] = int(min(native.shape[slice_axis], max(2, round(extent / finest))))
    return grid_over(native, tuple(shape))


def resample(volume: np.ndarray, shape: tuple[int, int, int], order: int = 1) -> np.ndarray:
    """`volume` [Z, Y, X] on a grid of `shape` over the same field of view (linear by default)."""
    from scipy import ndimage

    volume = np.asarray(volume)
    if tuple(volume.shape) == tuple(shape):
        return volume.astype(np.float32, copy=False)
    factors = [t / s for t, s in zip(shape, volume.shape)]
    out = ndimage.zoom(volume.astype(np.float32, copy=False), factors, order=order, mode="nearest",
                       grid_mode=True, prefilter=order > 1)
    if out.shape != tuple(shape):
        raise MedLVMError(f"resampling gave {out.shape}, expected {tuple(shape)}")
    return out


def resample_volumes(volumes: np.ndarray, shape: tuple) -> np.ndarray:
    """[V, ...] volumes, each resampled to `shape` (returned as they are when already there)."""
    if tuple(volumes.shape[1:]) == tuple(shape):
        return volumes
    return np.stack([resample(v, shape) for v in volumes])


def _centres(n: int) -> np.ndarray:
    """Voxel centres 0..n-1 in grid_sample's align_corners=False coordinates (-1, 1: the outer voxel edges)."""
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def warp_with_field(image: np.ndarray, field: np.ndarray, image_grid: Grid, field_grid: Grid,
                    out: Optional[np.ndarray] = None) -> np.ndarray:
    """out(p) = image(p + u(p)) on the image's grid, u given on a (coarser) grid over the same field of view.

    The field is interpolated linearly at every native voxel and the image sampled linearly there; points
    that map outside take the nearest edge value (as `registration.warp`). Works in slabs along Z so that
    memory stays at a few tens of MB beside the image, whatever its size.

    Args:
        image: [Z, Y, X] on `image_grid`.
        field: float [z, y, x, 3] mm, physical (x, y, z) components, on `field_grid`.
    Returns:
        float32 [Z, Y, X].
    """
    import torch
    import torch.nn.functional as F

    image = np.asarray(image, dtype=np.float32)
    if tuple(image.shape) != tuple(image_grid.shape):
        raise MedLVMError(f"image {image.shape} does not match its grid {image_grid.shape}")
    if tuple(field.shape) != tuple(field_grid.shape) + (3,):
        raise MedLVMError(f"field {field.shape} does not match its grid {field_grid.shape} (+ 3 components)")
    nz, ny, nx = image.shape
    direction = np.asarray(image_grid.geometry.direction, dtype=float).reshape(3, 3)
    # physical (x, y, z) displacement -> native voxel index displacement (z, y, x)
    to_index = (np.diag(1.0 / np.asarray(image_grid.geometry.spacing, dtype=float)) @ direction.T)[::-1]
    with torch.no_grad():
        source = torch.from_numpy(np.ascontiguousarray(image))[None, None]
        coarse = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(field, np.float32), -1, 0)))[None]
        matrix = torch.as_tensor(np.ascontiguousarray(to_index), dtype=torch.float32)  # (3 zyx, 3 xyz)
        z_norm = torch.as_tensor(_centres(nz), dtype=torch.float32)
        y_norm = torch.as_tensor(_centres(ny), dtype=torch.float32)
        x_norm = torch.as_tensor(_centres(nx), dtype=torch.float32)
        scale = torch.tensor([max(nx - 1, 1), max(ny - 1, 1), max(nz - 1, 1)], dtype=torch.float32)
        iy = torch.arange(ny, dtype=torch.float32)
        ix = torch.arange(nx, dtype=torch.float32)
        result = np.empty_like(image) if out is None else out
        low, high = float(image.min()), float(image.max())  # linear interpolation stays within them
        step = max(1, WARP_CHUNK_VOXELS // max(1, ny * nx))
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            zs = torch.arange(z0, z1, dtype=torch.float32)
            zg, yg, xg = torch.meshgrid(z_norm[z0:z1], y_norm, x_norm, indexing="ij")
            where = torch.stack((xg, yg, zg), dim=-1)[None]  # grid_sample wants (x, y, z) order
            u = F.grid_sample(coarse, where, mode="bilinear", padding_mode="border", align_corners=False)
            u = u[0].permute(1, 2, 3, 0)  # (dz, Y, X, 3 physical xyz)
            d = u @ matrix.T  # (dz, Y, X, 3 index zyx)
            zi, yi, xi = torch.meshgrid(zs, iy, ix, indexing="ij")
            pos = torch.stack((xi + d[..., 2], yi + d[..., 1], zi + d[..., 0]), dim=-1)
            sample_at = (2.0 * pos / scale - 1.0)[None]
            warped = F.grid_sample(source, sample_at, mode="bilinear", padding_mode="border", align_corners=True)
            result[z0:z1] = warped[0, 0].clamp_(low, high).numpy()  # float rounding of the weights aside
    return result

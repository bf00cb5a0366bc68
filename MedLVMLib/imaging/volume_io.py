"""One 3D image in or out: any format SimpleITK reads (.nii.gz, .nrrd, .mha, ...) or a DICOM series."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.volume import (
    VOLUME_SUFFIXES,
    Geometry,
    PathLike,
    Volume,
    check_finite,
    check_label_map,
    geometry_of,
    to_image,
    volume_suffix,
)
from MedLVMLib.outputs import atomic_path


def sitk_read(path: Path):
    import SimpleITK as sitk

    if not path.exists():
        raise InputError(f"'{path}' does not exist")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"'{path}' is not a readable image (truncated, corrupt or not an image file): "
                         f"{first}") from None


def read_volume(path: PathLike, labels: bool = False) -> Volume:
    """Read one 3D image (.nii.gz, .nii, .nrrd, .mha, .mhd, or a DICOM folder with one series).

    Args:
        labels: keep the integer voxel type (a label map) instead of converting to float32 HU.
    Returns:
        Volume with array [Z, Y, X].
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        from MedLVMLib.imaging.dicom import read_dicom_volume

        volume = read_dicom_volume(path)
        if labels:
            check_label_map(volume.array, path)
        return Volume(volume.array.astype(np.int32), volume.geometry) if labels else volume
    image = sitk_read(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "expected a scalar CT")
    if image.GetDimension() != 3 or min(image.GetSize()) < 1:
        raise InputError(f"'{path}' is a {image.GetDimension()}D image of size {image.GetSize()}; expected a 3D volume")
    array = sitk.GetArrayFromImage(image)
    if labels:
        check_label_map(array, path)
        if not np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.int32)
        if array.max() <= 255:
            array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32, copy=False)
        check_finite(array, path)
    return Volume(array, geometry_of(image))


def write_volume(volume: Union[Volume, np.ndarray], path: PathLike, geometry: Optional[Geometry] = None,
                 overwrite: bool = False, compress: bool = True) -> Path:
    """Write a 3D volume; the format follows the suffix (.nii.gz, .nrrd, .mha, ...). Written atomically."""
    import SimpleITK as sitk

    if isinstance(volume, np.ndarray):
        volume = Volume(volume, geometry or Geometry())
    if volume.array.ndim != 3:
        raise InputError(f"write_volume needs a [Z, Y, X] array, got shape {volume.array.shape}")
    if not volume_suffix(path) or volume_suffix(path) == ".seq.nrrd":
        raise InputError(f"'{path}': unknown volume format; use one of {', '.join(VOLUME_SUFFIXES)}")
    with atomic_path(path, overwrite) as tmp:
        sitk.WriteImage(to_image(volume.array, volume.geometry), str(tmp), compress)
    return Path(path)

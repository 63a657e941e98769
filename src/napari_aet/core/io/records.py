"""Records: a tilt series and a volume with their units, the file types each reader takes, and the plausible pixel sizes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]
MRC_EXTENSIONS = (".mrc", ".st", ".ali", ".rec", ".map")
TIFF_EXTENSIONS = (".tif", ".tiff")
ANGLE_TEXT_EXTENSIONS = (".txt", ".csv", ".rawtlt", ".tlt")
ANGLE_EXTENSIONS = ANGLE_TEXT_EXTENSIONS + (".npy", ".mat")
VENDOR_EXTENSIONS = (".emd", ".dm3", ".dm4", ".h5", ".hdf5")  # Velox/EMD 1.0 and DigitalMicrograph
TILT_EXTENSIONS = MRC_EXTENSIONS + TIFF_EXTENSIONS + (".npy", ".mat") + VENDOR_EXTENSIONS
# Plausible pixel sizes for atomic-resolution tomography, in Å: below 0.1 Å is a header in nm
# (0.0357 for 0.357 Å) or m; above 20 Å no atom is resolved.
PIXEL_SIZE_RANGE = (0.1, 20.0)
@dataclass
class TiltSeries:
    """A tilt series ``data[a, v, u]`` (float32) with its angles (degrees) and pixel size (Å).

    ``pixel_size`` is None only when a viewer opened a file without one (shown in pixels).
    """

    data: np.ndarray
    angles: Optional[np.ndarray]
    pixel_size: Optional[float]
    source: Optional[str] = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_projections(self) -> int:
        return int(self.data.shape[0])


@dataclass
class Volume:
    """A volume ``data[z, y, x]`` (float32) with its voxel size (Å)."""

    data: np.ndarray
    pixel_size: Optional[float]
    source: Optional[str] = None

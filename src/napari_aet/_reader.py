"""napari reader: tilt series (MRC/ST/ALI, TIFF, NPY, MAT) with their angles, and MRC volumes."""

from __future__ import annotations

from pathlib import Path

from ._layers import tilt_series_layer, volume_layer
from .core import io

_SUFFIXES = tuple(io.TILT_EXTENSIONS)


def napari_get_reader(path):
    """Return a reader for one file we understand, else None (napari tries other plugins)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(str(path)).suffix.lower() not in _SUFFIXES:
        return None
    return read_path


def classify(path) -> str:
    """'tilt_series' or 'volume' for a file, from its type, header and the angles beside it."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".st", ".ali"):
        return "tilt_series"
    if io.find_angles_file(path, include_generic=False) is not None:
        return "tilt_series"
    if ext in io.MRC_EXTENSIONS:
        _, _, extra = io._read_mrc(path)
        return "tilt_series" if extra.get("mrc_is_stack") else "volume"
    return "tilt_series" if io.find_angles_file(path) is not None else "volume"


def read_path(path):
    """Layers for one file (errors surface in napari as one-line notifications)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    if classify(path) == "tilt_series":
        ts = io.read_tilt_series(path, require_angles=False, require_pixel_size=False)
        return [tilt_series_layer(ts, name=f"{path.stem} (tilt series)")]
    vol = io.read_volume(path, require_pixel_size=False)
    return [volume_layer(vol, name=path.stem)]

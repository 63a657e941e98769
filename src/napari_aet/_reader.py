"""napari reader: tilt series (MRC/ST/ALI, TIFF, NPY, MAT, Velox EMD, DM3/DM4) with their
angles, and MRC volumes. Files that hold no 3D stack (a 2D TIFF, a single MRC image) are left
to other readers: ``napari_get_reader`` returns None for them, looking at headers only."""

from __future__ import annotations

from pathlib import Path
from ._layers import tilt_series_layer, volume_layer
from .core import io

# .h5/.hdf5 are too generic to claim in napari; the command line reads EMD 1.0 files with them
_SUFFIXES = tuple(e for e in io.TILT_EXTENSIONS if e not in (".h5", ".hdf5"))


def napari_get_reader(path):
    """Return a reader for one file we can read as a tilt series or tomogram, else None
    (napari then tries other plugins)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.suffix.lower() not in _SUFFIXES or not path.is_file():
        return None
    shape = io.stack_shape(path)
    if shape is not None:
        if len(shape) != 3 or min(shape) < 2:  # 2D image, single slice, 4D data or unreadable
            return None
    return read_path


def classify(path) -> str:
    """'tilt_series' or 'volume' for a file, from its type, header and the angles beside it."""
    from .core.vendor import find_mdoc

    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".st", ".ali") or ext in io.VENDOR_EXTENSIONS:
        return "tilt_series"
    if io.find_angles_file(path, include_generic=False) is not None or find_mdoc(path) is not None:
        return "tilt_series"
    if ext in io.MRC_EXTENSIONS:
        import mrcfile

        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            return "tilt_series" if int(mrc.header.ispg) == 0 else "volume"
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

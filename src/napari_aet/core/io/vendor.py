"""Microscope files and the tilt metadata that travels with them.

* Velox EMD, EMD 1.0 (HDF5) and DigitalMicrograph DM3/DM4 stacks through RosettaSciIO, with
  the pixel size converted to Å from the file's own units and the stage alpha tilt of every
  frame (Velox stores one metadata record per frame).


* Tilt angles from an MRC extended header (FEI1/FEI2, through mrcfile's indexed extended
  header), from SerialEM's ``.mdoc`` beside the stack (``name.mdoc`` or ``name.mrc.mdoc``,
  through the ``mdocfile`` package) and, by the caller, from ``.rawtlt``/``.tlt`` files.

Every function returns where its angles came from, so outputs can name their source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import AETInputError
from ..guards import check_hdf5_self_contained, check_read_size, read_side_file
from .files import _first_line
from .pixels import LENGTH_UNITS_TO_A

__all__ = ["VENDOR_EXTENSIONS", "read_vendor_stack", "mrc_header_tilts", "find_mdoc", "mdoc_tilts"]

from .records import VENDOR_EXTENSIONS  # noqa: E402  (one list of the vendor formats)
_VELOX_METADATA_MAX_BYTES = 256 * 2**20

def _rsciio_reader(ext: str):
    try:
        if ext in (".dm3", ".dm4"):
            from rsciio.digitalmicrograph import file_reader
        else:
            from rsciio.emd import file_reader
    except ImportError:
        raise AETInputError(f"reading {ext} files needs RosettaSciIO; install it with pip install rosettasciio")
    return file_reader


def _velox_frame_tilts(path: Path) -> Optional[np.ndarray]:
    """Stage alpha (degrees) of every frame of the first Velox image stack, or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            images = f.get("Data/Image")
            if images is None:
                return None
            for key in images:
                meta = images[key].get("Metadata")
                if meta is None:
                    continue
                if meta.ndim != 2 or meta.size * meta.dtype.itemsize > _VELOX_METADATA_MAX_BYTES:
                    return None  # one JSON record of a few kB per frame: more is not Velox's
                raw = np.asarray(meta)
                tilts = []
                for k in range(raw.shape[1]):
                    text = bytes(raw[:, k]).rstrip(b"\x00").decode("utf-8", "replace")
                    alpha = json.loads(text).get("Stage", {}).get("AlphaTilt")
                    tilts.append(np.degrees(float(alpha)) if alpha is not None else np.nan)
                return np.asarray(tilts)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, json.JSONDecodeError):
        return None
    return None


def read_vendor_stack(path: Path):
    """Read a Velox/EMD/DM stack: ``(data [a, v, u], pixel_size_Å or None, tilts_deg or None, info)``.

    ``tilts`` is given only when the file holds one stage alpha per frame and they differ.

    Parameters
    ----------
    path : Path
        ``.emd``, ``.h5``, ``.dm3`` or ``.dm4``.

    Returns
    -------
    tuple
    """
    path = Path(path)
    ext = path.suffix.lower()
    reader = _rsciio_reader(ext)
    check_hdf5_self_contained(path, f"{ext[1:].upper()} file")  # before rosettasciio reads a byte of it
    try:
        signals = reader(str(path), lazy=True)  # shapes and dtypes first: the data is read below
        # an image stack: 2 signal axes (+1 navigation axis), or EMD 1.0's plain 3D arrays (3 signal axes)
        images = [s for s in signals if s["data"].ndim in (2, 3)
                  and sum(not a.get("navigate", False) for a in s["axes"]) >= 2]
        if not images:
            raise AETInputError(f"{path} holds no image stack (only spectra or 4D data); export the HAADF images")
        sig = max(images, key=lambda s: s["data"].size)
        check_read_size(sig["data"].shape, np.dtype(sig["data"].dtype).itemsize, path, "an image stack")
        data = np.asarray(sig["data"])
    except AETInputError:
        raise
    except Exception as exc:  # the readers raise many kinds on damaged files
        raise AETInputError(f"cannot read {path} as {ext[1:].upper()} ({_first_line(exc)}); re-export it from the microscope software")
    if data.ndim == 2:
        data = data[None]
    axes = sig["axes"]
    image_axes = [a for a in axes if not a.get("navigate", False)][-2:]
    pixel_size = None
    units = {str(a.get("units") or "").strip().lower() for a in image_axes}
    scales = {float(a.get("scale", 1.0)) for a in image_axes}
    info = {"reader": f"RosettaSciIO ({ext[1:]})", "signal_title": str(sig.get("metadata", {}).get("General", {}).get("title", ""))}
    if len(units) == 1 and len(image_axes) == 2:
        unit = units.pop()
        if unit in LENGTH_UNITS_TO_A:
            sizes = [float(a.get("scale", 1.0)) * LENGTH_UNITS_TO_A[unit] for a in image_axes]  # (v, u): y, x
            pixel_size = sizes[1] if len(scales) == 1 else None
            info["pixel_sizes"] = {"y": sizes[0], "x": sizes[1]}  # the reader refuses them when they differ
    tilts = None
    if ext == ".emd":
        frame_tilts = _velox_frame_tilts(path)
        if frame_tilts is not None and len(frame_tilts) == len(data) and np.all(np.isfinite(frame_tilts)):
            info["stage_alpha_deg"] = np.round(frame_tilts, 4).tolist()
            if len(data) > 1 and np.ptp(frame_tilts) > 1e-3:
                tilts = frame_tilts
    return data.astype(np.float32), pixel_size, tilts, info


def mrc_header_tilts(path: Path, n_images: int) -> Optional[tuple]:
    """Alpha tilts (degrees) from an FEI1/FEI2 MRC extended header: ``(tilts, source)`` or None.

    Parameters
    ----------
    path : Path
    n_images : int

    Returns
    -------
    tuple or None
    """
    import mrcfile

    try:  # the extended header comes with the header: the data is not read twice
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
            kind = bytes(mrc.header.exttyp).decode("ascii", "replace").strip("\x00 ")
            if kind not in ("FEI1", "FEI2"):
                return None
            ext = mrc.indexed_extended_header
    except Exception:
        return None
    if ext is None or "Alpha tilt" not in (ext.dtype.names or ()):
        return None
    tilts = np.asarray(ext["Alpha tilt"], dtype=np.float64)[:n_images]
    if len(tilts) != n_images or not np.all(np.isfinite(tilts)) or np.ptp(tilts) < 1e-3:
        return None
    return tilts, f"MRC extended header ({kind}, alpha tilt)"


def find_mdoc(path: Path) -> Optional[Path]:
    """SerialEM's metadata beside a stack: ``name.mrc.mdoc`` or ``name.mdoc``.

    Parameters
    ----------
    path : Path
        The stack.

    Returns
    -------
    Path or None
    """
    path = Path(path)
    for cand in (path.with_name(path.name + ".mdoc"), path.with_suffix(".mdoc")):
        if cand.exists():
            return cand
    return None


def mdoc_tilts(mdoc: Path) -> tuple:
    """Tilt angles (degrees, in stack order), pixel size (Å) and the tilt-axis angle of a SerialEM mdoc.

    Parameters
    ----------
    mdoc : Path

    Returns
    -------
    tilts : (n,) array
        Degrees.
    pixel_size : float or None
        Å.
    tilt_axis_angle : float or None
        Degrees.
    """
    try:
        from mdocfile.data_models import Mdoc
    except ImportError:
        raise AETInputError("reading SerialEM .mdoc files needs the mdocfile package; pip install mdocfile")
    text = read_side_file(mdoc, "SerialEM mdoc")  # a regular file under the cap: a FIFO or /dev/zero is refused
    try:
        df = Mdoc.from_string(text.decode("utf-8", "replace")).to_dataframe()
    except Exception as exc:
        raise AETInputError(f"cannot read {mdoc} as a SerialEM mdoc ({_first_line(exc)}); check the file")
    if "TiltAngle" not in df or df["TiltAngle"].isna().all():
        raise AETInputError(f"{mdoc} has no TiltAngle entries; give the angles with --angles")
    order = np.argsort(df["ZValue"].to_numpy()) if "ZValue" in df else np.arange(len(df))
    tilts = df["TiltAngle"].to_numpy(dtype=float)[order]
    pixel = float(df["PixelSpacing"].dropna().iloc[0]) if "PixelSpacing" in df and df["PixelSpacing"].notna().any() else None
    axis = None
    for title in df.get("titles", [[]])[0] if "titles" in df else []:
        if "Tilt axis angle" in str(title):
            try:
                axis = float(str(title).split("Tilt axis angle =")[1].split(",")[0])
            except (IndexError, ValueError):
                axis = None
    return tilts, pixel, axis

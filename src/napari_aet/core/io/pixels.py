"""Pixel sizes and values: plausible, square, in Å, from a header or the user, and finite data."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import AETInputError
from .files import _fail
from .records import PIXEL_SIZE_RANGE


def check_pixel_size(pixel_size, source: str = "") -> float:
    """Validate a pixel size in Å, rejecting zero, NaN and values that look like nm, m or pm.

    Parameters
    ----------
    pixel_size : float
        Å.
    source : str
        Where it came from, for the error message.

    Returns
    -------
    float
        Å.
    """
    where = f" for {source}" if source else ""
    try:
        p = float(pixel_size)
    except (TypeError, ValueError):
        _fail(f"pixel size{where} is {pixel_size!r}, not a number; give it in Å, e.g. 0.357")
    if not np.isfinite(p) or p <= 0:
        _fail(f"pixel size{where} is {p}; it must be a positive number of Å, e.g. 0.357")
    lo, hi = PIXEL_SIZE_RANGE
    if p < lo:
        _fail(f"pixel size{where} is {p:g} Å, too small for atomic tomography (nm or m given?); give it in Å, e.g. 0.357")
    if p > hi:
        _fail(f"pixel size{where} is {p:g} Å, too large for atomic tomography (pm given?); give it in Å, e.g. 0.357")
    return p


def _resolve_pixel_size(header_size: Optional[float], given: Optional[float], path: Path, required: bool = True):
    if given is not None:
        given = check_pixel_size(given, str(path))
        if header_size and abs(header_size - given) > 1e-3 * given:
            warnings.warn(
                f"{path}: header pixel size {header_size:g} Å overridden by the given {given:g} Å",
                stacklevel=3,
            )
        return given
    if header_size is None or header_size <= 0:
        if not required:
            return None
        _fail(f"{path} has no pixel size in its header; pass it in Å (e.g. --pixel-size 0.357)")
    try:
        return check_pixel_size(header_size, str(path))
    except AETInputError as exc:
        reason = str(exc).split(";")[0]
        _fail(f"{reason} (read from its header); pass the right value with --pixel-size in Å, e.g. 0.357")


def _check_square_pixels(extra: dict, path: Path, given: Optional[float], axes: str = "xy") -> None:
    """Refuse pixels (voxels) whose header sizes differ between ``axes``: read with the x size
    alone they would stretch the data. A given pixel size overrides the header, with a warning."""
    found = extra.pop("pixel_sizes", None) or {}
    sizes = {a: v for a, v in found.items() if a in axes and v and v > 0}
    if len(sizes) < 2 or max(sizes.values()) <= min(sizes.values()) * (1 + 1e-3):
        return
    listed = ", ".join(f"{a} {v:g} {found.get('unit', 'Å')}" for a, v in sizes.items())
    if given is None:
        _fail(f"{path} has non-square {'voxels' if len(axes) == 3 else 'pixels'} in its header ({listed}); resample "
              "it to equal sizes first (e.g. IMOD newstack or ImageJ Scale), or pass --pixel-size to read it with one")
    warnings.warn(f"{path}: header pixel sizes differ ({listed}); read with the given {given:g} Å along every axis",
                  stacklevel=3)


def _check_values(data: np.ndarray, path, what: str) -> np.ndarray:
    if data.size == 0:
        _fail(f"{what} in {path} has no values (shape {data.shape}); re-export it")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        _fail(f"{what} in {path} has data type {data.dtype}, not real numbers; export real-valued data")
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        _fail(
            f"{what} in {path} has {int(bad.sum())} NaN/Inf values; replace them "
            "(e.g. with 0) before loading"
        )
    return data


# Length units as files and napari name them, in Å (TIFF ImageJ metadata, RosettaSciIO axes,
# napari layer units): the one table every reader and writer converts with.
LENGTH_UNITS_TO_A = {"angstrom": 1.0, "a": 1.0, "\u00c5": 1.0, "\u00e5": 1.0, "\\u00c5": 1.0,
                     "nm": 10.0, "nanometer": 10.0, "pm": 0.01, "picometer": 0.01,
                     "micron": 1e4, "micrometer": 1e4, "um": 1e4, "\u00b5m": 1e4, "\u03bcm": 1e4,
                     "mm": 1e7, "m": 1e10}

"""Tilt angles: found beside a stack, read from text, NumPy or MATLAB files (plain real numbers only, named columns for ambiguous tables), checked in degrees, written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..guards import SIDE_FILE_MAX_BYTES, read_side_file
from .files import _check_readable, _fail, atomic_path
from .mat import _mat_variables, _pick_mat_variable
from .npy import _read_npy
from .records import ANGLE_EXTENSIONS, ANGLE_TEXT_EXTENSIONS, PathLike


def find_angles_file(path: PathLike, include_generic: bool = True) -> Optional[Path]:
    """Angles file beside a tilt series: same stem with .rawtlt/.tlt/.txt/.csv, else ``angles.*``.

    Parameters
    ----------
    path : path
        The tilt series.
    include_generic : bool
        Also accept ``angles.*`` in the same folder.

    Returns
    -------
    Path or None
    """
    path = Path(path)
    generic = [path.parent / f"angles{ext}" for ext in ANGLE_EXTENSIONS] if include_generic else []
    for cand in [path.with_suffix(ext) for ext in (".rawtlt", ".tlt", ".txt", ".csv")] + generic:
        if cand.is_symlink() and not cand.exists():  # the file that looks intended is broken: never skip it silently
            _fail(f"{cand} beside the tilt series is a broken link; fix or remove it, or give the angles with --angles")
        if cand.exists() and cand != path:
            return cand
    return None


# a plain real number as people write one: ASCII digits, one '.', an exponent; no '_' (Python's
# float() reads "1_0" as 10), no NaN/Inf, no other scripts' digits
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.()\-]*")
# headers of a three-column table that say it holds Euler angles
_EULER_HEADERS = {("phi", "theta", "psi"), ("rot", "tilt", "psi"), ("alpha", "beta", "gamma"),
                  ("euler1", "euler2", "euler3")}


def _parse_angle_text(path: Path, column=None) -> np.ndarray:
    """Rows of plain numbers (an optional header row of column names first), one or three a line;
    other widths only with ``column``."""
    rows, header = [], None
    try:
        text = read_side_file(path, "angles file").decode()
    except UnicodeDecodeError:
        _fail(f"angles file {path} is not text; give one angle (or phi theta psi) per line in degrees")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[,\s;]+", line) if p]
        if not parts:
            continue
        if not all(_PLAIN_NUMBER.fullmatch(p) for p in parts):
            if header is None and not rows and all(_HEADER_NAME.fullmatch(p) and not _parses(p) for p in parts):
                header = [p.lower() for p in parts]
                continue
            _fail(f"angles file {path} line {lineno} ({line[:40]!r}) is not plain numbers; give degrees in digits "
                  "with a '.' (no '_', decimal comma, NaN or words), one or three per line")
        rows.append([float(p) for p in parts])
    if not rows:
        _fail(f"angles file {path} has no angles; give one angle (or phi theta psi) per line in degrees")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        _fail(f"angles file {path} mixes lines of {' and '.join(map(str, sorted(widths)))} values; use one form "
              "throughout")
    if header is not None and len(header) != len(rows[0]):
        _fail(f"angles file {path} names {len(header)} columns in its header but has {len(rows[0])} values a line; "
              "make them agree")
    return _pick_angle_columns(np.array(rows, dtype=np.float64), f"angles file {path}", header, column)


def _parses(text: str) -> bool:
    """Python would read it as a number (``nan``, ``inf``, ``1_0``): never a column name."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_index(col: np.ndarray) -> bool:
    """0, 1, 2, ... or 1, 2, 3, ...: a row number, not an angle."""
    return len(col) >= 3 and col[0] in (0.0, 1.0) and bool(np.all(np.diff(col) == 1.0))


def _pick_angle_columns(arr: np.ndarray, source: str, header=None, column=None) -> np.ndarray:
    """One column (tilts) or three (Euler angles) of a table; ``column`` (a header name or a number
    from 1) picks the tilt angles out of any table, and a table that may not be angles needs it."""
    if arr.ndim < 2:
        arr = arr.reshape(-1, 1)
    n = arr.shape[1]
    names = f" ({', '.join(header)})" if header else ""
    if column is not None:
        key = str(column).strip().lower()
        if header and key in header:
            return arr[:, header.index(key)]
        if key.isdigit() and 1 <= int(key) <= n:
            return arr[:, int(key) - 1]
        _fail(f"{source} has no column {column!r}; it has {n}{names}: give --angle-column a header name or a "
              f"number from 1 to {n}")
    if n == 1:
        return arr[:, 0]
    if n == 3 and header is not None and tuple(header) not in _EULER_HEADERS:
        _fail(f"{source} has 3 columns{names}, not phi theta psi; name the tilt-angle column with --angle-column")
    if n == 3 and header is None and _looks_like_index(arr[:, 0]):
        _fail(f"{source} has 3 columns and the first counts {arr[0, 0]:g}, {arr[1, 0]:g}, {arr[2, 0]:g}... (an "
              "index, not Euler angles?); name the tilt-angle column with --angle-column (e.g. 2), or give phi theta psi")
    if n == 3:
        return arr
    _fail(f"{source} has {n} values a line{names}, neither one tilt angle nor phi theta psi (an index, a dose, "
          "decimal commas?); name the tilt-angle column with --angle-column (a header name or a number from 1)")


def _array_angles(arr, source, column=None) -> np.ndarray:
    """Angles from an array (NPY, MAT, given): real numbers; a table's columns picked as from text."""
    arr = _check_real(arr, source)
    if arr.ndim == 2 and 1 not in arr.shape:
        if arr.shape[1] != 3 and arr.shape[0] == 3 and column is None:
            arr = arr.T  # MATLAB users often store Euler angles as 3 x N
        return _pick_angle_columns(arr.astype(np.float64), f"angles from {source}", None, column)
    return arr


def _check_real(arr, source) -> np.ndarray:
    """Angles must be plain real numbers: no complex, text, boolean or object arrays."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        kind = {"c": "complex", "b": "boolean", "U": "text", "S": "text", "O": "object", "V": "structured"}
        _fail(f"angles from {source} are {kind.get(arr.dtype.kind, str(arr.dtype))} values ({arr.dtype}), not plain "
              "real numbers; save real angles in degrees")
    return arr


def _normalize_angles(arr: np.ndarray, source) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim == 2 and arr.shape[1] != 3 and arr.shape[0] == 3:
        arr = arr.T  # MATLAB users often store Euler angles as 3 x N
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 3)):
        _fail(f"angles from {source} have shape {arr.shape}; give N tilt angles or an N x 3 table of Euler angles")
    if arr.shape[0] == 0:
        _fail(f"angles from {source} are empty; give one angle per projection")
    if not np.all(np.isfinite(arr)):
        _fail(f"angles from {source} contain NaN/Inf; give finite angles in degrees")
    return arr


def check_angles_in_degrees(angles: np.ndarray, source="angles") -> None:
    """Reject angles that look like radians (all within ±π/2 for tilts, ±2π for Euler)."""
    a = np.asarray(angles, dtype=np.float64)
    if a.size < 3:
        return
    biggest = float(np.max(np.abs(a)))
    limit = np.pi / 2 + 0.05 if a.ndim == 1 else 2 * np.pi + 0.01
    if biggest <= limit and float(np.ptp(a)) > 0.2:
        _fail(
            f"angles from {source} look like radians (largest |angle| {biggest:.4g}); give degrees "
            f"(multiply by 57.2958) or state the unit as radians (--angle-units rad)"
        )


def read_angles(source, units: str = "deg", variable=None, column=None) -> np.ndarray:
    """Read tilt angles (N,) or Z-Y-Z Euler angles (N, 3) in degrees.

    ``source`` is a file (``.txt``/``.csv``/``.rawtlt``/``.tlt``: one value or three per line,
    plain numbers, optionally under a header row of column names; ``.npy``; ``.mat``) or an
    array of real numbers. ``units`` is ``'deg'`` (checked against radians) or ``'rad'``. A
    table of 2 or more than 3 columns, a 3-column one whose header is not ``phi theta psi``
    or whose first column counts 0, 1, 2, ... is read only with ``column``.

    Parameters
    ----------
    source : path or array
    units : {"deg", "rad"}
    variable : str, optional
        Variable name in a ``.mat`` file.
    column : str or int, optional
        The tilt-angle column of a table: a header name or a number from 1.

    Returns
    -------
    (N,) or (N, 3) array
        Degrees.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_readable(path, "angles", SIDE_FILE_MAX_BYTES)
        ext = path.suffix.lower()
        label = str(path)
        if ext in ANGLE_TEXT_EXTENSIONS or ext == "":
            arr = _parse_angle_text(path, column)
        elif ext == ".npy":
            arr = _array_angles(_read_npy(path)[0], label, column)
        elif ext == ".mat":
            arr = _array_angles(_pick_mat_variable(
                path, _mat_variables(path), (1, 2), ("angles", "tilt_angles", "tiltangles", "angle", "eulerangles"), "angles", variable
            ), label, column)
        else:
            _fail(f"{path}: unknown angles file type {ext}; use {', '.join(ANGLE_EXTENSIONS)}")
    else:
        label = "the given array"
        arr = _array_angles(source, label, column)
    arr = _normalize_angles(arr, label)
    if units == "rad":
        return np.rad2deg(arr)
    if units != "deg":
        _fail(f"angle units {units!r} unknown; use 'deg' or 'rad'")
    check_angles_in_degrees(arr, label)
    return arr


def write_angles(path: PathLike, angles) -> None:
    """Write angles in degrees, one (or phi theta psi) per line, atomically.

    Parameters
    ----------
    path : path
    angles : (N,) or (N, 3) array
        Degrees.
    """
    a = np.asarray(angles, dtype=np.float64)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, a.reshape(a.shape[0], -1), fmt="%.6f")

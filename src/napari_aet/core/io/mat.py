"""MATLAB .mat files (v5 through the header-first reader, v7.3 through h5py): the variable picked by name or shape before any data is read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..guards import check_hdf5_self_contained, check_read_size
from .files import _fail, _first_line


def _mat_variables(path: Path) -> dict:
    """Numeric variables of a MAT file from its headers alone (v4 and v5 through :mod:`._mat5`,
    v7.3/HDF5 through h5py; no data read): name -> (MATLAB shape, bytes per value, ...)."""
    import h5py

    if h5py.is_hdf5(path):
        check_hdf5_self_contained(path, "MAT v7.3 file")
        out = {}
        try:
            with h5py.File(path, "r") as f:

                def visit(name, obj):
                    if isinstance(obj, h5py.Dataset) and not name.startswith("#") and np.issubdtype(obj.dtype, np.number):
                        # HDF5 holds MATLAB's column-major array with its axes reversed.
                        out[name] = (tuple(reversed(obj.shape)), obj.dtype.itemsize)
                f.visititems(visit)
        except Exception as exc:
            _fail(f"cannot read {path} as MAT v7.3 (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")
        return out
    import scipy.io

    from .. import _mat5

    try:
        version = scipy.io.matlab.matfile_version(path)[0]
        # headers only, never a decoy's data (scipy's whosmat inflates compressed ones to skip them)
        return _mat5.variables(path) if version == 1 else _mat5.variables_v4(path)
    except Exception as exc:
        _fail(f"cannot read {path} as a MAT file (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")


def _load_mat_variable(path: Path, variables: dict, name: str, what: str) -> np.ndarray:
    """One variable of a MAT file, after its header-given size is checked against memory; the
    others are never read."""
    import h5py

    shape, itemsize = variables[name][:2]
    check_read_size(shape, itemsize, path, f"the {what} variable {name!r}")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return np.asarray(f[name][()]).T
        from .. import _mat5

        return _mat5.load(path, name, variables[name])
    except Exception as exc:
        _fail(f"cannot read variable {name!r} of {path} (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")


def _pick_mat_variable(path: Path, variables: dict, ndims: Sequence[int], names: Sequence[str], what: str, variable=None):
    """The array of the variable named, or of the one variable shaped like ``what`` (by name among several)."""
    if variable is not None:
        if variable not in variables:
            _fail(f"{path} has no numeric variable {variable!r}; it has: {', '.join(variables) or 'none'}")
        return _load_mat_variable(path, variables, variable, what)
    candidates = [k for k, (shape, *_) in variables.items()
                  if sum(d != 1 for d in shape) in ndims or len(shape) in ndims]
    for name in names:
        for k in candidates:
            if k.lower() == name:
                return _load_mat_variable(path, variables, k, what)
    if len(candidates) == 1:
        return _load_mat_variable(path, variables, candidates[0], what)
    if not candidates:
        _fail(f"{path} holds no {what}-shaped numeric variable; save the {what} as one array")
    _fail(f"{path} holds several possible {what} variables ({', '.join(candidates)}); name the one to use in the file (keep only that variable, or rename it 'tilts' / 'angles')")


def _read_mat_stack(path: Path, variable=None):
    variables = _mat_variables(path)
    data = _pick_mat_variable(
        path, variables, (3,), ("tilts", "tilt_series", "projections", "proj", "projs", "data"), "tilt series", variable
    )
    return np.asarray(data), None, {}

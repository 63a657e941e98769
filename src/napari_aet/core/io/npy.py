"""NumPy .npy arrays: shape and dtype from the header before the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..guards import check_read_size
from .files import _fail, _first_line


def _npy_layout(path: Path):
    """Shape, dtype and data offset from an NPY file's header alone."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, _, dtype = fmt._read_array_header(f, version)
        return shape, dtype, f.tell()


def _read_npy(path: Path, what: str = "array"):
    try:
        shape, dtype, offset = _npy_layout(path)
    except Exception as exc:
        _fail(f"cannot read {path} as NPY (not an NPY file, or a damaged header: {_first_line(exc)}); save a plain "
              "array with numpy.save")
    if not dtype.hasobject:
        need, have = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
        if need > have:
            _fail(f"cannot read {path} as NPY (truncated or corrupt: its header gives {shape} values of {dtype}, {need:,} bytes, "
                  f"but the file has {have:,}); save it again with numpy.save")
        check_read_size(shape, dtype.itemsize, path, f"a {what}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        _fail(f"cannot read {path} as NPY (truncated or corrupt, or pickled objects: {_first_line(exc)}); save a plain array with numpy.save")
    return np.asarray(data), None, {}

"""MRC stacks and volumes (.mrc, .st, .ali, .rec, .map): layout and size from the header before the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..guards import check_read_size
from .files import _fail, _first_line


def _mrc_layout(path: Path):
    """Data shape, dtype and extended-header bytes from an MRC file's 1024-byte header alone, or
    None where the header cannot say (mrcfile then reports the problem)."""
    import mrcfile.utils as mu
    from mrcfile.dtypes import HEADER_DTYPE

    with open(path, "rb") as f:
        raw = f.read(HEADER_DTYPE.itemsize)
    if len(raw) < HEADER_DTYPE.itemsize:
        return None
    try:
        order = mu.byte_order_from_machine_stamp(np.frombuffer(raw, dtype=HEADER_DTYPE)[0]["machst"])
    except ValueError:
        order = "<"
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order)).reshape(()).view(np.recarray)
    try:
        dtype, shape = mu.data_dtype_from_header(header), mu.data_shape_from_header(header)
    except (ValueError, ZeroDivisionError):
        return None
    return shape, dtype, int(header.nsymbt)


def _check_mrc_size(path: Path, what: str) -> None:
    """Refuse, from the header alone, an MRC file shorter than its header says or too big for memory."""
    layout = _mrc_layout(path)
    if layout is None:
        return
    shape, dtype, ext = layout
    if min(shape) < 0 or ext < 0:
        _fail(f"cannot read {path} as MRC (its header gives a negative size: {shape}, extended header {ext} bytes); "
              "re-export the file")
    need, have = 1024 + ext + math.prod(shape) * dtype.itemsize, path.stat().st_size
    if need > have:
        _fail(f"cannot read {path} as MRC (truncated or corrupt: its header describes {'x'.join(map(str, shape))} values of "
              f"{dtype} and {ext} bytes of extended header, {need:,} bytes, but the file has {have:,}); re-export the file")
    check_read_size(shape, dtype.itemsize, path, f"a {what}")


def _read_mrc(path: Path, what: str = "stack"):
    import mrcfile

    _check_mrc_size(path, what)
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            data = np.array(mrc.data)
            vx, vy, vz = (float(v) for v in (mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z))
            ispg = int(mrc.header.ispg)
            mz = int(mrc.header.mz)
    except Exception as exc:  # mrcfile raises ValueError/OSError on corrupt files
        _fail(f"cannot read {path} as MRC (truncated or corrupt: {_first_line(exc)}); re-export the file")
    stack = ispg == 0 and data.ndim == 3
    # MRC2014 marks an image stack by space group 0 with mz = 1; IMOD's older tomograms use
    # space group 0 too, but with mz = nz
    return data, (vx if vx > 0 else None), {"mrc_is_stack": stack, "mrc_image_stack": stack and mz == 1,
                                            "pixel_sizes": {"x": vx, "y": vy, "z": vz}}

"""MAT v5 (MATLAB's default before v7.3) and v4 files read header first: every variable's name, class and
shape from its tag, decompressing no more than its first 64 KiB, and one variable's data read
alone, decompressed no further than its header-given size.

scipy.io.whosmat and loadmat(variable_names=...) decompress each compressed variable 128 KiB of
input at a time to skip it: zeros expand 1000-fold, so a small file with a large zero decoy
passes hundreds of MB through memory before the variable asked for is reached.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
# mxCLASS codes of numeric arrays and their bytes per value
_CLASS_BYTES = {6: 8, 7: 4, 8: 1, 9: 1, 10: 2, 11: 2, 12: 4, 13: 4, 14: 8, 15: 8}
_HEADER_SLACK = 1 << 16  # tags, flags, dimensions and name of one variable: far less than this


def _sub(buf: bytes, pos: int, order: str):
    """One sub-element of a variable (small-element form included): (type, payload, next position)."""
    mdtype, nbytes = struct.unpack_from(order + "II", buf, pos)
    if mdtype >> 16:  # small data element: up to 4 bytes inside the tag
        return mdtype & 0xFFFF, buf[pos + 4:pos + 4 + (mdtype >> 16)], pos + 8
    end = pos + 8 + nbytes
    if end > len(buf):
        raise ValueError("a variable header runs past its data")
    return mdtype, buf[pos + 8:end], pos + 8 + -(-nbytes // 8) * 8


def _matrix_header(buf: bytes, order: str):
    """(name, class, complex or logical flags, shape) of a miMATRIX element's first bytes."""
    mdtype, _ = struct.unpack_from(order + "II", buf, 0)
    if mdtype != _MI_MATRIX:
        return None
    kind, flags, pos = _sub(buf, 8, order)
    kind_d, dims, pos = _sub(buf, pos, order)
    kind_n, name, pos = _sub(buf, pos, order)
    if (kind, kind_d, kind_n) != (_MI_UINT32, _MI_INT32, _MI_INT8):
        return None
    word = struct.unpack_from(order + "I", flags)[0]
    shape = struct.unpack(order + f"{len(dims) // 4}i", dims)
    return name.decode("latin1"), word & 0xFF, word & 0x0A00, tuple(shape), pos


# miTYPE codes a numeric array's values may be stored as, with their bytes per value
_MI_BYTES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}


def _check_values(element: bytes, order: str) -> None:
    """The stored values of a numeric variable are of a known type and as many as its shape:
    scipy's parser is handed nothing else (it crashes on some damaged variables)."""
    info = _matrix_header(element, order)
    if info is None:
        raise ValueError("not a numeric array")
    _, _, flags, shape, pos = info
    for _ in range(2 if flags & 0x0800 else 1):  # the real part, then the imaginary one
        if pos + 8 > len(element):
            raise ValueError("its values are missing")
        kind, values, pos = _sub(element, pos, order)
        if kind not in _MI_BYTES or len(values) != math.prod(shape) * _MI_BYTES[kind]:
            raise ValueError(f"it stores {len(values)} bytes of type {kind} for a {'x'.join(map(str, shape))} array")


def variables(path: Path) -> dict:
    """Numeric variables of a MAT v5 file from their headers; no variable's data is read.

    Parameters
    ----------
    path : Path

    Returns
    -------
    dict
        name -> (MATLAB shape, bytes per value, (offset, length, compressed) of its element).
    """
    out, size = {}, Path(path).stat().st_size
    with open(path, "rb") as f:
        head = f.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            raise ValueError("no MAT v5 header")
        order = "<" if head[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            f.seek(pos)
            mdtype, nbytes = struct.unpack(order + "II", f.read(8))
            if pos + 8 + nbytes > size:
                raise ValueError(f"the variable at byte {pos} claims {nbytes:,} bytes, past the file's end")
            if mdtype == _MI_COMPRESSED:
                first = zlib.decompressobj().decompress(f.read(min(nbytes, _HEADER_SLACK)), _HEADER_SLACK)
            else:
                first = struct.pack(order + "II", mdtype, nbytes) + f.read(min(nbytes, _HEADER_SLACK))
            info = _matrix_header(first, order)
            if info is not None:
                name, cls, flags, shape, _ = info
                if cls in _CLASS_BYTES and not flags & 0x0200 and not name.startswith("__"):
                    out[name] = (shape, _CLASS_BYTES[cls] * (2 if flags & 0x0800 else 1),
                                 (pos, 8 + nbytes, mdtype == _MI_COMPRESSED))
            pos += 8 + nbytes
    return out


_V4_BYTES = {0: 8, 1: 4, 2: 4, 3: 2, 4: 2, 5: 1}  # MAT v4 precision code -> bytes per value


def _v4_header(head: bytes) -> tuple:
    """(mopt, rows, cols, imag, name length) of a MAT v4 variable, in whichever byte order reads sense."""
    for order in "<>":
        mopt, rows, cols, imag, namlen = struct.unpack(order + "5i", head)
        if 0 <= mopt < 5000 and mopt // 100 % 10 == 0 and mopt // 10 % 10 in _V4_BYTES and mopt % 10 <= 2:
            if min(rows, cols, namlen) >= 0 and imag in (0, 1):
                return mopt, rows, cols, imag, namlen
    raise ValueError("a variable header that is neither byte order's MAT v4")


def variables_v4(path: Path) -> dict:
    """Numeric variables of a MAT v4 file from their headers, each checked to end inside the file
    before its name is read.

    Parameters
    ----------
    path : Path

    Returns
    -------
    dict
        name -> (shape, bytes per value, (offset, length, False, 4)), as :func:`variables`.
    """
    out, size, pos = {}, Path(path).stat().st_size, 0
    with open(path, "rb") as f:
        while pos + 20 <= size:
            f.seek(pos)
            mopt, rows, cols, imag, namlen = _v4_header(f.read(20))
            itemsize = _V4_BYTES[mopt // 10 % 10] * (2 if imag else 1)
            end = pos + 20 + namlen + rows * cols * itemsize
            if end > size:
                raise ValueError(f"the variable at byte {pos} claims {end - size:,} bytes past the file's end")
            name = f.read(namlen).rstrip(b"\0").decode("latin1")
            if mopt % 10 == 0 and not name.startswith("__"):
                out[name] = ((rows, cols), itemsize, (pos, end - pos, False, 4))
            pos = end
    return out


def load(path: Path, name: str, entry: tuple):
    """The array of one variable listed by :func:`variables`, its compressed data inflated no
    further than its header-given size allows.

    Parameters
    ----------
    path : Path
    name : str
    entry : tuple
        The variable's entry from :func:`variables`.

    Returns
    -------
    ndarray
    """
    import numpy as np
    import scipy.io

    shape, itemsize, (offset, length, compressed, *version) = entry
    with open(path, "rb") as f:
        head = f.read(128) if not version else b""  # a v4 variable is a file of its own
        f.seek(offset)
        element = f.read(length)
    if compressed:
        order = "<" if head[126:128] == b"IM" else ">"
        limit = 2 * math.prod(shape) * itemsize + _HEADER_SLACK
        inner = zlib.decompressobj().decompress(element[8:], limit)
        mdtype, nbytes = struct.unpack_from(order + "II", inner, 0)
        if mdtype != _MI_MATRIX or len(inner) < 8 + nbytes:
            raise ValueError(f"variable {name!r} holds less or more data than its header says")
        element = inner[:8 + nbytes]
    if not version:
        _check_values(element, "<" if head[126:128] == b"IM" else ">")
    return np.asarray(scipy.io.loadmat(io.BytesIO(head + element), variable_names=[name])[name])

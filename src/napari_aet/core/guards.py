"""Checks made before an input's bytes are read: what a file is, where its data lives, how big it is.

* Side files (angles, SerialEM ``.mdoc``, sidecar JSON, anything found beside a stack) are read
  only when they are regular files (after links) under :data:`SIDE_FILE_MAX_BYTES`: a FIFO
  would block forever, a link to ``/dev/zero`` would read until memory runs out.
* HDF5 files (MAT v7.3, Velox/EMD, ``.h5``) are read only when every dataset keeps its bytes
  inside the file: external storage, virtual datasets and external links would copy bytes of
  other files on disk into the outputs.
* Array sizes are decided from headers and checked against the memory this process may use
  before any data is read (:func:`check_read_size`).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Optional, Sequence

from .errors import AETInputError

__all__ = ["SIDE_FILE_MAX_BYTES", "check_regular_file", "read_side_file", "check_hdf5_self_contained",
           "check_read_size"]

# an angles table, an mdoc or a sidecar of a few thousand projections is well under 1 MiB
SIDE_FILE_MAX_BYTES = 64 * 2**20

# per value read, beyond the file's own dtype: the float32 copy, the finite-values mask and the
# contiguous copy a tilt series or volume goes through on its way in
_BYTES_PER_VALUE_AFTER_READ = 9


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check_stat(st: os.stat_result, path: Path, what: str, max_bytes: Optional[int]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise AETInputError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file (links are followed); "
                            "give a plain file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise AETInputError(f"{what} {path} is {st.st_size / 2**20:.1f} MiB, over the "
                            f"{max_bytes / 2**20:.0f} MiB limit for one; give the right file")


def check_regular_file(path, what: str = "file", max_bytes: Optional[int] = None) -> os.stat_result:
    """Refuse a path that is not a regular file after following links (a FIFO, a device such as
    ``/dev/zero``, a socket, a folder) or is larger than ``max_bytes``, without opening it.

    Parameters
    ----------
    path : path
    what : str
        What the file is, for the message ("angles file", "SerialEM mdoc").
    max_bytes : int, optional
        Size cap; None for none.

    Returns
    -------
    os.stat_result
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AETInputError(f"{what} {path} does not exist (or is a broken link); check the path") from None
    except OSError as exc:
        raise AETInputError(f"cannot read {what} {path} ({exc.strerror or exc}); check the path") from None
    _check_stat(st, path, what, max_bytes)
    return st


def read_side_file(path, what: str = "side file", max_bytes: int = SIDE_FILE_MAX_BYTES) -> bytes:
    """The bytes of a small side file (angles, mdoc, sidecar JSON), read only when it is a regular
    file under ``max_bytes``: checked before opening, and again on the open file, so a path
    swapped for a FIFO in between still cannot block.

    Parameters
    ----------
    path : path
    what : str
        What the file is, for the message.
    max_bytes : int
        Size cap.

    Returns
    -------
    bytes
    """
    path = Path(path)
    check_regular_file(path, what, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise AETInputError(f"cannot read {what} {path} ({exc.strerror or exc}); check the path") from None
    try:
        _check_stat(os.fstat(fd), path, what, max_bytes)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > max_bytes:
        raise AETInputError(f"{what} {path} grew past {max_bytes / 2**20:.0f} MiB while being read; give a finished file")
    return b"".join(chunks)


def _outside(f, name: str, kind: str, target: str) -> AETInputError:
    where = f" in {target}" if target else ""
    return AETInputError(f"{f.filename} keeps the data of /{name} outside itself ({kind}{where}); external storage, "
                         "virtual datasets and external links are not read: save the data inside the file")


def _check_dataset(f, name: str, dset) -> None:
    if dset.external:
        raise _outside(f, name, "HDF5 external storage", str(dset.external[0][0]))
    if dset.is_virtual:
        sources = dset.virtual_sources()
        raise _outside(f, name, "a virtual dataset", sources[0].file_name if sources else "")


def check_hdf5_self_contained(path, what: str = "file") -> None:
    """Refuse an HDF5 file (MAT v7.3, Velox/EMD, ``.h5``) any of whose datasets keeps its bytes
    outside it: external storage, virtual datasets, external or user-defined links. Walks every
    link from the root before a byte of data is read; does nothing for a file that is not HDF5.

    Parameters
    ----------
    path : path
    what : str
        What the file is, for the message of an unreadable file.
    """
    import h5py

    path = Path(path)
    if not h5py.is_hdf5(path):
        return
    try:
        with h5py.File(path, "r") as f:
            seen, todo = set(), [("", f)]
            while todo:
                prefix, group = todo.pop()
                for key in group:
                    name = f"{prefix}{key}"
                    link = group.get(key, getlink=True)
                    if isinstance(link, h5py.ExternalLink):
                        raise _outside(f, name, "an external link", link.filename)
                    if isinstance(link, h5py.SoftLink):
                        continue  # a path inside this file; its target is walked through its own link
                    if not isinstance(link, h5py.HardLink):
                        raise _outside(f, name, "a user-defined link", "")
                    obj = group.get(key)
                    if obj is None or obj.id in seen:
                        continue
                    seen.add(obj.id)
                    if isinstance(obj, h5py.Dataset):
                        _check_dataset(f, name, obj)
                    elif isinstance(obj, h5py.Group):
                        todo.append((f"{name}/", obj))
    except AETInputError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError on damaged files
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AETInputError(f"cannot read {what} {path} as HDF5 (truncated or corrupt: {text}); re-export it") from None


def check_read_size(shape: Sequence[int], itemsize: int, path, what: str,
                    per_value: int = _BYTES_PER_VALUE_AFTER_READ) -> int:
    """Refuse an array whose header-given size does not fit in the memory this process may use
    (:func:`napari_aet.core.validate.available_memory`), before any of its data is read.

    Parameters
    ----------
    shape : sequence of int
        The shape the file's header gives.
    itemsize : int
        Bytes per value in the file.
    path : path
    what : str
        What the array is ("tilt series", "variable 'tilts'"), for the message.
    per_value : int
        Further bytes per value the reading needs (conversion to float32, checks, copies).

    Returns
    -------
    int
        The bytes the reading needs.
    """
    from .validate import available_memory

    n = math.prod(int(s) for s in shape)
    need = n * (int(itemsize) + int(per_value))
    have = available_memory("cpu")
    if need > 0.9 * have:
        dims = "x".join(str(int(s)) for s in shape)
        raise AETInputError(f"{path}: its header gives {what} of {dims} values, which needs about {need / 2**30:.1f} GiB "
                            f"to read, but this process has {have / 2**30:.1f} GiB available; crop or bin it first, "
                            "or check the file is not damaged")
    return need

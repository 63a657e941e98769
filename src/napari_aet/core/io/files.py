"""Files: one-line errors, atomic writes that follow the umask, strict JSON, and sidecars (checked against their schemas, :mod:`napari_aet.core.schemas`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import AETInputError
from ..guards import check_regular_file, read_side_file
from ..locks import check_not_input, note_input
from .records import PathLike


def _fail(message: str) -> None:
    raise AETInputError(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_readable(path: Path, what: str, max_bytes: Optional[int] = None) -> None:
    note_input(path)  # an input of the running command: no output may replace it
    if not path.exists():
        _fail(f"{what} file {path} does not exist; check the path")
    if path.is_dir():
        _fail(f"{what} path {path} is a folder; give a file")
    # a FIFO would block, a link to /dev/zero would read until memory runs out
    if check_regular_file(path, f"{what} file", max_bytes).st_size == 0:
        _fail(f"{what} file {path} is empty (0 bytes); re-export it")


_UMASK_LOCK = threading.Lock()
def _umask() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Parameters
    ----------
    path : path
        The file to write.

    Yields
    ------
    Path
        A temporary name in the same folder (removed when the block fails).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        _fail(f"output folder {path.parent} does not exist; create it first")
    check_not_input([path])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    with contextlib.suppress(OSError):  # mkstemp makes 0600; a result file follows the umask like any other
        os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _strict(o):
    """NaN/Inf become null: JSON has no such numbers, and strict readers refuse them."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if isinstance(o, (np.ndarray, np.floating, np.integer, np.bool_, Path)):
        return _strict(_json_default(o))
    return o


def write_json(path: PathLike, obj) -> None:
    """Write ``obj`` as indented, strict JSON (NaN/Inf as null), atomically.

    Parameters
    ----------
    path : path
    obj : JSON-serialisable object (numpy values converted)
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_strict(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_sidecar(side: PathLike, kind: Optional[str] = None) -> dict:
    """The JSON object in a sidecar file; one-line errors for invalid JSON, a non-object or,
    with ``kind``, a field of the wrong type (:mod:`napari_aet.core.schemas`).

    Parameters
    ----------
    side : path
        ``.json``.
    kind : str, optional
        The file's schema: ``volume``, ``atoms``, ``report``, ``weights`` or ``progress``.

    Returns
    -------
    dict
    """
    side = Path(side)
    note_input(side)
    try:
        info = json.loads(read_side_file(side, "sidecar").decode())
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read sidecar {side} ({_first_line(exc)}); fix or remove it")
    except json.JSONDecodeError as exc:
        _fail(f"sidecar {side} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or remove it")
    if not isinstance(info, dict):
        _fail(f"sidecar {side} holds a JSON {type(info).__name__}, not an object; fix or remove it")
    if kind is not None:
        from ..schemas import check

        check(info, kind, str(side))
    return info


def sidecar_owner(side: PathLike) -> Optional[str]:
    """The data file a sidecar JSON belongs to (its ``data_file``), None when it does not say.

    Parameters
    ----------
    side : path

    Returns
    -------
    str or None
    """
    try:
        info = json.loads(read_side_file(side, "sidecar").decode())
    except (AETInputError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    owner = info.get("data_file") if isinstance(info, dict) else None
    return owner if isinstance(owner, str) else None


def atoms_metadata_path(path: PathLike) -> Path:
    """The JSON sidecar of an atoms table (crystal rotation, lattice, settings).

    Parameters
    ----------
    path : path
        The atoms table.

    Returns
    -------
    Path
        ``<stem>.json`` beside it.
    """
    return Path(path).with_suffix(".json")

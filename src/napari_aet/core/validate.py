"""Checks every stage runs on its inputs before any work starts, and on its outputs before
anything is written.

Each check raises :class:`~napari_aet.core.errors.AETInputError` with one line that names the
value, what was expected and how to fix it. Memory checks take the process's real limits into
account (cgroup limits of containers and batch schedulers, ``ulimit -v``), not only the free
memory of the machine.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import AETInputError

__all__ = [
    "check_number",
    "check_int",
    "check_direction",
    "check_finite_output",
    "check_tilt_signal",
    "check_angle_values",
    "available_memory",
    "check_memory",
    "check_not_same_file",
]


def _fail(message: str) -> None:
    raise AETInputError(message)


def check_number(value, name: str, lo: Optional[float] = None, hi: Optional[float] = None, unit: str = "",
                 lo_open: bool = False, hint: str = "") -> float:
    """A finite float in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``); ``name`` as the user knows it.

    Parameters
    ----------
    value : number
    name : str
    lo, hi : float, optional
    unit : str
    lo_open : bool
    hint : str
        Appended to the message.

    Returns
    -------
    float
    """
    u = f" {unit}" if unit else ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        _fail(f"{name} is {value!r}, not a number; give a number{u}")
    if not math.isfinite(v):
        _fail(f"{name} is {v}; give a finite number{u}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        bound = f"above {lo:g}" if lo_open else f"at least {lo:g}"
        _fail(f"{name} is {v:g}{u}; it must be {bound}{u}{hint}")
    if hi is not None and v > hi:
        _fail(f"{name} is {v:g}{u}; it must be at most {hi:g}{u}{hint}")
    return v


def check_int(value, name: str, lo: Optional[int] = None, hi: Optional[int] = None, hint: str = "") -> int:
    """An integer in ``[lo, hi]``.

    Parameters
    ----------
    value : number
    name : str
    lo, hi : int, optional
    hint : str

    Returns
    -------
    int
    """
    try:
        f = float(value)
    except (TypeError, ValueError):
        _fail(f"{name} is {value!r}, not a whole number; give an integer")
    if not math.isfinite(f) or f != int(f):
        _fail(f"{name} is {value!r}, not a whole number; give an integer")
    v = int(f)
    if lo is not None and v < lo:
        _fail(f"{name} is {v}; it must be at least {lo}{hint}")
    if hi is not None and v > hi:
        _fail(f"{name} is {v}; it must be at most {hi}{hint}")
    return v


def check_direction(vector: Sequence[float], name: str) -> np.ndarray:
    """A finite, non-zero 3-vector, returned normalised.

    Parameters
    ----------
    vector : (3,) sequence
    name : str

    Returns
    -------
    (3,) array
    """
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        _fail(f"{name} is {list(v)}; give three finite numbers X Y Z")
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        _fail(f"{name} is the zero vector; give a direction, e.g. 0 0 -1")
    return v / n


def check_finite_output(array, what: str, fix: str = "") -> np.ndarray:
    """Refuse to write an output holding NaN/Inf (or nothing but zeros, for volumes).

    Parameters
    ----------
    array : array
    what : str
        What it is, for the message.
    fix : str
        What to do, for the message.

    Returns
    -------
    array
        ``array``, unchanged.
    """
    a = np.asarray(array)
    if a.dtype.kind in "fc":
        bad = ~np.isfinite(a)
        if bad.any():
            _fail(f"{what} has {int(bad.sum())} NaN/Inf values and was not written; "
                  f"{fix or 'check the input and settings'}")
        biggest = float(np.abs(a).max()) if a.size else 0.0
        if biggest > 1e20:
            _fail(f"{what} holds values up to {biggest:.3g}, which no measurement gives, and was not written; "
                  f"{fix or 'check the input and settings'}")
    return a


def check_tilt_signal(data: np.ndarray, source: str = "tilt series") -> None:
    """A HAADF tilt series must carry positive signal: refuse all-zero and sign-flipped stacks.

    Background-subtracted data may dip below zero, so only a series whose positive part is
    smaller than its negative part counts as negated.

    Parameters
    ----------
    data : (n_angles, nv, nu) array
    source : str
    """
    d = np.asarray(data)
    pos = float(np.clip(d, 0, None).sum(dtype=np.float64))
    neg = float(-np.clip(d, None, 0).sum(dtype=np.float64))
    if pos == 0 and neg == 0:
        _fail(f"{source} is zero everywhere: nothing to reconstruct; check the file and its export")
    if pos < neg:
        _fail(f"{source} is mostly negative ({neg / (pos + neg):.0%} of its signal): HAADF intensities are "
              "positive, so it looks inverted or has an offset; multiply by -1 or subtract the vacuum level")
    if pos <= 1e-30:
        _fail(f"{source} has no positive signal; check the file and its export")


# Euler angles are wrapped into (-360, 360] degrees by nobody; larger values are typos or units.
ANGLE_LIMIT_DEG = 360.0


def check_angle_values(angles, source: str = "angles") -> np.ndarray:
    """Tilt angles (N,) within ±180° (a half- or full-turn series, as on-axis holders record, is
    valid) or Euler angles (N, 3) within ±360° (θ within ±180°), not all the same direction: a
    tilt series needs at least two.

    Parameters
    ----------
    angles : (N,) or (N, 3) array
        Degrees.
    source : str

    Returns
    -------
    array
    """
    a = np.asarray(angles, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        _fail(f"{source} are empty or not finite; give one finite angle in degrees per projection")
    if a.ndim == 1:
        big = float(np.abs(a).max())
        if big > 180.0:
            _fail(f"{source} reach {big:g}°; single-axis tilts lie within ±180°; give degrees in that range "
                  "(or Euler angles as three columns phi theta psi)")
        spread = float(np.abs(np.sin(np.radians(a - a[0]))).max())  # t and t + 180° see one direction
        spread = float(np.degrees(np.arcsin(min(spread, 1.0))))
    else:
        big = float(np.abs(a).max())
        if big > ANGLE_LIMIT_DEG:
            _fail(f"{source} reach {big:g}°; give Euler angles within ±360° (degrees, not another unit)")
        if float(np.abs(a[:, 1]).max()) > 180.0:
            _fail(f"{source}: theta reaches {float(np.abs(a[:, 1]).max()):g}°; the tilt angle theta lies within ±180°")
        from .geometry import euler_zyz_matrix

        # directions of the beam in the sample frame: all projections along one line see one view
        beams = np.stack([euler_zyz_matrix(*row)[:, 2] for row in a])
        spread = float(np.degrees(np.arccos(np.clip(np.abs(beams @ beams[0]), -1, 1))).max())
    if len(a) > 1 and spread < 1e-3:
        _fail(f"{source} are all the same direction; a tilt series needs projections at different tilts "
              "(check the angles file or its column)")
    return a


# ----------------------------------------------------------------------------- memory


def _cgroup_limit() -> Optional[int]:
    """Bytes this process may still use under its cgroup (v2 or v1), or None without one."""
    candidates = [
        (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
        (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
    ]
    for limit_file, usage_file in candidates:
        try:
            raw = limit_file.read_text().strip()
        except OSError:
            continue
        if raw == "max" or not raw.isdigit():
            return None
        limit = int(raw)
        if limit >= 1 << 60:  # v1 reports "no limit" as a huge number
            return None
        try:
            used = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            used = 0
        return max(0, limit - used)
    return None


def _address_space_limit() -> Optional[int]:
    """Bytes left under ``ulimit -v`` (RLIMIT_AS) on POSIX; None where unlimited or unknown."""
    if sys.platform.startswith("win"):
        return None
    try:
        import resource
    except ImportError:  # pragma: no cover
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft in (resource.RLIM_INFINITY, -1):
        return None
    try:
        import psutil

        used = psutil.Process(os.getpid()).memory_info().vms
    except Exception:  # pragma: no cover
        used = 0
    return max(0, int(soft) - int(used))


def available_memory(device="cpu") -> int:
    """Bytes the work may still allocate on ``device``: free GPU memory for CUDA; for the
    CPU the smallest of free RAM, the cgroup's headroom and the ``ulimit -v`` headroom.

    Parameters
    ----------
    device : str or torch.device

    Returns
    -------
    int
        Bytes.
    """
    dev_type = getattr(device, "type", str(device))
    if dev_type.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    limits = [int(psutil.virtual_memory().available)]
    for extra in (_cgroup_limit(), _address_space_limit()):
        if extra is not None:
            limits.append(extra)
    return min(limits)


def check_memory(need_bytes: float, what: str, fix: str, device="cpu", share: float = 0.9) -> None:
    """Refuse work that needs more than ``share`` of the memory this process may still use.

    Parameters
    ----------
    need_bytes : float
    what : str
    fix : str
        What to do instead, for the message.
    device : str or torch.device
    share : float
    """
    have = available_memory(device)
    if need_bytes > share * have:
        dev_type = getattr(device, "type", str(device))
        _fail(f"{what} needs about {need_bytes / 2**30:.1f} GiB but {dev_type} has {have / 2**30:.1f} GiB "
              f"available to this process; {fix}")


# ------------------------------------------------------------------------------ files


def check_not_same_file(output, inputs: Sequence, what: str = "output") -> None:
    """Refuse an output path that is one of the inputs (or a link to one).

    Parameters
    ----------
    output : path
    inputs : sequence of paths
    what : str
    """
    out = Path(output)
    for inp in inputs:
        if inp is None:
            continue
        p = Path(inp)
        same = False
        try:
            same = out.exists() and p.exists() and os.path.samefile(out, p)
        except OSError:
            same = False
        if same or out.resolve() == p.resolve():
            _fail(f"{what} {out} is the input {p}; writing there would destroy the input: choose another name")

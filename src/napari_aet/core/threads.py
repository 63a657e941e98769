"""How many threads torch, OpenMP and BLAS may use: sized once, at start, from the CPUs this
process may run on (affinity, cgroup quota) less those other work keeps busy.

Why: OpenMP's threads spin while they wait, so on a machine shared with another job, two
pools each sized to every core fight for them (the demo took 355 s beside another job with
default pools against 84 s with one thread). A user or a scheduler can always say how many
(``--threads``, ``NAPARI_AET_THREADS``, or ``OMP_NUM_THREADS`` for the whole process).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .errors import AETInputError

_PLAN: Optional["ThreadPlan"] = None


@dataclass(frozen=True)
class ThreadPlan:
    """The thread pools' size and why.

    Attributes
    ----------
    threads : int
        Threads for torch's intra-op pool, OpenMP and BLAS.
    usable_cpus : int
        CPUs this process may use (affinity and cgroup quota).
    busy_cpus : float
        CPUs' worth of other work measured at start (0 when not measured).
    source : str
        ``"option"`` (``--threads``), ``"environment"`` (``NAPARI_AET_THREADS`` or
        ``OMP_NUM_THREADS``) or ``"measured"``.
    """

    threads: int
    usable_cpus: int
    busy_cpus: float
    source: str

    def as_dict(self) -> dict:
        """The plan as plain JSON types (for report.json)."""
        return asdict(self)

    def line(self) -> str:
        """One line for the user."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.source != "measured":
            return f"{threads} ({self.source}; {self.usable_cpus} CPUs usable)"
        return f"{threads}: {self.usable_cpus} CPUs usable, {self.busy_cpus:.1f} busy with other work (--threads N to choose)"


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else float(quota) / float(period)
    except (OSError, ValueError):
        pass
    try:
        quota = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _affinity() -> list:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup's CPU quota.

    Parameters
    ----------
    cgroup_root : Path
        Where the cgroup file system is mounted (a test gives its own).

    Returns
    -------
    int
        At least 1.
    """
    n = len(_affinity())
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def busy_cpus(sample_s: float = 0.3) -> float:
    """CPUs' worth of work on the CPUs this process may use, sampled over ``sample_s`` seconds
    (at start, before this process does anything heavy, so it is other work).

    Parameters
    ----------
    sample_s : float
        Sampling time in s.

    Returns
    -------
    float
        0 when it cannot be measured.
    """
    try:
        import psutil

        per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    except Exception:  # an unusual platform: no measurement, no reduction
        return 0.0
    mine = [c for c in _affinity() if c < len(per_cpu)] or range(len(per_cpu))
    return float(sum(per_cpu[c] for c in mine) / 100.0)


def _requested(threads: Optional[int]) -> tuple:
    """(threads, source) asked for by the option or the environment, else (None, "measured")."""
    if threads is not None:
        if threads < 1:
            raise AETInputError(f"--threads {threads}: give a whole number of threads of 1 or more")
        return int(threads), "option"
    for var in ("NAPARI_AET_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(var, "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise AETInputError(f"{var}={text!r}: give a whole number of threads of 1 or more, or unset it")
            return int(text), "environment"
    return None, "measured"


def plan_threads(threads: Optional[int] = None, sample_s: float = 0.3) -> ThreadPlan:
    """How many threads to use: the one asked for (``threads``, then ``NAPARI_AET_THREADS``,
    then ``OMP_NUM_THREADS``), else the usable CPUs less the busy ones, rounded, at least 1.

    Parameters
    ----------
    threads : int, optional
        The user's choice (``--threads``).
    sample_s : float
        How long to sample the CPUs' load, s.

    Returns
    -------
    ThreadPlan
    """
    usable = usable_cpus()
    asked, source = _requested(threads)
    if asked is not None:
        return ThreadPlan(asked, usable, 0.0, source)
    busy = busy_cpus(sample_s) if usable > 1 else 0.0
    # idle CPUs among those this process may run on; a quota below the affinity caps it
    idle = len(_affinity()) - busy
    return ThreadPlan(int(min(usable, max(1, math.floor(idle + 0.5)))), usable, round(busy, 2), source)


def configure_threads(threads: Optional[int] = None, sample_s: float = 0.3) -> ThreadPlan:
    """Size torch's, OpenMP's and BLAS's thread pools once per process (later calls return the
    first plan unless ``threads`` is given).

    Parameters
    ----------
    threads : int, optional
        The user's choice (``--threads``); None measures.
    sample_s : float
        How long to sample the CPUs' load, s.

    Returns
    -------
    ThreadPlan
        What was set.
    """
    global _PLAN
    if _PLAN is not None and threads is None:
        return _PLAN
    plan = plan_threads(threads, sample_s)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(plan.threads)  # for libraries loaded later and child processes
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=plan.threads)  # BLAS and OpenMP already loaded (numpy, scipy)
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    import sys

    if "torch" in sys.modules:  # otherwise torch reads OMP_NUM_THREADS when it loads (no import cost here)
        import torch

        torch.set_num_threads(plan.threads)
        try:
            torch.set_num_interop_threads(plan.threads)
        except RuntimeError:  # already set, or parallel work already ran in this process
            pass
    _PLAN = plan
    return plan


def current_plan() -> Optional[ThreadPlan]:
    """The plan set by :func:`configure_threads` in this process, or None."""
    return _PLAN

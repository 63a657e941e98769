"""Hand corrections of a refined atom model: the edited atoms and their neighbours refitted
against the tilt series with every other atom held, R-work and R-free of the corrected model,
and an analysis that leaves out atoms the data barely wants.

- :func:`model_parameters` and :func:`free_projections`: the refined model's per-class
  heights and B-factors and its held-out projections, read from an atoms sidecar's
  ``refinement`` and ``validation`` records (JSON keys are strings; classes come back as ints).
- :func:`atom_classes`: each atom's class, numbered as the refinement numbered them.
- :func:`refine_near`: a local re-refinement after an edit.
- :func:`model_r_factors`: R-work and R-free of an atom model.
- :func:`analyze_confident`: :func:`~napari_aet.core.analysis.analyze_atoms` without the atoms
  below a presence threshold.

Qt-free; lengths in Å.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import AETInputError, Reporter

__all__ = ["model_parameters", "free_projections", "atom_classes", "model_r_factors", "LocalRefinement",
           "refine_near", "analyze_confident", "NEAR_RADIUS"]

NEAR_RADIUS = 3.0  # Å: the edited atoms' nearest neighbours (Pt: 2.77 Å) move with them


def model_parameters(metadata: Optional[dict]) -> Optional[tuple]:
    """The refined model's per-class heights and B-factors from an atoms layer's or sidecar's
    metadata (``refinement``: ``heights``, ``b_factors_A2``; those of its ``probe_tail`` when the
    tail was taken off the tilt series, :func:`fitted_tilts`).

    Parameters
    ----------
    metadata : dict or None
        The atoms metadata (``trace_volume``'s, or the sidecar JSON read back).

    Returns
    -------
    (heights, b_factors) or None
        Two dicts, class (int) -> integrated intensity and class -> B-factor (Å²); None when
        the atoms were never refined against a tilt series.
    """
    ref = (metadata or {}).get("refinement") or {}
    tail = ref.get("probe_tail") or {}
    if tail.get("removed"):  # the model refitted with the tail: what the tail-free series wants (fitted_tilts)
        ref = tail
    heights, b_factors = ref.get("heights"), ref.get("b_factors_A2")
    if not heights or not b_factors:
        return None
    try:
        h = {int(k): float(v) for k, v in heights.items()}
        b = {int(k): float(v) for k, v in b_factors.items()}
    except (AttributeError, TypeError, ValueError):
        raise AETInputError("the atoms' refinement record has heights or B-factors that are not numbers by class")
    if set(h) != set(b) or not all(np.isfinite(v) and v > 0 for v in (*h.values(), *b.values())):
        raise AETInputError("the atoms' refinement record needs a positive height and B-factor for every class")
    return h, b


def fitted_tilts(metadata: Optional[dict], tilts, pixel_size: float) -> np.ndarray:
    """The tilt series as the refined model was fitted to it: with the probe tail the
    refinement took off (``refinement.probe_tail`` with ``removed``) taken off again, so a
    local refit sees what the Gaussian atoms were fitted to.

    Parameters
    ----------
    metadata : dict or None
        The atoms metadata.
    tilts : (a, nv, nu) array
        The measured tilt series.
    pixel_size : float
        Å.

    Returns
    -------
    (a, nv, nu) float32 array
    """
    from .probe_tail import ProbeTail, remove_probe_tail

    record = ((metadata or {}).get("refinement") or {}).get("probe_tail") or {}
    if not record.get("removed"):
        return np.asarray(tilts, np.float32)
    return remove_probe_tail(tilts, ProbeTail.from_summary(record), pixel_size)


def free_projections(metadata: Optional[dict], n_projections: int) -> np.ndarray:
    """The projections held out of the refinement (R-free), from the ``validation`` record.

    Parameters
    ----------
    metadata : dict or None
        The atoms metadata.
    n_projections : int
        Projections in the tilt series the atoms are checked against.

    Returns
    -------
    (n_projections,) bool array
        True for a held-out projection; all False without a record.
    """
    free = np.zeros(int(n_projections), bool)
    indices = ((metadata or {}).get("validation") or {}).get("free_projections") or []
    try:
        idx = np.asarray(indices, int).ravel()
    except (TypeError, ValueError):
        raise AETInputError("the atoms' validation record lists held-out projections that are not whole numbers")
    if idx.size and (idx.min() < 0 or idx.max() >= n_projections):
        raise AETInputError(f"the atoms were validated on projection {int(idx.max())}, but the tilt series has "
                            f"{n_projections}; choose the tilt series they were refined against")
    free[idx] = True
    return free


def atom_classes(species, edited=None) -> np.ndarray:
    """Each atom's class as the refinement numbered them: the index of its species among the
    traced atoms' sorted species names.

    Parameters
    ----------
    species : (n,) sequence
        The atoms table's ``species`` column (model atoms only).
    edited : (n,) bool array, optional
        Atoms added or changed by hand: their species does not define a class; one unknown to
        the traced atoms takes the commonest class.

    Returns
    -------
    (n,) int array
    """
    names = np.array(["" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v)
                      for v in species], dtype=object)
    if not len(names):
        return np.zeros(0, int)
    traced = ~np.asarray(edited, bool) if edited is not None else np.ones(len(names), bool)
    known = sorted(set(names[traced & (names != "")].tolist())) or sorted(set(names.tolist()))
    lookup = {name: k for k, name in enumerate(known)}
    classes = np.array([lookup.get(name, -1) for name in names], int)
    valid = classes[classes >= 0]
    commonest = int(np.bincount(valid).argmax()) if valid.size else 0
    return np.where(classes >= 0, classes, commonest)


def model_r_factors(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                    free=None, device="cpu") -> tuple:
    """R-work and R-free (``sum|data - model| / sum|data|``) of an atom model.

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame.
    classes : (n,) int array
    heights, b_factors : dict
        Class -> integrated intensity, class -> B-factor (Å²).
    tilts : (a, nv, nu) array
        The measured (aligned) tilt series.
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    free : (a,) bool array, optional
        Held-out projections; none: R-free is None.
    device : str

    Returns
    -------
    (r_work, r_free)
        Floats; ``r_free`` None without held-out projections.
    """
    from .confidence import atom_model_projections, r_work_free

    data = np.asarray(tilts, np.float32)
    free = np.zeros(len(data), bool) if free is None else free
    model = atom_model_projections(positions, classes, heights, b_factors, angles, data.shape[1:], pixel_size,
                                   device)
    return r_work_free(model, data, free)


@dataclass
class LocalRefinement:
    """What :func:`refine_near` did."""

    positions: np.ndarray  # (n, 3) Å, every atom (only ``moved`` changed)
    moved: np.ndarray  # indices of the atoms refitted: the edited ones and their neighbours
    r_work_before: float
    r_work: float
    r_free_before: Optional[float]
    r_free: Optional[float]
    seconds: float

    def summary(self) -> dict:
        """A plain record (JSON-safe) of the refinement."""
        return {"n_refitted": int(len(self.moved)), "r_work_before": self.r_work_before, "r_work": self.r_work,
                "r_free_before": self.r_free_before, "r_free": self.r_free, "seconds": round(self.seconds, 3)}


# Long: the model is split into held and refitted atoms, the held ones projected once, the
# refitted ones fitted by one Adam loop, and R measured before and after on one split of projections.
def refine_near(positions, classes, edited, tilts, angles, pixel_size: float, heights: dict, b_factors: dict,
                free=None, radius: float = NEAR_RADIUS, iterations: int = 120, step_size: float = 0.05,
                max_move: float = 1.5, device="cpu", progress=None, cancel=None) -> LocalRefinement:
    """Refit the edited atoms and their neighbours against the tilt series, every other atom
    held where it is; heights and B-factors stay the refined model's.

    The held atoms' projections are subtracted from the measurement once, then the positions
    of the refitted atoms alone are fitted to what is left (Adam on the squared misfit, on the
    working projections only, so R-free stays a check the edit never saw).

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame: the model after the edit.
    classes : (n,) int array
        Keys of ``heights`` and ``b_factors`` (:func:`atom_classes`).
    edited : sequence of int or (n,) bool array
        The atoms moved or added by hand.
    tilts : (a, nv, nu) array
        The measured (aligned) tilt series the model was refined against.
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    heights, b_factors : dict
        The refined model's (:func:`model_parameters`).
    free : (a,) bool array, optional
        Held-out projections (:func:`free_projections`): not fitted, their R is R-free.
    radius : float
        Å: atoms this close to an edited atom are refitted with it.
    iterations : int
    step_size : float
        Å, the first Adam step (decays to 2% of it).
    max_move : float
        Å: an atom that moves further is put back (the data holds nothing it can explain).
    device : str
    progress, cancel : progress callback and ``threading.Event``

    Returns
    -------
    LocalRefinement
        Every position (the refitted ones changed), the refitted indices, and R-work and
        R-free before and after.
    """
    from .confidence import atom_model_projections
    from .projector import resolve_device
    from .validate import check_int, check_number

    iterations = check_int(iterations, "local refinement iterations", 1, 100_000)
    check_number(radius, "neighbour radius", 0.0, 20.0, unit="Å")
    check_number(step_size, "refinement step size", 0.0, 1.0, unit="Å", lo_open=True)
    t0 = time.perf_counter()
    dev = resolve_device(device) if isinstance(device, str) else device
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    cls = np.asarray(classes, int)
    data = np.asarray(tilts, np.float32)
    if cls.shape != (len(pos),):
        raise AETInputError(f"{cls.size} classes for {len(pos)} atoms; give one class per atom")
    free = np.zeros(len(data), bool) if free is None else np.asarray(free, bool)
    moving = _neighbourhood(pos, edited, radius)
    rep = Reporter(iterations + 2, progress, cancel)
    before = model_r_factors(pos, cls, heights, b_factors, data, angles, pixel_size, free, dev)
    rep.step(f"R-work before {before[0]:.4f}")
    held = ~np.isin(np.arange(len(pos)), moving)
    work = ~free
    target = data[work]
    if held.any():
        target = target - atom_model_projections(pos[held], cls[held], heights, b_factors,
                                                 np.asarray(angles)[work], data.shape[1:], pixel_size, dev)
    new = pos.copy()
    new[moving] = _fit_positions(pos[moving], cls[moving], heights, b_factors, target, np.asarray(angles)[work],
                                 pixel_size, iterations, step_size, max_move, dev, rep)
    after = model_r_factors(new, cls, heights, b_factors, data, angles, pixel_size, free, dev)
    rep.step(f"R-work {after[0]:.4f}")
    return LocalRefinement(new, moving, before[0], after[0], before[1], after[1], time.perf_counter() - t0)


def _neighbourhood(pos: np.ndarray, edited, radius: float) -> np.ndarray:
    """Indices of the edited atoms and every atom within ``radius`` of one."""
    from scipy.spatial import cKDTree

    sel = np.asarray(edited)
    idx = np.flatnonzero(sel) if sel.dtype == bool else np.unique(sel.astype(int))
    if not idx.size:
        raise AETInputError("no edited atoms to refine; move or add atoms, or select the ones to refine")
    if idx.min() < 0 or idx.max() >= len(pos):
        raise AETInputError(f"edited atom {int(idx.max())} is not among the {len(pos)} atoms")
    near = cKDTree(pos).query_ball_point(pos[idx], r=radius)
    return np.unique(np.concatenate([idx, *[np.asarray(n, int) for n in near]]))


def _fit_positions(pos, cls, heights, b_factors, target, angles, pixel_size, iterations, step_size, max_move, dev,
                   rep) -> np.ndarray:
    """Adam on the squared misfit of the atoms ``pos`` (heights and widths fixed) to ``target``."""
    import torch

    from .forward import AtomProjector, b_factor_to_sigma

    missing = sorted(set(np.unique(cls).tolist()) - set(heights))
    if missing:
        raise AETInputError(f"atom classes {missing} have no refined height; refine the atoms first")
    h = np.array([heights[int(c)] for c in cls], np.float32)
    s = np.array([b_factor_to_sigma(b_factors[int(c)]) for c in cls], np.float32)
    proj = AtomProjector(angles, target.shape[1:], pixel_size, device=dev)
    data = torch.as_tensor(target, dtype=torch.float32, device=dev)
    start = torch.as_tensor(pos, dtype=torch.float32, device=dev)
    ht = torch.as_tensor(h, dtype=torch.float32, device=dev)
    st = torch.as_tensor(s, dtype=torch.float32, device=dev)
    shift = torch.zeros_like(start, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=step_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=step_size * 0.02)
    norm = float((data**2).sum()) or 1.0
    for _ in range(iterations):
        opt.zero_grad()
        loss = ((proj.project(start + shift, ht, st) - data) ** 2).sum() / norm
        loss.backward()
        opt.step()
        sched.step()
        rep.step(f"loss {float(loss.detach()):.3e}")
    with torch.no_grad():
        far = torch.linalg.norm(shift, dim=1) > max_move
        shift[far] = 0
    return (start + shift).detach().cpu().numpy().astype(np.float64)


def analyze_confident(table, min_presence: float = 0.0, progress=None, cancel=None, **settings) -> tuple:
    """:func:`~napari_aet.core.analysis.analyze_atoms` without the atoms whose ``presence`` is
    below ``min_presence``: they keep their rows (analysis columns as for a non-atom peak) but
    take no part in the lattice, surface, facets or strain.

    Parameters
    ----------
    table : DataFrame
        Atoms table; ``presence`` needed when ``min_presence`` > 0 (rows without one are kept).
    min_presence : float
        0 to 1; 0 keeps every atom.
    progress, cancel : progress callback and ``threading.Event``
    **settings
        Passed to :func:`~napari_aet.core.analysis.analyze_atoms`.

    Returns
    -------
    table : DataFrame
        As ``analyze_atoms``, every input row in order, ``atom`` as given.
    summary : dict
        As ``analyze_atoms``; ``settings`` records ``min_presence`` and
        ``n_left_out_low_presence``.
    """
    from .analysis import analyze_atoms
    from .validate import check_number

    check_number(min_presence, "minimum presence", 0.0, 1.0)
    work = table.reset_index(drop=True)
    atom = work["atom"].to_numpy() if "atom" in work else np.ones(len(work), int)
    low = np.zeros(len(work), bool)
    if min_presence > 0:
        if "presence" not in work:
            raise AETInputError("the atoms have no presence column; trace or run with a tilt series to score "
                                "them, or set the minimum presence to 0")
        presence = work["presence"].to_numpy(float)
        low = (atom == 1) & np.isfinite(presence) & (presence < min_presence)
        if (atom == 1).sum() - low.sum() < 4:
            raise AETInputError(f"only {(atom == 1).sum() - low.sum()} atoms have a presence of {min_presence:g} "
                                "or more; lower the minimum presence")
        work = work.assign(atom=np.where(low, 0, atom))
    out, summary = analyze_atoms(work, progress=progress, cancel=cancel, **settings)
    if "atom" in table:
        out["atom"] = atom
    elif low.any():
        out = out.drop(columns=["atom"])
    summary["settings"] = dict(summary.get("settings") or {}, min_presence=float(min_presence),
                               n_left_out_low_presence=int(low.sum()))
    return out, summary

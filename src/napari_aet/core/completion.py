"""A model the data completes: atoms added where the tilt series wants density the atom model
lacks, atoms removed where the held-out projections do not want them (issue 23).

One round of :func:`complete_atoms`:

1. The refined model is projected and the residual (data minus model) of the working
   projections is reconstructed by SIRT without positivity (for an extended object in a widened
   volume, so film outside the box is explained outside it).
2. Proposals: local maxima of that residual tomogram above ``significance`` times its noise
   (median absolute deviation of the residual near the model's atoms), at least
   ``min_distance`` Å from every atom and from each other; each becomes an atom of the class
   whose height fits it best, and is kept only when it lowers the working projections' misfit
   (occupancy >= 1/2).
3. All atoms are refined on the working projections
   (:func:`~napari_aet.core.refine.refine_positions`).
4. Drops (``drop=True``, off by default): atoms whose removal lowers the misfit on the held-out projections (occupancy < 1/2,
   :func:`~napari_aet.core.confidence.atom_confidence`) by more than ``drop_significance``
   standard errors, then a short refinement.

Rounds stop when one adds and removes nothing, when R-free does not improve (a round that
raised it is undone), or after ``max_rounds``. Without held-out projections the drop test uses
every projection: the atoms were fitted to them, so that test is biased towards keeping atoms
(it drops only what even the fitted data rejects) and nothing guards against over-fitting.

Everything here is numpy/torch on arrays; lengths in Å, sample frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import geometry
from .errors import AETInputError, Reporter

__all__ = ["CompletionResult", "complete_atoms", "propose_atoms", "residual_noise"]

R_FREE_TOLERANCE = 1e-4  # a round must lower R-free by more than this to count as an improvement


@dataclass
class CompletionResult:
    """The completed atom model and what each round did."""

    positions: np.ndarray  # (n, 3) Å
    classes: np.ndarray  # (n,) int, keys of heights / b_factors
    heights: dict  # class -> integrated intensity (refined on the working projections)
    b_factors: dict  # class -> Å²
    added: list = field(default_factory=list)  # per kept round: new atoms with no old atom within 1 Å
    removed: list = field(default_factory=list)  # per kept round: old atoms with no new atom within 1 Å
    r_work: list = field(default_factory=list)  # before the first round, then after each kept round
    r_free: list = field(default_factory=list)  # as r_work; None without held-out projections
    stopped: str = ""  # why the rounds stopped
    used_free: bool = False  # drops tested on held-out projections (else on all)
    seconds: float = 0.0

    def summary(self) -> dict:
        """A JSON-ready record for the report."""
        return {"n_atoms": int(len(self.positions)), "added": list(self.added), "removed": list(self.removed),
                "n_added": int(sum(self.added)), "n_removed": int(sum(self.removed)),
                "r_work": [round(v, 5) for v in self.r_work],
                "r_free": [None if v is None else round(v, 5) for v in self.r_free],
                "rounds": len(self.added), "stopped": self.stopped,
                "drops_tested_on": "held-out projections" if self.used_free else "all projections",
                "seconds": round(self.seconds, 2)}


def residual_noise(residual: np.ndarray, positions, pixel_size: float, radius: float = 4.0) -> float:
    """Noise of a residual tomogram where the sample is: 1.4826 x the median absolute deviation
    of its voxels within ``radius`` Å of an atom (robust to the few missed atoms; vacuum, where a
    noise-free or counting detector gives nothing, is left out).

    Parameters
    ----------
    residual : (nz, ny, nx) array
    positions : (n, 3) array
        Å, sample frame.
    pixel_size : float
        Å.
    radius : float
        Å.

    Returns
    -------
    float
        Same unit as ``residual``.
    """
    from scipy import ndimage

    shape = residual.shape
    mask = np.zeros(shape, bool)
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    idx = np.rint(np.stack([geometry.angstrom_to_index(pos[:, 2 - k], shape[k], pixel_size) for k in range(3)],
                           1)).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
    mask[tuple(idx[inside].T)] = True
    if mask.any():
        mask = ndimage.distance_transform_edt(~mask) * pixel_size <= radius
    else:
        mask[:] = True
    v = residual[mask].astype(np.float64)
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) or 1e-30


def propose_atoms(residual: np.ndarray, positions, pixel_size: float, threshold: float, min_distance: float = 2.0,
                  edge_margin: float = 0.0) -> np.ndarray:
    """Candidate atoms: local maxima of a residual tomogram above ``threshold``, at least
    ``min_distance`` Å from every given atom and from each other (higher peaks first), and
    at least ``edge_margin`` Å inside the box's x and y faces.

    Parameters
    ----------
    residual : (nz, ny, nx) array
        Data minus model, reconstructed (positive where atoms are missing).
    positions : (n, 3) array
        The model's atoms, Å, sample frame.
    pixel_size : float
        Å, the voxel size.
    threshold : float
        Least peak value, ``residual``'s unit.
    min_distance : float
        Å.
    edge_margin : float
        Å.

    Returns
    -------
    (m, 3) array
        Å, sample frame, highest peak first.
    """
    from scipy.spatial import cKDTree

    from .trace import find_peaks, subvoxel_positions

    vol = np.asarray(residual, np.float32)
    idx = find_peaks(vol, min_distance / pixel_size)
    idx = idx[vol[tuple(idx.T)] >= threshold] if len(idx) else idx
    if len(idx) == 0:
        return np.zeros((0, 3))
    sub = subvoxel_positions(vol, idx, fit="parabola")
    xyz = np.stack([geometry.index_to_angstrom(sub[:, 2 - k], vol.shape[2 - k], pixel_size) for k in range(3)], 1)
    half = np.array([vol.shape[2], vol.shape[1]]) / 2 * pixel_size
    keep = np.all(np.abs(xyz[:, :2]) <= half - edge_margin, axis=1)
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(pos):
        dist, _ = cKDTree(pos).query(xyz, k=1)
        keep &= dist >= min_distance
    return xyz[keep]


def _best_classes(candidates, positions, classes, heights, b_factors, data, angles, pixel_size, device, model):
    """Each candidate's class (the one whose height its occupancy is nearest 1 for) and that
    occupancy on ``data`` against the model of ``positions`` (``model``: its projections)."""
    from .confidence import atom_confidence

    labels = sorted(int(k) for k in heights)
    every = np.concatenate([positions, candidates])
    in_model = np.r_[np.ones(len(positions), bool), np.zeros(len(candidates), bool)]
    occ = []
    for c in labels:
        cls = np.r_[classes, np.full(len(candidates), c)]
        conf = atom_confidence(every, cls, heights, b_factors, data, angles, pixel_size, in_model=in_model,
                               model=model, device=device)
        occ.append(conf.occupancy[len(positions):])
    occ = np.array(occ)  # (classes, m)
    pick = np.argmin(np.abs(np.log(np.clip(occ, 1e-6, None))), axis=0)
    return np.array(labels)[pick], occ[pick, np.arange(len(candidates))]


def _add(cand, positions, classes, heights, b_factors, data, angles, pixel_size, device, model):
    """Candidates that lower the misfit of ``data`` (occupancy >= 1/2) appended, each with its
    best class; returns positions, classes and how many were added. ``model``: the projections
    of ``positions`` at ``angles``."""
    if len(cand) == 0:
        return positions, classes, 0
    new_cls, occ = _best_classes(cand, positions, classes, heights, b_factors, data, angles, pixel_size, device,
                                 model)
    wanted = occ >= 0.5
    return np.concatenate([positions, cand[wanted]]), np.r_[classes, new_cls[wanted]], int(wanted.sum())


def _refine(positions, classes, data, angles, pixel_size, iterations, b_factors, device, cancel, step_size=0.01):
    """Positions, heights and B-factors refined on the working projections."""
    from .refine import refine_positions

    b0 = float(np.median(list(b_factors.values())))
    return refine_positions(positions, classes, data, angles, pixel_size, iterations=iterations, initial_b=b0,
                            step_size=step_size, device=device, cancel=cancel)


def _check_inputs(positions, classes, tilts, angles, free, heights, b_factors):
    """Arrays in shape; one-line errors otherwise."""
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    cls = np.asarray(classes, int).reshape(-1)
    data = np.asarray(tilts, np.float32)
    if len(pos) == 0:
        raise AETInputError("no atoms to complete; trace and refine the tomogram first")
    if len(cls) != len(pos):
        raise AETInputError(f"{len(cls)} classes for {len(pos)} atoms; give one class per atom")
    if data.ndim != 3 or len(geometry.as_euler_angles(angles)) != len(data):
        raise AETInputError(f"tilt series of shape {data.shape} does not match {len(np.atleast_1d(angles))} angles")
    free = np.zeros(len(data), bool) if free is None else np.asarray(free, bool).reshape(-1)
    if free.shape != (len(data),) or free.all():
        raise AETInputError(f"{free.size} held-out flags for {len(data)} projections; give one per projection, "
                            "not all held out")
    missing = sorted(set(cls.tolist()) - {int(k) for k in heights} | set(cls.tolist()) - {int(k) for k in b_factors})
    if missing:
        raise AETInputError(f"atom classes {missing} have no refined height or B-factor; refine the atoms first")
    return pos, cls, data, free


# Long: the rounds loop with its bookkeeping (R-work/R-free per round, undoing a round that raised
# R-free, the stop reasons); each step it calls is its own function.
def complete_atoms(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                   volume_shape, free=None, min_distance: float = 2.0, significance: float = 4.0,
                   max_rounds: int = 5, refine_iterations: int = 50, refine_step: float = 0.01, residual_iterations: int = 10,
                   extended_object: bool = False, drop: bool = False,
                   drop_significance: float = 2.0, device="cpu", progress=None,
                   cancel=None) -> CompletionResult:
    """Complete a refined atom model against its tilt series: add atoms at significant positive
    peaks of the residual tomogram, drop atoms the held-out projections do not want, refine
    between rounds.

    Parameters
    ----------
    positions : (n, 3) array
        Refined atoms, Å, sample frame.
    classes : (n,) int array
        Keys of ``heights`` and ``b_factors``.
    heights, b_factors : dict
        Class -> integrated intensity, class -> B-factor (Å²), as
        :class:`~napari_aet.core.refine.RefinementResult`.
    tilts : (a, nv, nu) array
        The aligned tilt series.
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å; also the residual tomogram's voxel size.
    volume_shape : (nz, ny, nx)
        The tomogram's box.
    free : (a,) bool array, optional
        Held-out projections (:func:`~napari_aet.core.confidence.split_free_projections`): never
        used to propose or refine, only to decide drops and to stop. None: every projection is
        used for everything (see the module notes).
    min_distance : float
        Å: the least distance of a new atom from any other.
    significance : float
        A proposal's residual peak must exceed this many times the residual tomogram's noise.
    max_rounds : int
    refine_iterations : int
        Refinement iterations after each round's additions.
    refine_step : float
        Å, the refinement's initial step (:func:`~napari_aet.core.refine.refine_positions`).
    residual_iterations : int
        SIRT iterations of the residual tomogram.
    extended_object : bool
        The sample extends beyond the box (a film): the residual is reconstructed in a widened
        volume and no atom is proposed within ``min_distance`` of the box's x and y faces.
    drop : bool
        Test and drop atoms (default False: only add). Off by default: with one held-out
        projection (abTEM particles) and with five (the measured Ta film) the drops removed
        more true atoms than false ones while R-free, measured on the same projections that
        chose them, went down (benchmarks/bench_completion.py).
    drop_significance : float
        An atom is dropped when its held-out occupancy is below 1/2 by more than this many
        standard errors (0: whenever its removal lowers the held-out misfit, which with one or
        two held-out projections drops many true atoms).
    device : str
    progress, cancel : progress callback and ``threading.Event``

    Returns
    -------
    CompletionResult
    """
    from .confidence import atom_model_projections, r_work_free
    from .validate import check_int, check_number

    t0 = time.perf_counter()
    pos, cls, data, free = _check_inputs(positions, classes, tilts, angles, free, heights, b_factors)
    check_number(min_distance, "least distance between atoms", 0.5, 10.0, unit="Å")
    check_number(significance, "completion significance", 0.0, 100.0)
    max_rounds = check_int(max_rounds, "completion rounds", 0, 100)
    angles = np.asarray(angles, np.float64)
    rep = Reporter(max(max_rounds, 1), progress, cancel)
    state = dict(positions=pos, classes=cls, heights=dict(heights), b_factors=dict(b_factors))

    def r_values(s):
        model = atom_model_projections(s["positions"], s["classes"], s["heights"], s["b_factors"], angles,
                                       data.shape[1:], pixel_size, device)
        return (model, *r_work_free(model, data, free))

    model, r_work, r_free = r_values(state)
    result = CompletionResult(pos, cls, dict(heights), dict(b_factors), r_work=[r_work], r_free=[r_free],
                              used_free=bool(free.any()))
    stopped = "no rounds" if max_rounds == 0 else f"{max_rounds} rounds"
    settings = dict(min_distance=min_distance, significance=significance, refine_iterations=refine_iterations,
                    refine_step=refine_step,
                    residual_iterations=residual_iterations, extended_object=extended_object, drop=drop,
                    drop_significance=drop_significance)
    for k in range(max_rounds):
        new = _round(state, model, data, angles, free, pixel_size, volume_shape, settings, device, cancel)
        n_add, n_drop = _changes(state["positions"], new["positions"])
        if n_add == 0 and n_drop == 0:
            stopped = "a round added and removed nothing"
            rep.step(stopped, n=rep.total)
            break
        new_model, new_work, new_free = r_values(new)
        if r_free is not None and new_free > r_free - R_FREE_TOLERANCE:
            stopped = "R-free did not improve" + (" (round undone)" if new_free > r_free else "")
            if new_free <= r_free:
                state, model = new, new_model
                result.added.append(n_add), result.removed.append(n_drop)
                result.r_work.append(new_work), result.r_free.append(new_free)
            rep.step(stopped, n=rep.total)
            break
        state, model, r_work, r_free = new, new_model, new_work, new_free
        result.added.append(n_add), result.removed.append(n_drop)
        result.r_work.append(r_work), result.r_free.append(r_free)
        rep.step(f"round {k + 1}: +{n_add} -{n_drop} atoms, R-work {r_work:.4f}"
                 + ("" if r_free is None else f", R-free {r_free:.4f}"))
    result.positions, result.classes = state["positions"], state["classes"]
    result.heights, result.b_factors = state["heights"], state["b_factors"]
    result.stopped, result.seconds = stopped, time.perf_counter() - t0
    return result


def _changes(old, new, distance: float = 1.0):
    """(added, removed): atoms of ``new`` with no atom of ``old`` within ``distance`` Å, and
    atoms of ``old`` with none of ``new``."""
    from scipy.spatial import cKDTree

    if len(old) == 0 or len(new) == 0:
        return len(new), len(old)
    added = int((cKDTree(old).query(new, k=1)[0] > distance).sum())
    removed = int((cKDTree(new).query(old, k=1)[0] > distance).sum())
    return added, removed


def _round(state, model, data, angles, free, pixel_size, volume_shape, settings, device, cancel):
    """One round: propose, add, refine, drop, refine. Returns the new state."""
    from .confidence import atom_confidence, residual_tomogram

    work = ~free
    pos, cls, heights, b_factors = state["positions"], state["classes"], state["heights"], state["b_factors"]
    residual = residual_tomogram(pos, cls, heights, b_factors, data[work], angles[work], pixel_size, volume_shape,
                                 settings["residual_iterations"], device, cancel=cancel,
                                 extended_object=settings["extended_object"], model=model[work])
    noise = residual_noise(residual, pos, pixel_size, radius=2 * settings["min_distance"])
    margin = settings["min_distance"] if settings["extended_object"] else 0.0
    cand = propose_atoms(residual, pos, pixel_size, settings["significance"] * noise, settings["min_distance"],
                         edge_margin=margin)
    pos, cls, n_add = _add(cand, pos, cls, heights, b_factors, data[work], angles[work], pixel_size, device,
                           model[work])
    iters = settings["refine_iterations"]
    if n_add:
        ref = _refine(pos, cls, data[work], angles[work], pixel_size, iters, b_factors, device, cancel,
                      settings["refine_step"])
        pos, heights, b_factors = ref.positions, ref.heights, ref.b_factors
    n_drop = 0
    if settings["drop"]:
        test = free if free.any() else np.ones(len(data), bool)
        conf = atom_confidence(pos, cls, heights, b_factors, data[test], angles[test], pixel_size, device=device)
        z = (conf.occupancy - 0.5) / np.maximum(conf.occupancy_error, 1e-12)
        unwanted = (conf.occupancy < 0.5) & (z < -settings["drop_significance"])
        n_drop = int(unwanted.sum())
        if n_drop and n_drop < len(pos):
            pos, cls = pos[~unwanted], cls[~unwanted]
            ref = _refine(pos, cls, data[work], angles[work], pixel_size, max(iters // 2, 1), b_factors, device,
                          cancel, settings["refine_step"])
            pos, heights, b_factors = ref.positions, ref.heights, ref.b_factors
        else:
            n_drop = 0
    return dict(positions=pos, classes=cls, heights=heights, b_factors=b_factors)

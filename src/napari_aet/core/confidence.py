"""How far to trust a result: R-free on held-out projections and every atom's confidence.

- :func:`split_free_projections`: a reproducible share of the projections, spread over the
  tilt range, held out of reconstruction, tracing and refinement (crystallography's R-free).
- :func:`atom_model_projections` and :func:`r_factor`: the refined atom model projected at
  any angles, and its R-factor ``sum|b - model| / sum|b|`` against measured projections.
- :func:`atom_confidence`: for every atom a position uncertainty per axis (pm) from the
  curvature of the misfit (the Fisher information of the atom's own projections, with the
  noise measured from the residual under that atom) and a presence score in [0, 1] from its
  occupancy on the held-out projections (does the data that never saw the atom want it?).

Everything here is numpy/torch on arrays; lengths in Å unless a name says pm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import geometry
from .errors import AETInputError

__all__ = ["split_free_projections", "atom_model_projections", "r_factor", "r_work_free", "AtomConfidence", "atom_confidence",
           "CONFIDENCE_COLUMNS", "SIGMA_SCALE", "MIN_PROJECTIONS_FOR_FREE"]

CONFIDENCE_COLUMNS = ("sigma_x_pm", "sigma_y_pm", "sigma_z_pm", "presence")
MIN_PROJECTIONS_FOR_FREE = 10  # fewer: every projection is needed to reconstruct
# The sandwich uncertainties ignore that misfit is correlated between projections (the same
# neighbour overlap, the missing wedge along z); these factors on x, y, z bring the 90% intervals
# to 85-95% coverage, chosen on seeds 301-302 of both forward models and checked on others
# (BENCHMARKS.md "Confidence").
SIGMA_SCALE = (1.25, 1.25, 1.4)


def split_free_projections(angles, fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Which projections to hold out for R-free: ``round(fraction * n)`` of them (at least one),
    evenly spread over the tilt range (never the first or last tilt), with a seeded offset.

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Tilts or Z-Y-Z Euler angles, degrees.
    fraction : float
        Share of projections held out, 0 to 0.5; 0 holds none out.
    seed : int

    Returns
    -------
    (n,) bool array
        True for the held-out (free) projections; all False when ``fraction`` is 0 or there
        are fewer than :data:`MIN_PROJECTIONS_FOR_FREE` projections.
    """
    from .validate import check_number

    check_number(fraction, "R-free share of projections (--r-free)", 0.0, 0.5)
    euler = geometry.as_euler_angles(angles)
    n = len(euler)
    free = np.zeros(n, bool)
    if fraction == 0 or n < MIN_PROJECTIONS_FOR_FREE:
        return free
    order = np.lexsort((euler[:, 0], euler[:, 2], euler[:, 1]))  # by tilt (theta), then the rest
    m = max(1, int(round(fraction * n)))
    offset = np.random.default_rng(seed).uniform(0.3, 0.7)
    picks = np.floor((np.arange(m) + offset) * n / m).astype(int).clip(1, n - 2)
    free[order[np.unique(picks)]] = True
    return free


def _class_arrays(classes, heights: dict, b_factors: dict):
    """Per-atom height and Gaussian width (Å) from per-class dictionaries."""
    from .forward import b_factor_to_sigma

    cls = np.asarray(classes, int)
    missing = sorted(set(np.unique(cls).tolist()) - set(int(k) for k in heights))
    if missing:
        raise AETInputError(f"atom classes {missing} have no refined height; refine the atoms first")
    h = np.array([float(heights[int(c)]) for c in cls], np.float64)
    s = np.array([b_factor_to_sigma(float(b_factors[int(c)])) for c in cls], np.float64)
    return h, s


def atom_model_projections(positions, classes, heights: dict, b_factors: dict, angles, detector_shape,
                           pixel_size: float, device="cpu") -> np.ndarray:
    """The atom model (Gaussian atoms with refined per-class heights and B-factors) projected.

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame.
    classes : (n,) int array
        Keys of ``heights`` and ``b_factors`` (as :class:`~napari_aet.core.refine.RefinementResult`).
    heights, b_factors : dict
        Class -> integrated intensity; class -> B-factor (Å²).
    angles : (a,) or (a, 3) array
        Degrees.
    detector_shape : (nv, nu)
    pixel_size : float
        Å.
    device : str

    Returns
    -------
    (a, nv, nu) float32 array
    """
    import torch

    from .forward import AtomProjector

    h, s = _class_arrays(classes, heights, b_factors)
    proj = AtomProjector(angles, detector_shape, pixel_size, device=device)
    with torch.no_grad():
        img = proj.project(torch.as_tensor(np.asarray(positions, np.float32).reshape(-1, 3), device=device),
                           torch.as_tensor(h, dtype=torch.float32, device=device),
                           torch.as_tensor(s, dtype=torch.float32, device=device))
    return img.cpu().numpy().astype(np.float32)


def r_factor(model: np.ndarray, data: np.ndarray) -> float:
    """``sum|data - model| / sum|data|`` (the AET R-factor; lower is better).

    Parameters
    ----------
    model, data : arrays of one shape

    Returns
    -------
    float
    """
    data = np.asarray(data, np.float64)
    return float(np.abs(data - np.asarray(model, np.float64)).sum() / max(np.abs(data).sum(), 1e-30))


def r_work_free(model: np.ndarray, data: np.ndarray, free) -> tuple:
    """R-work and R-free of projected model against the measured projections.

    Parameters
    ----------
    model, data : (a, nv, nu) arrays
    free : (a,) bool array
        Held-out projections.

    Returns
    -------
    (r_work, r_free)
        Floats; ``r_free`` None without held-out projections.
    """
    free = np.asarray(free, bool)
    r_free = r_factor(model[free], data[free]) if free.any() else None
    return r_factor(model[~free], data[~free]), r_free


@dataclass
class AtomConfidence:
    """Per-atom confidence (arrays of length n)."""

    sigma: np.ndarray  # (n, 3) Å, standard uncertainty of x, y, z
    presence: np.ndarray  # (n,) in [0, 1]: probability the data wants an atom here
    occupancy: np.ndarray  # (n,) share of one atom of the class the held-out data wants here
    occupancy_error: np.ndarray  # (n,) standard error of ``occupancy``
    used_free: bool  # occupancy measured on held-out projections (else on all)

    def columns(self) -> dict:
        """The atoms table's confidence columns (:data:`CONFIDENCE_COLUMNS`)."""
        pm = np.round(self.sigma * 100.0, 2)
        return {"sigma_x_pm": pm[:, 0], "sigma_y_pm": pm[:, 1], "sigma_z_pm": pm[:, 2],
                "presence": np.round(self.presence, 4)}


def _window_terms(centre: np.ndarray, sigma_px: np.ndarray, half: int, size: int):
    """Pixel indices (m, w), pixel integrals of unit 1D Gaussians (m, w) and their derivatives
    with respect to the centre (per pixel), for centres (m,) in pixels."""
    offs = np.arange(-half, half + 1)
    idx = np.floor(centre + 0.5).astype(np.int64)[:, None] + offs
    s = (sigma_px * math.sqrt(2))[:, None]
    hi, lo = (idx + 0.5 - centre[:, None]) / s, (idx - 0.5 - centre[:, None]) / s
    from scipy.special import erf

    w = 0.5 * (erf(hi) - erf(lo))
    dw = -(np.exp(-hi**2) - np.exp(-lo**2)) / (s * math.sqrt(math.pi))
    inside = (idx >= 0) & (idx < size)
    return np.clip(idx, 0, size - 1), w * inside, dw * inside


# Long: one pass over projections gathering, for every atom, its footprint's overlap with the
# residual and the curvature terms; split up, the window arrays would be rebuilt per quantity.
def atom_confidence(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                    in_model=None, free=None, free_model: Optional[np.ndarray] = None,
                    model: Optional[np.ndarray] = None, device="cpu", sigma_scale=SIGMA_SCALE,
                    peak_contrast=None) -> AtomConfidence:
    """Position uncertainty and presence of every atom.

    Position: the inverse of each atom's 3x3 Fisher information, summed over projections from
    the derivatives of its own projected Gaussian, each projection weighted by the residual
    variance under the atom's footprint (noise and model error where the atom is). Presence:
    the occupancy ``a`` that best scales the atom's projections into the residual of the
    held-out projections (``a`` = 1: the data wants exactly this atom, 0: nothing there), with
    its standard error ``e``, and the peak's contrast in the tomogram ``t`` (0 at the tracer's
    noise class, 1 at its faintest atom class): presence is ``Phi(8 (t - 1/2) + z / 2)`` with
    ``z = (a - 1/2) / e`` clipped to ±5 (without ``t``: ``Phi(z)``). The weights were chosen on
    simulated particles of both forward models (BENCHMARKS.md "Confidence"): the tomogram's
    contrast separates noise peaks best, the held-out occupancy breaks its ties.

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame.
    classes : (n,) int array
        Keys of ``heights``, ``b_factors``.
    heights, b_factors : dict
        As :class:`~napari_aet.core.refine.RefinementResult`.
    tilts : (a, nv, nu) array
        The measured (aligned) tilt series.
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    in_model : (n,) bool array, optional
        Atoms that are part of the model (default all); others (non-atom peaks) are scored as
        candidates.
    free : (a,) bool array, optional
        Held-out projections for the occupancy (default: none, all projections are used).
    free_model : (a_free, nv, nu) array, optional
        The model fitted without the held-out projections, projected at them (default: the
        model of ``positions``).
    model : (a, nv, nu) array, optional
        The model's projections at every angle (default computed).
    device : str
    sigma_scale : float or (3,) sequence
        Calibration factors on the x, y, z uncertainties.
    peak_contrast : (n,) array, optional
        ``(intensity - noise centre) / (faintest atom centre - noise centre)`` of each peak.

    Returns
    -------
    AtomConfidence
    """
    from scipy.special import ndtr

    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    data = np.asarray(tilts, np.float32)
    n, (na, nv, nu) = len(pos), data.shape
    keep = np.ones(n, bool) if in_model is None else np.asarray(in_model, bool)
    h, s = _class_arrays(classes, heights, b_factors)
    if model is None:
        model = atom_model_projections(pos[keep], np.asarray(classes)[keep], heights, b_factors, angles, (nv, nu),
                                       pixel_size, device)
    free = np.zeros(na, bool) if free is None else np.asarray(free, bool)
    residual = data - model
    held_out = residual.copy()
    if free.any() and free_model is not None:
        held_out[free] = data[free] - free_model
    noise_floor = _noise_floor(residual)
    rot = geometry.euler_zyz_matrices(angles)
    half = int(math.ceil(3 * s.max() / pixel_size)) + 1
    fisher, meat = np.zeros((n, 3, 3)), np.zeros((n, 3, 3))
    occ_sums = {k: np.zeros((3, n)) for k in (True, False)}  # held out or not: numerator, denominator, variance
    sp = s / pixel_size
    for a in range(na):
        uvw = pos @ rot[a].T
        iu, wu, dwu = _window_terms(uvw[:, 0] / pixel_size + nu // 2, sp, half, nu)
        iv, wv, dwv = _window_terms(uvw[:, 1] / pixel_size + nv // 2, sp, half, nv)
        r = residual[a][iv[:, :, None], iu[:, None, :]]  # (n, w, w)
        foot = wv[:, :, None] * wu[:, None, :]
        su, sv = (wu**2).sum(1), (wv**2).sum(1)
        ru, rv = rot[a][0], rot[a][1]
        # curvature of the misfit (unweighted) and the spread of the per-projection gradients
        fisher += (h**2 * (dwu**2).sum(1) * sv)[:, None, None] * np.outer(ru, ru) \
            + (h**2 * (dwv**2).sum(1) * su)[:, None, None] * np.outer(rv, rv)
        g = (h * np.einsum("nj,nk,njk->n", wv, dwu, r))[:, None] * ru \
            + (h * np.einsum("nj,nk,njk->n", dwv, wu, r))[:, None] * rv
        meat += g[:, :, None] * g[:, None, :]
        r_occ = held_out[a][iv[:, :, None], iu[:, None, :]]
        local_var = _local_variance(r_occ + (keep * h)[:, None, None] * foot, h[:, None, None] * foot, foot,
                                    noise_floor)
        self_sq = h**2 * su * sv
        occ_sums[bool(free[a])] += [h * (foot * r_occ).sum((1, 2)) + keep * self_sq, self_sq, local_var * self_sq]
    sigma = np.asarray(sigma_scale, float) * _sandwich_sigma(fisher / pixel_size**2, meat / pixel_size**2, noise_floor, na)
    use = bool(free.any())
    num, den, var = occ_sums[use]
    occ = num / np.maximum(den, 1e-30)
    err = np.sqrt(var) / np.maximum(den, 1e-30)
    z = np.clip((occ - 0.5) / np.maximum(err, 1e-12), -5, 5)
    presence = ndtr(z)
    if peak_contrast is not None:  # an atom without a traced peak (added by completion) keeps Phi(z)
        contrast = np.asarray(peak_contrast, float)
        known = np.isfinite(contrast)
        presence[known] = ndtr(8 * (contrast[known] - 0.5) + z[known] / 2)
    return AtomConfidence(sigma, presence, occ, err, use)


def _local_variance(data_here: np.ndarray, atom: np.ndarray, foot: np.ndarray, noise_floor: float) -> np.ndarray:
    """Variance under each atom's footprint (n, w, w) of what the best multiple of the atom's
    own projection leaves unexplained (noise and neighbours' misfit, not the atom itself)."""
    scale = (atom * data_here).sum((1, 2)) / np.maximum((atom**2).sum((1, 2)), 1e-30)
    left = data_here - scale[:, None, None] * atom
    return np.maximum((foot * left**2).sum((1, 2)) / np.maximum(foot.sum((1, 2)), 1e-12), noise_floor**2)


def _sandwich_sigma(fisher: np.ndarray, meat: np.ndarray, noise_floor: float, n_projections: int) -> np.ndarray:
    """Per-axis standard uncertainty (Å) from the curvature ``F`` and the outer products of the
    per-projection gradients ``M``: ``F^-1 M F^-1`` (robust to residuals correlated within a
    projection), never below the pure-noise ``noise^2 F^-1``; 2n/(2n-3) for the 3 fitted
    coordinates."""
    inv = np.linalg.inv(fisher + np.eye(3) * 1e-12 * np.trace(fisher, axis1=1, axis2=2)[:, None, None].clip(1e-30))
    cov = np.einsum("nij,njk,nkl->nil", inv, meat, inv) * (2 * n_projections / max(2 * n_projections - 3, 1))
    floor = noise_floor**2 * inv
    var = np.maximum(np.diagonal(cov, axis1=1, axis2=2), np.diagonal(floor, axis1=1, axis2=2))
    return np.sqrt(np.clip(var, 0, None))


def _noise_floor(residual: np.ndarray) -> float:
    """Standard deviation of the residual where it is noise alone (median absolute deviation of
    neighbour differences, robust to the atoms' structure)."""
    d = np.diff(residual, axis=-1).ravel()
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2)) or 1e-12


def residual_tomogram(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                      volume_shape, iterations: int = 10, device="cpu", progress=None, cancel=None,
                      extended_object: bool = False, model: Optional[np.ndarray] = None) -> np.ndarray:
    """Where the measurement disagrees with the atom model, in 3D: the tilt series minus the
    model's projections, reconstructed (SIRT without positivity). Positive where the data wants
    more density than the model has (a missed atom), negative where the model has too much (a
    false atom).

    Parameters
    ----------
    positions, classes, heights, b_factors : as :func:`atom_model_projections`
    tilts : (a, nv, nu) array
        The measured (aligned) tilt series.
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å; also the voxel size.
    volume_shape : (nz, ny, nx)
    iterations : int
        SIRT iterations (few: the residual is mostly noise, more would fit it).
    device : str
    progress, cancel : progress callback and ``threading.Event``
    extended_object : bool
        The sample extends beyond the box (a film): the residual from outside it is explained
        by voxels outside the box, as in :func:`~napari_aet.core.reconstruct.reconstruct`.
    model : (a, nv, nu) array, optional
        The model's projections, when already computed.

    Returns
    -------
    (nz, ny, nx) float32 array
        Same intensity units as a reconstruction of the tilt series.
    """
    from .reconstruct import reconstruct

    data = np.asarray(tilts, np.float32)
    if model is None:
        model = atom_model_projections(positions, classes, heights, b_factors, angles, data.shape[1:], pixel_size,
                                       device)
    diff = data - np.asarray(model, np.float32)
    # SIRT from zero without positivity is linear: a residual that is mostly negative (which
    # reconstruct refuses as an inverted tilt series) is reconstructed negated, then negated back
    sign = 1.0 if np.clip(diff, 0, None).sum(dtype=np.float64) >= -np.clip(diff, None, 0).sum(dtype=np.float64) else -1.0
    if not np.any(diff):
        return np.zeros(tuple(int(v) for v in volume_shape), np.float32)
    rec = reconstruct(sign * diff, angles, pixel_size, method="sirt", iterations=iterations,
                      volume_shape=tuple(int(v) for v in volume_shape), positivity=False, device=device,
                      progress=progress, cancel=cancel, extended_object=extended_object)
    return sign * rec.volume


def least_certain_order(table) -> np.ndarray:
    """Row order of an atoms table from the least to the most certain atom.

    The score is the presence's significance (``-Phi^-1(presence)``) plus a physical test:
    ``40 |d - d_med| / d_med`` with ``d`` the atom's nearest-neighbour distance and ``d_med``
    its median over the atoms (an atom a bond length from where it belongs sits too close to
    a neighbour; BENCHMARKS.md "Confidence"); ties go to the largest position uncertainty.
    Rows without a presence (atoms added by hand) come last.

    Parameters
    ----------
    table : DataFrame
        With :data:`CONFIDENCE_COLUMNS` (from ``run`` or ``trace`` with a tilt series).

    Returns
    -------
    (n,) int array
        Row positions (``iloc``), least certain first.
    """
    from scipy.special import ndtri
    from scipy.spatial import cKDTree

    missing = [c for c in CONFIDENCE_COLUMNS if c not in table.columns]
    if missing:
        raise AETInputError(f"the atoms table has no {', '.join(missing)} column; trace or run with a tilt series "
                            "to get every atom's confidence")
    presence = table["presence"].to_numpy(float)
    score = -ndtri(np.clip(np.nan_to_num(presence, nan=1.0), 1e-6, 1 - 1e-6))
    atoms = (table["atom"].to_numpy() == 1) if "atom" in table.columns else np.ones(len(table), bool)
    xyz = table[["x", "y", "z"]].to_numpy(float)
    if atoms.sum() >= 3:
        nn = cKDTree(xyz[atoms]).query(xyz[atoms], k=2)[0][:, 1]
        typical = float(np.median(nn))
        score[atoms] += 40.0 * np.abs(nn - typical) / max(typical, 1e-6)
    score[np.isnan(presence)] = -np.inf
    sigma = np.nan_to_num(table[["sigma_x_pm", "sigma_y_pm", "sigma_z_pm"]].to_numpy(float), nan=0.0)
    return np.lexsort((-np.linalg.norm(sigma, axis=1), -np.round(score, 3)))

"""Alignment of tilt series: centre of mass, cross-correlation, tilt axis, projection matching.

Shifts are ``(du, dv)`` in pixels per projection: how far projection ``a`` is displaced from
the ideal geometry (an atom that should land at ``u`` is seen at ``u + du``); correcting a
tilt series means shifting it by ``-shifts`` (:func:`apply_shifts`). Angles are degrees.

What projection matching cannot see: a translation of the whole object (for tilts about y,
``du = Tx cos t + Tz sin t`` and ``dv = Ty`` for all projections alike) and a common offset of
all tilt angles (a rotation of the object). Centre-of-mass alignment fixes the translation
(the object's centre of mass goes to the tilt axis) and the refinement keeps the mean angle
offset at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import geometry
from .errors import AETInputError, Reporter

__all__ = [
    "AlignmentResult",
    "apply_shifts",
    "centre_of_mass_shifts",
    "cross_correlation_shifts",
    "tilt_axis_offset",
    "projection_matching",
    "align",
]


@dataclass
class AlignmentResult:
    """Shifts (px), refined angles (degrees) and the history of the refinement."""

    shifts: np.ndarray  # (N, 2) du, dv
    angles: np.ndarray  # (N,) or (N, 3), refined
    tilt_axis_offset: float = 0.0  # px, along u, from the raw centre-of-mass trajectory
    history: list = field(default_factory=list)  # per round: R-factor, mean |shift change|, mean |angle change|

    def summary(self) -> dict:
        return {
            "shifts_px": np.round(self.shifts, 4).tolist(),
            "angles_deg": np.round(self.angles, 4).tolist(),
            "tilt_axis_offset_px": round(float(self.tilt_axis_offset), 4),
            "history": self.history,
        }

    @classmethod
    def from_summary(cls, summary: dict, where: str = "the alignment") -> "AlignmentResult":
        """The alignment as :meth:`summary` wrote it (a report or a sidecar JSON)."""
        try:
            shifts = np.asarray(summary["shifts_px"], float)
            angles = np.asarray(summary["angles_deg"], float)
        except (KeyError, TypeError, ValueError):
            raise AETInputError(f"{where} is malformed (needs shifts_px and angles_deg); fix or remove it, "
                                "or align again") from None
        if shifts.ndim != 2 or shifts.shape[1] != 2 or len(angles) != len(shifts) or not (
                np.isfinite(shifts).all() and np.isfinite(angles).all()):
            raise AETInputError(f"{where} is malformed (shifts {shifts.shape}, angles {angles.shape}); "
                                "fix or remove it, or align again")
        return cls(shifts, angles, float(summary.get("tilt_axis_offset_px", 0.0)), list(summary.get("history", [])))

    def apply(self, ts):
        """The aligned tilt series: each projection moved back by its shift, with the refined
        angles; ``ts`` is a :class:`~napari_aet.core.io.TiltSeries` of the same projections.

        Every caller (``run``, ``reconstruct --align``, ``trace``, ``enhance`` and the
        workbench) aligns through this one method.
        """
        from .io import TiltSeries

        if len(ts.data) != len(self.shifts):
            raise AETInputError(f"the alignment is for {len(self.shifts)} projections but the tilt series has "
                                f"{len(ts.data)}; give the tilt series it was measured on")
        meta = dict(ts.metadata or {}) | {"alignment": self.summary()}
        return TiltSeries(apply_shifts(ts.data, -self.shifts), np.asarray(self.angles, float), ts.pixel_size,
                          ts.source, meta)


def apply_shifts(tilts: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each projection by whole or fractional pixels (Fourier shift, no blur).

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
    shifts : (n_angles, 2) array
        ``(du, dv)`` in pixels for each projection.

    Returns
    -------
    (n_angles, nv, nu) float32 array
    """
    from scipy import ndimage

    tilts = np.asarray(tilts, np.float32)
    shifts = np.asarray(shifts, float).reshape(len(tilts), 2)
    out = np.empty_like(tilts)
    for a, (du, dv) in enumerate(shifts):
        if du == 0 and dv == 0:
            out[a] = tilts[a]
            continue
        f = ndimage.fourier_shift(np.fft.rfft2(tilts[a]), (dv, du), n=tilts.shape[2])
        out[a] = np.fft.irfft2(f, s=tilts.shape[1:])
    return out


def _background(img: np.ndarray) -> float:
    border = np.concatenate([img[:2].ravel(), img[-2:].ravel(), img[:, :2].ravel(), img[:, -2:].ravel()])
    return float(np.median(border))


def centre_of_mass_shifts(tilts: np.ndarray) -> np.ndarray:
    """Shifts that put each projection's centre of mass on the detector centre.

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array

    Returns
    -------
    (n_angles, 2) array
        ``(du, dv)`` in pixels.
    """
    tilts = np.asarray(tilts, np.float64)
    n, nv, nu = tilts.shape
    vv = np.arange(nv) - nv // 2
    uu = np.arange(nu) - nu // 2
    out = np.zeros((n, 2))
    for a, img in enumerate(tilts):
        w = np.clip(img - _background(img), 0, None)
        total = w.sum()
        if total <= 0:
            raise AETInputError(f"projection {a} has no signal above its background; check the tilt series")
        out[a] = [(w.sum(0) * uu).sum() / total, (w.sum(1) * vv).sum() / total]
    return out


def _phase_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 50) -> np.ndarray:
    """(du, dv) by which ``moving`` is displaced from ``reference`` (sub-pixel)."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(reference, moving, upsample_factor=upsample, normalization=None)
    return -np.array([shift[1], shift[0]])


def cross_correlation_shifts(tilts: np.ndarray, angles, blur: float = 3.0) -> np.ndarray:
    """Shifts from cross-correlating neighbouring projections, chained from the lowest tilt.

    Neighbours look alike, so each pair gives a reliable relative shift, but the chain also
    picks up the object's own apparent motion (``x cos t + z sin t`` along u) and drifts;
    that smooth part is taken from the centre-of-mass shifts instead (a fit of their
    difference to ``cos t, sin t, 1`` along u and a constant along v). Projections are
    low-passed by ``blur`` pixels first, so that atomic lattice fringes (which repeat every
    few pixels) cannot lock the correlation onto a wrong lattice offset.

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
    angles : (n_angles,) or (n_angles, 3) array
        Degrees.
    blur : float
        Gaussian low-pass, pixels.

    Returns
    -------
    (n_angles, 2) array
        ``(du, dv)`` in pixels.
    """
    from scipy import ndimage

    tilts = np.stack([ndimage.gaussian_filter(np.asarray(p, np.float32), blur) for p in tilts])
    tilt = geometry.as_euler_angles(angles)[:, 1]
    order = np.argsort(tilt)
    start = int(np.argmin(np.abs(tilt[order])))
    shifts = np.zeros((len(tilts), 2))
    for direction in (1, -1):
        k = start
        while 0 <= k + direction < len(order):
            a, b = order[k], order[k + direction]
            shifts[b] = shifts[a] + _phase_shift(tilts[a], tilts[b])
            k += direction
    diff = centre_of_mass_shifts(tilts) - shifts
    t = np.deg2rad(tilt)
    design = np.stack([np.cos(t), np.sin(t), np.ones_like(t)], 1) if np.ptp(t) > np.deg2rad(20) else np.ones((len(t), 1))
    coef, *_ = np.linalg.lstsq(design, diff[:, 0], rcond=None)
    shifts[:, 0] += design @ coef
    shifts[:, 1] += diff[:, 1].mean()
    return shifts


def tilt_axis_offset(tilts: np.ndarray, angles) -> float:
    """Tilt-axis position along u for single-axis data, from the centre-of-mass trajectory
    ``u(t) = a cos t + b sin t + offset``.

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
    angles : (n_angles,) array
        Tilts, degrees.

    Returns
    -------
    float
        The offset, pixels from the detector centre.
    """
    com = centre_of_mass_shifts(tilts)[:, 0]
    t = np.deg2rad(geometry.as_euler_angles(angles)[:, 1])
    design = np.stack([np.cos(t), np.sin(t), np.ones_like(t)], 1)
    if np.ptp(t) < np.deg2rad(20):
        raise AETInputError("tilt range under 20°: the tilt axis cannot be located; align with centre of mass only")
    coef, *_ = np.linalg.lstsq(design, com, rcond=None)
    return float(coef[2])


def _gaussian_blur(img, sigma: float):
    """2D Gaussian blur (pixels) of a torch image through its Fourier transform."""
    import torch

    if sigma <= 0:
        return img
    nv, nu = img.shape
    fv = torch.fft.fftfreq(nv, device=img.device)[:, None]
    fu = torch.fft.rfftfreq(nu, device=img.device)[None, :]
    h = torch.exp(-2 * (torch.pi * sigma) ** 2 * (fv**2 + fu**2))
    return torch.fft.irfft2(torch.fft.rfft2(img) * h, s=(nv, nu))


def _refine_angle(vol_t, b_a, euler_a, step: float, device, blur: float = 0.0) -> float:
    """Line search for the tilt angle of one projection (degrees): walk downhill in steps
    of ``step`` until bracketed, then parabolic steps with a shrinking bracket.

    ``blur`` (pixels) optionally low-passes both images before comparing them.
    """
    from .projector import Projector

    target = _gaussian_blur(b_a, blur)

    def cost(theta):
        e = euler_a.copy()
        e[1] = theta
        p = Projector(vol_t.shape, e[None], b_a.shape, device=device)
        return float(((_gaussian_blur(p.forward(vol_t)[0], blur) - target) ** 2).sum())

    return _line_search(cost, float(euler_a[1]), step)


def _atom_model(volume: np.ndarray, min_distance_px: float):
    """Atoms traced in a reconstruction (pixel units, sample frame) and their intensities."""
    from .trace import local_maxima

    xyz, intensity = local_maxima(volume, 1.0, min_distance=min_distance_px)
    if len(xyz) < 3:
        raise AETInputError("fewer than 3 atoms found in the reconstruction: angles cannot be refined against atoms; use angle_model='volume'")
    return xyz, np.clip(intensity, 0, None)


def _refine_angle_atoms(xyz, weights, b_a, euler_a, sigma_px: float, step: float) -> float:
    """Tilt angle of one projection against the traced atoms, projected analytically."""
    from .forward import GaussianAtoms

    atoms = GaussianAtoms(b_factor=8 * np.pi**2 * sigma_px**2)
    target = np.asarray(b_a, np.float64)

    def cost(theta):
        e = np.array(euler_a, float)
        e[1] = theta
        model = atoms.project(xyz, e[None], target.shape, 1.0, weights=weights)[0].astype(np.float64)
        scale = float((model * target).sum() / max((model * model).sum(), 1e-30))
        return float(((scale * model - target) ** 2).sum())

    return _line_search(cost, float(euler_a[1]), step)


def _line_search(cost, theta: float, step: float) -> float:
    """Minimise ``cost`` near ``theta``: walk downhill in steps until bracketed, then parabolas."""
    h = float(step)
    c_0 = cost(theta)
    for _ in range(12):
        c_m, c_p = cost(theta - h), cost(theta + h)
        if c_m < c_0 and c_m <= c_p:
            theta, c_0 = theta - h, c_m
            continue
        if c_p < c_0:
            theta, c_0 = theta + h, c_p
            continue
        denom = c_m - 2 * c_0 + c_p
        if denom > 0:
            cand = theta + 0.5 * h * (c_m - c_p) / denom
            c_c = cost(cand)
            if c_c < c_0:
                theta, c_0 = cand, c_c
        h /= 3
        if h < 0.005:
            break
    return theta


def _fit_atom_width(xyz, weights, data, euler, n_pick: int = 5) -> float:
    """Gaussian width (px) of the atoms in the projections, by least squares on a few projections.

    The width must be right to a few percent: with atoms narrower than a pixel, a wrong
    width leaves residuals that depend on where each atom falls in its pixel and biases
    the angles by tenths of a degree.
    """
    from .forward import GaussianAtoms

    picks = np.linspace(0, len(data) - 1, min(n_pick, len(data))).astype(int)

    def cost(sigma):
        sigma = abs(sigma) + 0.05
        total = 0.0
        for a in picks:
            atoms = GaussianAtoms(b_factor=8 * np.pi**2 * sigma**2)
            m = atoms.project(xyz, euler[a][None], data.shape[1:], 1.0, weights=weights)[0].astype(np.float64)
            b = data[a].astype(np.float64)
            scale = (m * b).sum() / max((m * m).sum(), 1e-30)
            total += ((scale * m - b) ** 2).sum()
        return total

    return abs(_line_search(cost, 1.0, 0.25)) + 0.05


# Projection matching stops early once no projection's shift changes by more than this
# (pixels) and no angle by more than this (degrees) in a round.
STOP_SHIFT_PX = 0.05
STOP_ANGLE_DEG = 0.02


def projection_matching(
    tilts: np.ndarray,
    angles,
    shifts: Optional[np.ndarray] = None,
    rounds: int = 6,
    recon_iterations: int = 100,
    refine_angles: bool = True,
    angle_model: str = "atoms",
    pixel_size: float = 0.357,
    min_distance: float = 2.0,
    angle_step: float = 0.5,
    device: str = "cpu",
    progress=None,
    cancel=None,
    warm_iterations: int = 40,
) -> AlignmentResult:
    """Refine shifts (and tilt angles) against the current reconstruction.

    Each round: correct the data with the current shifts, reconstruct (RESIRE), reproject,
    and re-estimate each projection's shift by cross-correlation with its reprojection.
    After the first round each reconstruction starts from the previous one. Tilt angles
    (single-axis data) are then refined by a line search on the projection error: against
    the atoms traced in the reconstruction and projected analytically (``angle_model='atoms'``,
    the default for atomic-resolution data: the atom positions are fixed by all projections
    together, so one projection's wrong angle shows), or against the reconstructed volume
    (``'volume'``; weaker, since a voxel reconstruction can absorb angle errors).

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
    angles : (n_angles,) or (n_angles, 3) array
        Degrees.
    shifts : (n_angles, 2) array, optional
        Starting shifts (px); default the centre-of-mass ones.
    rounds : int
        Most rounds; it stops when no shift moves by 0.05 px and no angle by 0.02°.
    recon_iterations, warm_iterations : int
        RESIRE iterations of the first round and of the warm-started ones.
    refine_angles : bool
    angle_model : {"atoms", "volume"}
    pixel_size : float
        Å; with ``min_distance`` (Å) it sets the traced atoms' separation.
    angle_step : float
        First step of the angle line search, degrees.
    device : {"cpu", "cuda", "auto"}
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.

    Returns
    -------
    AlignmentResult
    """
    import torch

    from .projector import Projector, resolve_device
    from .reconstruct import reconstruct

    tilts = np.asarray(tilts, np.float32)
    n, nv, nu = tilts.shape
    euler = geometry.as_euler_angles(angles)
    single = geometry.is_single_axis(euler)
    if angle_model not in ("atoms", "volume"):
        raise AETInputError(f"angle model {angle_model!r} unknown; use atoms or volume")
    shifts = np.zeros((n, 2)) if shifts is None else np.array(shifts, float)
    dev = resolve_device(device)
    rep = Reporter(rounds, progress, cancel)
    history = []
    previous = None
    for r in range(rounds):
        data = apply_shifts(tilts, -shifts)
        current = euler[:, 1] if single else euler
        rec = reconstruct(data, current, pixel_size=1.0, iterations=recon_iterations if previous is None else warm_iterations,
                          device=str(dev), check_memory=False, initial_volume=previous)
        previous = rec.volume
        vol_t = torch.as_tensor(rec.volume, device=dev)
        reproj = Projector(rec.volume.shape, current, (nv, nu), device=dev).forward(vol_t).cpu().numpy()
        d_shift = np.array([_phase_shift(reproj[a], data[a]) for a in range(n)])
        shifts += d_shift
        d_angle = np.zeros(n)
        if refine_angles and single:
            step = angle_step / (1 + r)
            corrected = apply_shifts(tilts, -shifts)
            if angle_model == "atoms":
                xyz, weights = _atom_model(rec.volume, min_distance / pixel_size)
                sigma = _fit_atom_width(xyz, weights, corrected, euler)
                new = np.array([_refine_angle_atoms(xyz, weights, corrected[a], euler[a], sigma, step) for a in range(n)])
            else:
                data_t = torch.as_tensor(corrected, device=dev)
                new = np.array([_refine_angle(vol_t, data_t[a], euler[a], step, dev) for a in range(n)])
            d_angle = new - euler[:, 1]
            d_angle -= d_angle.mean()  # a common offset is a rotation of the object: unobservable
            euler[:, 1] += d_angle
        history.append({
            "round": r + 1, "r_factor": rec.r_factors[-1],
            "mean_abs_shift_change_px": float(np.abs(d_shift).mean()),
            "mean_abs_angle_change_deg": float(np.abs(d_angle).mean()),
        })
        rep.step(f"R = {rec.r_factors[-1]:.4f}")
        # converged: the shifts and angles no longer move (each round costs a reconstruction)
        if r >= 1 and np.abs(d_shift).max() < STOP_SHIFT_PX and np.abs(d_angle).max() < STOP_ANGLE_DEG:
            history[-1]["converged"] = True
            rep.step("converged", n=rounds - r - 1)
            break
    refined = euler[:, 1].copy() if single else euler
    return AlignmentResult(shifts=shifts, angles=refined, history=history)


def align(
    tilts: np.ndarray,
    angles,
    method: str = "projection-matching",
    rounds: int = 6,
    refine_angles: bool = True,
    angle_model: str = "atoms",
    pixel_size: float = 0.357,
    device: str = "cpu",
    progress=None,
    cancel=None,
) -> AlignmentResult:
    """Align a tilt series: the shift of every projection and, optionally, refined angles.

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
        The tilt series, projection ``a`` at ``tilts[a]``.
    angles : (n_angles,) or (n_angles, 3) array
        Tilt angles or Z-Y-Z Euler angles, degrees.
    method : {"projection-matching", "cross-correlation", "com"}
        ``com``: centre of mass only; ``cross-correlation``: neighbouring projections;
        ``projection-matching`` (default): centre of mass, then rounds of reconstruction,
        re-projection and cross-correlation (:func:`projection_matching`).
    rounds : int
        Projection-matching rounds (it stops earlier once shifts and angles settle).
    refine_angles : bool
        Also refine the tilt angles (projection matching only).
    angle_model : {"atoms", "volume"}
        What the angles are refined against.
    pixel_size : float
        Detector pixel size, Å; sets the atoms' minimum distance (2 Å) for angle refinement.
    device : {"cpu", "cuda", "auto"}
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.

    Returns
    -------
    AlignmentResult
        ``shifts`` (n_angles, 2) in px (du, dv), ``angles`` refined, ``history`` per round;
        ``result.apply(tilt_series)`` gives the aligned tilt series.

    Examples
    --------
    >>> res = align(ts.data, ts.angles, pixel_size=ts.pixel_size)  # doctest: +SKIP
    >>> aligned = res.apply(ts)  # doctest: +SKIP
    """
    tilts = np.asarray(tilts, np.float32)
    euler = geometry.as_euler_angles(angles)
    offset = tilt_axis_offset(tilts, angles) if geometry.is_single_axis(euler) and np.ptp(euler[:, 1]) >= 20 else 0.0
    if method == "com":
        return AlignmentResult(centre_of_mass_shifts(tilts), np.asarray(angles, float).copy(), offset)
    if method == "cross-correlation":
        return AlignmentResult(cross_correlation_shifts(tilts, angles), np.asarray(angles, float).copy(), offset)
    if method != "projection-matching":
        raise AETInputError(f"alignment method {method!r} unknown; use com, cross-correlation or projection-matching")
    start = centre_of_mass_shifts(tilts)
    res = projection_matching(tilts, angles, start, rounds=rounds, refine_angles=refine_angles,
                              angle_model=angle_model, pixel_size=pixel_size, device=device,
                              progress=progress, cancel=cancel)
    res.tilt_axis_offset = offset
    return res

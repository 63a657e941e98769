"""Preparing a measured tilt series: the tilt axis's in-plane angle, background, intensity
normalisation across tilts and denoising. Every step is optional and returns what it did, for
the report.

Tilt axis (single-axis series): the profile of a projection along the tilt axis (its
intensity summed across the axis) is the same at every tilt, because rotating the object
about the axis only moves mass across it. The in-plane angle is the one that makes those
profiles agree best (a coarse search over ±90°, then a bounded 1D refinement), each profile
centred on its centroid so that residual shifts do not matter. The angle is then applied by
rotating every projection so that the axis runs along v, which lets the fast single-axis
projector reconstruct it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from . import geometry
from .errors import AETInputError

__all__ = [
    "axis_profiles",
    "estimate_tilt_axis_angle",
    "rotate_projections",
    "subtract_background",
    "normalize_intensity",
    "denoise_bm3d",
]


def axis_profiles(data: np.ndarray, alpha_deg: float, oversample: int = 2) -> np.ndarray:
    """Profiles ``(a, n)`` of each projection along an in-plane axis at ``alpha_deg`` from v
    (counter-clockwise towards -u), binned at ``1 / oversample`` pixel, each centred on its
    centroid (linear interpolation).

    Parameters
    ----------
    data : (a, nv, nu) array
    alpha_deg : float
        Degrees.
    oversample : int

    Returns
    -------
    (a, n) array
    """
    a, nv, nu = data.shape
    v, u = np.mgrid[:nv, :nu].astype(np.float64)
    u -= geometry.centre_index(nu)
    v -= geometry.centre_index(nv)
    al = math.radians(alpha_deg)
    s = (-u * math.sin(al) + v * math.cos(al)).ravel() * oversample
    n = int(2 * math.ceil(math.hypot(nu, nv) / 2 * oversample) + 1)
    half = n // 2
    flat = data.reshape(a, -1).astype(np.float64)
    out = np.zeros((a, n))
    for k in range(a):
        w = flat[k]
        tot = w.sum()
        centroid = float((w * s).sum() / tot) if tot > 0 else 0.0
        x = s - centroid + half
        i0 = np.floor(x).astype(np.int64)
        f = x - i0
        ok0 = (i0 >= 0) & (i0 < n)
        ok1 = (i0 + 1 >= 0) & (i0 + 1 < n)
        out[k] = (np.bincount(i0[ok0], weights=(w * (1 - f))[ok0], minlength=n)
                  + np.bincount(i0[ok1] + 1, weights=(w * f)[ok1], minlength=n))
    return out


def _disagreement(data: np.ndarray, alpha_deg: float, smooth_px: float = 0.0) -> float:
    """Spread of the normalised axis profiles about their mean (0 when they all agree).

    ``smooth_px`` blurs the profiles first: an atomic particle's profile is a comb of lattice
    planes, so the agreement has a deep but narrow minimum that a coarse search would step over.
    """
    from scipy.ndimage import gaussian_filter1d

    p = axis_profiles(data, alpha_deg)
    if smooth_px > 0:
        p = gaussian_filter1d(p, 2 * smooth_px, axis=1)  # profiles are binned at half a pixel
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-30)
    mean = p.mean(axis=0)
    return float(((p - mean) ** 2).sum() / max((mean**2).sum() * len(p), 1e-30))


def estimate_tilt_axis_angle(data: np.ndarray, coarse_step: float = 1.0, tolerance: float = 0.005) -> dict:
    """In-plane angle (degrees, in (-90, 90]) of the tilt axis of a single-axis tilt series.

    The sign convention is the one of ``--tilt-axis-angle``: from the image's v axis,
    counter-clockwise towards -u. Returns the angle, the profile disagreement there and at 0°,
    and the angle 90° away (the common-line method cannot tell the two apart only for a
    particle that is symmetric about both; a ratio near 1 says so).

    Parameters
    ----------
    data : (a, nv, nu) array
    coarse_step : float
        Degrees of the coarse search.
    tolerance : float
        Degrees at which the fine search stops.

    Returns
    -------
    dict
        ``tilt_axis_angle_deg`` and the profile disagreements behind it.
    """
    from scipy.optimize import minimize_scalar

    d = np.asarray(data, dtype=np.float64)
    if d.ndim != 3 or d.shape[0] < 3:
        raise AETInputError("the tilt axis needs a stack of at least 3 projections")
    d = np.clip(d - np.median(d, axis=(1, 2), keepdims=True), 0, None)  # background off: it is not tilt-invariant
    # coarse to fine: wide wells first (blurred profiles), then the sharp one
    grid = np.arange(-90.0, 90.0, coarse_step)
    scores = np.array([_disagreement(d, g, smooth_px=4.0) for g in grid])
    centre, half = float(grid[int(np.argmin(scores))]), coarse_step
    for smooth in (2.0, 1.0, 0.5):
        fine = np.linspace(centre - half, centre + half, 21)
        centre = float(fine[int(np.argmin([_disagreement(d, g, smooth) for g in fine]))])
        half /= 5
    res = minimize_scalar(lambda x: _disagreement(d, x, 0.5), bounds=(centre - 2 * half, centre + 2 * half),
                          method="bounded", options={"xatol": tolerance})
    alpha = float((res.x + 90.0) % 180.0 - 90.0)
    if alpha == -90.0:
        alpha = 90.0
    other = alpha - 90.0 if alpha > 0 else alpha + 90.0
    return {"tilt_axis_angle_deg": round(alpha, 4), "disagreement": float(res.fun),
            "disagreement_at_0": _disagreement(d, 0.0), "ambiguity_ratio": float(res.fun / max(_disagreement(d, other), 1e-30))}


def rotate_projections(data: np.ndarray, alpha_deg: float, order: int = 3) -> np.ndarray:
    """Rotate every projection so that an in-plane tilt axis at ``alpha_deg`` runs along v
    (about the detector centre of the contract, cubic spline, zero outside).

    Parameters
    ----------
    data : (a, nv, nu) array
    alpha_deg : float
        Degrees.
    order : int
        Spline order.

    Returns
    -------
    (a, nv, nu) float32 array
    """
    from scipy import ndimage

    a, nv, nu = data.shape
    al = math.radians(alpha_deg)
    c, s = math.cos(al), math.sin(al)
    cu, cv = geometry.centre_index(nu), geometry.centre_index(nv)
    # output (v', u') samples the input at the rotated position: (u, v) = R(alpha) (u', v')
    matrix = np.array([[c, s], [-s, c]])  # acting on (v', u') offsets: v = s u' + c v', u = c u' - s v'
    offset = np.array([cv, cu]) - matrix @ np.array([cv, cu])
    out = np.empty_like(np.asarray(data, np.float32))
    for k in range(a):
        out[k] = ndimage.affine_transform(np.asarray(data[k], np.float32), matrix, offset=offset, order=order,
                                          mode="constant", cval=0.0)
    return out


def _particle_mask(img: np.ndarray, dilate_px: int) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(img, 2.0)
    try:
        t = threshold_otsu(smooth)
    except ValueError:
        return np.zeros(img.shape, bool)
    return ndimage.binary_dilation(smooth > t, iterations=dilate_px)


def subtract_background(data: np.ndarray, order: int = 1, dilate_px: int = 6) -> tuple:
    """Subtract a plane (``order`` 1) or quadratic surface (2), fitted by least squares to the
    pixels outside each projection's particle mask (Otsu on a smoothed copy, dilated).
    Returns ``(data, info)``.

    Parameters
    ----------
    data : (a, nv, nu) array
    order : {0, 1, 2}
        Constant, plane or quadratic surface.
    dilate_px : int
        Pixels the particle mask is grown by.

    Returns
    -------
    data : (a, nv, nu) float32 array
    info : dict
        What was subtracted.
    """
    if order not in (0, 1, 2):
        raise AETInputError(f"background order {order}; use 0 (constant), 1 (plane) or 2 (quadratic)")
    a, nv, nu = data.shape
    v, u = np.mgrid[-1:1:nv * 1j, -1:1:nu * 1j]
    terms = [np.ones_like(u)] + ([u, v] if order >= 1 else []) + ([u * u, u * v, v * v] if order >= 2 else [])
    basis = np.stack([t.ravel() for t in terms], 1)
    out = np.empty_like(np.asarray(data, np.float32))
    levels = []
    for k in range(a):
        img = np.asarray(data[k], np.float64)
        outside = ~_particle_mask(img, dilate_px).ravel()
        if outside.sum() < 10 * basis.shape[1]:
            raise AETInputError(f"projection {k} has almost no background outside the particle; "
                                "crop less tightly or skip background subtraction")
        coef, *_ = np.linalg.lstsq(basis[outside], img.ravel()[outside], rcond=None)
        surface = (basis @ coef).reshape(nv, nu)
        out[k] = (img - surface).astype(np.float32)
        levels.append(float(coef[0]))
    return out, {"background_order": order, "background_level_mean": float(np.mean(levels))}


def normalize_intensity(data: np.ndarray, factors: Optional[Sequence[float]] = None) -> tuple:
    """Scale projections to equal total intensity (mass is conserved across tilts in HAADF),
    or by measured drift ``factors`` (one per projection, the measured/nominal intensity).

    Parameters
    ----------
    data : (a, nv, nu) array
    factors : sequence of float, optional
        Measured / nominal intensity of each projection.

    Returns
    -------
    data : (a, nv, nu) float32 array
    info : dict
        The factors applied.
    """
    d = np.asarray(data, np.float32)
    if factors is not None:
        f = np.asarray(factors, np.float64)
        if f.shape != (len(d),) or not np.all(np.isfinite(f)) or np.any(f <= 0):
            raise AETInputError(f"{len(f)} drift factors for {len(d)} projections, or some are not positive; "
                                "give one positive factor per projection")
    else:
        totals = d.reshape(len(d), -1).sum(1, dtype=np.float64)
        if np.any(totals <= 0):
            raise AETInputError("a projection has no positive total intensity; subtract less background")
        f = totals / totals.mean()
    return (d / f[:, None, None].astype(np.float32)), {"intensity_factors": np.round(f, 5).tolist()}


def denoise_bm3d(data: np.ndarray, sigma: Optional[float] = None) -> tuple:
    """BM3D denoising of each projection (the ``bm3d`` package), with the noise level
    estimated from the data (wavelet median absolute deviation) unless ``sigma`` is given.

    Parameters
    ----------
    data : (a, nv, nu) array
    sigma : float, optional
        Noise standard deviation, the data's units.

    Returns
    -------
    data : (a, nv, nu) float32 array
    info : dict
        The noise level used.
    """
    try:
        import bm3d
    except ImportError:
        raise AETInputError("BM3D denoising needs the bm3d package; pip install bm3d")
    from skimage.restoration import estimate_sigma

    d = np.asarray(data, np.float32)
    out = np.empty_like(d)
    sigmas = []
    for k in range(len(d)):
        s = float(sigma) if sigma is not None else float(estimate_sigma(d[k]))
        sigmas.append(s)
        out[k] = np.asarray(bm3d.bm3d(d[k], sigma_psd=max(s, 1e-12)), np.float32) if s > 0 else d[k]
    return out, {"bm3d_sigma": np.round(sigmas, 6).tolist()}


def prepare(ts, background: Optional[str] = None, normalize: bool = False, denoise: Optional[str] = None,
            tilt_axis: Optional[str] = None, progress=None) -> tuple:
    """Apply the chosen preparation steps to a :class:`~napari_aet.core.io.TiltSeries`, in the
    order background -> normalisation -> denoising -> tilt axis. Returns ``(TiltSeries, info)``.

    ``background``: None, 'constant', 'plane' or 'quadratic'. ``normalize``: equal total
    intensity. ``denoise``: None or 'bm3d'. ``tilt_axis``: None, 'auto' (estimate, then rotate
    the projections so the axis runs along v) or a number of degrees to rotate by.
    """
    from .io import TiltSeries

    data, info = np.asarray(ts.data, np.float32), {}
    if background:
        orders = {"constant": 0, "plane": 1, "quadratic": 2}
        if background not in orders:
            raise AETInputError(f"background {background!r} unknown; use constant, plane or quadratic")
        data, i = subtract_background(data, orders[background])
        info["background"] = {"model": background} | i
    if normalize:
        data, i = normalize_intensity(data)
        info["normalize"] = i
    if denoise:
        if denoise != "bm3d":
            raise AETInputError(f"denoising {denoise!r} unknown; use bm3d")
        data, i = denoise_bm3d(data)
        info["denoise"] = {"method": "bm3d"} | i
    angles = ts.angles
    if tilt_axis is not None:
        if angles is None or np.asarray(angles).ndim != 1:
            raise AETInputError("the tilt axis can be found and applied only for single-axis tilts; "
                                "give Euler angles with the axis in them instead (--angle-convention tilt-axis)")
        if str(tilt_axis) == "auto":
            est = estimate_tilt_axis_angle(data)
            alpha = est["tilt_axis_angle_deg"]
            info["tilt_axis"] = est | {"applied": True}
        else:
            try:
                alpha = float(tilt_axis)
            except ValueError:
                raise AETInputError(f"tilt axis {tilt_axis!r}: give 'auto' or an angle in degrees")
            if not -180 <= alpha <= 180:
                raise AETInputError(f"tilt-axis angle {alpha:g}° is outside ±180°")
            info["tilt_axis"] = {"tilt_axis_angle_deg": alpha, "applied": True, "estimated": False}
        data = rotate_projections(data, alpha)
    out = TiltSeries(data, angles, ts.pixel_size, ts.source, dict(ts.metadata or {}) | {"preprocessing": info})
    return out, info

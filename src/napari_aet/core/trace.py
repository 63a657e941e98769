"""Atom tracing in tomograms: local maxima, sub-voxel positions, atoms told from noise.

1. Local maxima of the tomogram (optionally upsampled first), accepted greedily by height
   with a minimum distance between atoms.
2. Sub-voxel position of each peak: along each axis, the closed-form fit of a Gaussian
   through the peak voxel and its two neighbours (``fit='gaussian'``, exact for sampled
   Gaussian atoms), or the vertex of a parabola (``fit='parabola'``).
3. Integrated intensity of each peak (sum over a sphere of ``radius`` Å around it, so it does
   not depend on where the atom sits inside its voxel), then 1D k-means into ``n_classes``
   classes: the lowest class is noise (``atom = 0``), the others atoms (``atom = 1``,
   ``species`` from ``species_names`` when given). An optional tight ``support`` marks every
   peak outside it as a non-atom.

Positions come out in sample-frame Å (contract), as an atoms table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import geometry
from .errors import AETInputError, Reporter

__all__ = [
    "TraceResult",
    "trace_atoms",
    "find_peaks",
    "subvoxel_positions",
    "snap_to_maxima",
    "integrated_intensity",
    "kmeans_1d",
    "local_maxima",
]


@dataclass
class TraceResult:
    """Traced atoms (contract table: x, y, z, intensity, atom, species) and how."""

    table: object  # pandas DataFrame
    metadata: dict = field(default_factory=dict)

    @property
    def atoms(self):
        """Only the rows classified as atoms."""
        return self.table[self.table["atom"] == 1].reset_index(drop=True)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise AETInputError(f"volume has shape {vol.shape}; tracing needs a 3D (z, y, x) tomogram")
    if vol.size == 0 or not np.all(np.isfinite(vol)):
        raise AETInputError("volume is empty or has NaN/Inf values; check the reconstruction")
    if float(vol.max()) == float(vol.min()):
        raise AETInputError(f"volume is constant (every voxel {float(vol.max()):g}): nothing to trace; check the reconstruction")
    if float(vol.max()) <= 0:
        raise AETInputError("volume has no positive values: atoms are bright; check the sign of the reconstruction")
    return vol


def find_peaks(volume: np.ndarray, min_distance_vox: float) -> np.ndarray:
    """Voxel indices (m, 3) of local maxima, greedy by height, at least ``min_distance_vox`` apart.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    min_distance_vox : float
        Voxels.

    Returns
    -------
    (m, 3) int array
        [z, y, x] indices.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    r = max(1, int(np.floor(min_distance_vox / 2)))
    peaks = (volume == ndimage.maximum_filter(volume, size=2 * r + 1)) & (volume > 0)
    peaks[[0, -1], :, :] = peaks[:, [0, -1], :] = peaks[:, :, [0, -1]] = False  # need neighbours
    idx = np.argwhere(peaks)
    order = np.argsort(-volume[peaks], kind="stable")
    idx = idx[order]
    keep = np.ones(len(idx), bool)
    tree = cKDTree(idx)
    for i in range(len(idx)):
        if keep[i]:
            near = tree.query_ball_point(idx[i], min_distance_vox - 1e-9)
            for j in near:
                if j > i:
                    keep[j] = False
    return idx[keep]


def subvoxel_positions(volume: np.ndarray, idx: np.ndarray, fit: str = "gaussian") -> np.ndarray:
    """Fractional voxel indices of peaks: per-axis closed-form Gaussian or parabola fit.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    idx : (m, 3) int array
        Peak voxels [z, y, x].
    fit : {"gaussian", "parabola"}

    Returns
    -------
    (m, 3) float array
    """
    if fit not in ("gaussian", "parabola"):
        raise AETInputError(f"sub-voxel fit {fit!r} unknown; use gaussian or parabola")
    sub = idx.astype(np.float64)
    c = volume[tuple(idx.T)].astype(np.float64)
    tiny = 1e-12 * max(float(np.abs(volume).max()), 1e-30)
    for ax in range(3):
        off = np.zeros(3, int)
        off[ax] = 1
        m = volume[tuple((idx - off).T)].astype(np.float64)
        p = volume[tuple((idx + off).T)].astype(np.float64)
        if fit == "gaussian" and np.all(c > 0):
            lm, lc, lp = np.log(np.maximum(m, tiny)), np.log(c), np.log(np.maximum(p, tiny))
            denom = lm - 2 * lc + lp
            delta = np.where(denom < 0, 0.5 * (lm - lp) / np.where(denom < 0, denom, -1), 0.0)
        else:
            denom = m - 2 * c + p
            delta = np.where(denom < 0, 0.5 * (m - p) / np.where(denom < 0, denom, -1), 0.0)
        sub[:, ax] += np.clip(delta, -0.5, 0.5)
    return sub


def integrated_intensity(volume: np.ndarray, sub_idx: np.ndarray, radius_vox: float) -> np.ndarray:
    """Sum of the voxels within ``radius_vox`` of each (fractional) peak position.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    sub_idx : (m, 3) array
        Fractional [z, y, x] indices.
    radius_vox : float
        Voxels.

    Returns
    -------
    (m,) array
    """
    r = int(np.ceil(radius_vox)) + 1
    g = np.arange(-r, r + 1)
    offs = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    centre = np.round(sub_idx).astype(int)
    out = np.zeros(len(sub_idx))
    shape = np.array(volume.shape)
    for o in offs:
        vox = centre + o
        inside = np.all((vox >= 0) & (vox < shape), axis=1)
        d = np.linalg.norm(vox - sub_idx, axis=1)
        sel = inside & (d <= radius_vox)
        out[sel] += volume[tuple(vox[sel].T)]
    return out


def kmeans_1d(values: np.ndarray, n_classes: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """1D k-means: labels (0 = lowest class) and sorted class centres.

    Two classes are split exactly (the threshold minimising the within-class sum of squares,
    scanned over the sorted values), so a handful of bright atoms among many noise peaks is
    found; more classes use Lloyd's iterations from evenly spaced starting centres.

    Parameters
    ----------
    values : (n,) array
    n_classes : int
    iterations : int
        Lloyd iterations (more than two classes).

    Returns
    -------
    labels : (n,) int array
    centres : (n_classes,) array
        Ascending.
    """
    v = np.asarray(values, float)
    if n_classes == 2 and len(v) >= 2:
        order = np.sort(v)
        c1, c2 = np.cumsum(order), np.cumsum(order**2)
        k = np.arange(1, len(v))  # size of the lower class
        sse_lo = c2[k - 1] - c1[k - 1] ** 2 / k
        sse_hi = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (len(v) - k)
        best = int(np.argmin(sse_lo + sse_hi)) + 1
        thr = 0.5 * (order[best - 1] + order[best])
        labels = (v > thr).astype(int)
        centres = np.array([order[:best].mean(), order[best:].mean()])
        return labels, centres
    centres = np.linspace(v.min(), v.max(), n_classes) if len(v) else np.zeros(n_classes)
    labels = np.zeros(len(v), int)
    for _ in range(iterations):
        labels = np.argmin(np.abs(v[:, None] - centres[None]), axis=1)
        new = np.array([v[labels == k].mean() if np.any(labels == k) else centres[k] for k in range(n_classes)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    rank = np.empty_like(order)
    rank[order] = np.arange(n_classes)
    return rank[labels], centres[order]


MAX_CLASSES = 8
MAX_UPSAMPLE = 4  # the AET literature upsamples 2-3 times; memory grows with the cube


def trace_atoms(
    volume: np.ndarray,
    pixel_size: float,
    min_distance: float = 2.0,
    n_classes: int = 2,
    species_names: Sequence[str] = (),
    fit: str = "gaussian",
    upsample: int = 1,
    radius: Optional[float] = None,
    support: Optional[np.ndarray] = None,
    min_separation: float = 0.5,
    progress=None,
    cancel=None,
) -> TraceResult:
    """Trace atoms in a tomogram ``[z, y, x]`` with voxel size ``pixel_size`` (Å).

    Parameters
    ----------
    min_distance : Å between accepted peaks (default 2.0; Pt's nearest neighbours are 2.77 Å).
    n_classes : k-means classes of integrated intensity; the lowest is noise. With 2 classes
        the split is used only when the noise class is clearly weaker (its mean below
        ``min_separation`` x the atoms'); otherwise every peak is an atom.
    species_names : names of the atom classes from faint to bright (e.g. ``["Pd", "Pt"]``).
    upsample : trace on a volume upsampled by this factor (cubic spline), as in the AET
        literature; positions are mapped back to the original frame.
    radius : Å of the sphere for the integrated intensity (default min_distance / 2).
    support : optional boolean mask ``[z, y, x]``: peaks outside it are non-atoms.

    Returns
    -------
    TraceResult
        ``table`` (contract columns ``x, y, z`` in Å, ``intensity``, ``atom``, ``species``;
        non-atom peaks kept with ``atom`` 0), ``atoms`` (the atoms alone) and ``metadata``
        (settings, peak and atom counts).
    """
    import pandas as pd

    from .io import check_pixel_size

    pixel_size = check_pixel_size(pixel_size)
    vol = _check_volume(volume)
    n_classes, names, min_distance, upsample, radius = _check_settings(
        vol, n_classes, species_names, min_distance, upsample, radius, fit, support)
    rep = Reporter(4, progress, cancel)
    work, step = vol, pixel_size
    if upsample > 1:
        from scipy import ndimage

        work = ndimage.zoom(vol, upsample, order=3, grid_mode=False)
        step = pixel_size / upsample
    rep.step("local maxima")
    idx = find_peaks(work, min_distance / step)
    rep.step("sub-voxel positions")
    sub = subvoxel_positions(work, idx, fit)
    if upsample > 1:
        # index n in the upsampled grid (grid_mode=False maps ends to ends)
        sub = sub * (np.array(vol.shape) - 1) / (np.array(work.shape) - 1)
    radius = min_distance / 2 if radius is None else radius
    intensity = integrated_intensity(vol, sub, radius / pixel_size)
    rep.step("classes")
    atom, species, centres = _classify(sub, intensity, n_classes, names, min_separation, support, vol.shape)
    xyz = np.stack([geometry.index_to_angstrom(sub[:, 2 - k], vol.shape[2 - k], pixel_size) for k in range(3)], 1)
    table = pd.DataFrame({
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": intensity,
        "atom": atom, "species": species,
    })
    table = table.sort_values("intensity", ascending=False, kind="stable").reset_index(drop=True)
    rep.step(f"{int(atom.sum())} atoms, {int((atom == 0).sum())} non-atoms")
    meta = {
        "pixel_size": pixel_size, "min_distance": min_distance, "n_classes": n_classes, "fit": fit,
        "upsample": upsample, "radius": radius, "class_centres": np.asarray(centres).tolist(),
        "n_peaks": int(len(sub)), "n_atoms": int(atom.sum()), "support": support is not None,
    }
    return TraceResult(table, meta)


def _check_settings(vol, n_classes, species_names, min_distance, upsample, radius, fit, support) -> tuple:
    """The tracer's settings, checked, and whether the upsampled volume fits in memory."""
    from .validate import check_int, check_memory, check_number

    n_classes = check_int(n_classes, "number of intensity classes (--classes)", 2, MAX_CLASSES,
                          hint=" (noise plus one class per species)")
    names = [str(n) for n in species_names]
    if names and len(names) != n_classes - 1:
        raise AETInputError(
            f"{len(names)} species names ({' '.join(names)}) for {n_classes - 1} atom classes: the lowest of the "
            f"{n_classes} classes is noise; give --classes {len(names) + 1} or {n_classes - 1} names, faint to bright")
    min_distance = check_number(min_distance, "minimum distance between atoms", 0.5, 10.0, unit="Å")
    upsample = check_int(upsample, "upsampling factor", 1, MAX_UPSAMPLE)
    if radius is not None:
        radius = check_number(radius, "integration radius", 0.0, 10.0, unit="Å", lo_open=True)
    if fit not in ("gaussian", "parabola"):
        raise AETInputError(f"sub-voxel fit {fit!r} unknown; use gaussian or parabola")
    # the upsampled volume, its filtered copies and the peak search (float32, about 4 copies)
    check_memory(vol.size * upsample**3 * 4 * 4, f"tracing on a volume upsampled {upsample} times",
                 "use a smaller --upsample or crop the tomogram")
    if support is not None and tuple(support.shape) != vol.shape:
        raise AETInputError(f"support has shape {tuple(support.shape)} but the volume is {vol.shape}")
    return n_classes, names, min_distance, upsample, radius


def _classify(sub, intensity, n_classes, names, min_separation, support, shape) -> tuple:
    """(atom 0/1, species, class centres): k-means on integrated intensity, the lowest class
    noise unless it is not clearly weaker; peaks outside the support are non-atoms."""
    labels = np.ones(len(sub), int)
    centres = np.array([])
    if len(sub) >= n_classes:
        labels, centres = kmeans_1d(intensity, n_classes)
        if n_classes == 2 and centres[0] >= min_separation * centres[1]:
            labels = np.ones(len(sub), int)  # no separate noise class: all peaks are atoms
    atom = (labels > 0).astype(int)
    if support is not None:
        inside = np.asarray(support, bool)[tuple(np.clip(np.round(sub).astype(int), 0, np.array(shape) - 1).T)]
        atom[~inside] = 0
    species = [
        (names[lab - 1] if 0 < lab <= len(names) else "") if a else "" for lab, a in zip(labels, atom)
    ]
    return atom, species, centres


def local_maxima(volume, pixel_size: float, min_distance: float = 2.0):
    """Plain local-maximum search: atom positions (m, 3) in Å and integrated intensities.

    The tracer with its defaults, keeping only peaks classified as atoms; used to compare
    reconstructions with one fixed tracer.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    pixel_size : float
        Å.
    min_distance : float
        Å.

    Returns
    -------
    positions : (m, 3) array
        x, y, z in Å.
    intensities : (m,) array
    """
    res = trace_atoms(volume, pixel_size, min_distance=min_distance)
    atoms = res.atoms
    return atoms[["x", "y", "z"]].to_numpy(), atoms["intensity"].to_numpy()


def snap_to_maxima(volume: np.ndarray, points_vox: np.ndarray, radius: int = 2) -> np.ndarray:
    """Move each point (fractional voxel indices [z, y, x]) to the brightest voxel within
    ``radius`` voxels, then to the sub-voxel Gaussian fit around it ("refine edited atoms").

    Parameters
    ----------
    volume : (nz, ny, nx) array
    points_vox : (m, 3) array
        Fractional [z, y, x] indices.
    radius : int
        Voxels.

    Returns
    -------
    (m, 3) array
        Fractional [z, y, x] indices.
    """
    vol = np.asarray(volume, np.float32)
    pts = np.atleast_2d(np.asarray(points_vox, float))
    shape = np.array(vol.shape)
    out = pts.copy()
    g = np.arange(-radius, radius + 1)
    offs = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    offs = offs[np.linalg.norm(offs, axis=1) <= radius]
    for i, p in enumerate(pts):
        c = np.round(p).astype(int)
        cand = c + offs
        cand = cand[np.all((cand >= 1) & (cand < shape - 1), axis=1)]
        if len(cand) == 0:
            continue
        best = cand[np.argmax(vol[tuple(cand.T)])]
        out[i] = subvoxel_positions(vol, best[None], "gaussian")[0]
    return out

"""Atom tracing in tomograms: local maxima, sub-voxel positions, atoms told from noise.

``local_maxima`` is the plain local-maximum search used to compare reconstructions: peaks
accepted greedily by height at least ``min_distance`` apart, refined to sub-voxel precision
by a 3-point parabola per axis, and split from noise by two-class k-means on peak height.
"""

from __future__ import annotations

import numpy as np

from . import geometry

__all__ = ["local_maxima", "two_class_threshold"]


def two_class_threshold(values: np.ndarray) -> float:
    """Threshold between the two 1D k-means classes of ``values`` (Lloyd's iterations)."""
    v = np.sort(np.asarray(values, float))
    if len(v) < 2 or v[0] == v[-1]:
        return float(v[0]) if len(v) else 0.0
    lo, hi = np.percentile(v, 10), np.percentile(v, 90)
    for _ in range(100):
        t = (lo + hi) / 2
        a, b = v[v <= t], v[v > t]
        if len(a) == 0 or len(b) == 0:
            break
        nlo, nhi = a.mean(), b.mean()
        if np.isclose(nlo, lo) and np.isclose(nhi, hi):
            break
        lo, hi = nlo, nhi
    return float((lo + hi) / 2)


def local_maxima(volume, pixel_size: float, min_distance: float = 2.0, threshold=None):
    """Atom candidates: positions (m, 3) x, y, z in Å and their integrated intensities.

    The integrated intensity is the sum over the 3x3x3 voxels around the peak (insensitive
    to where the atom sits inside its voxel, unlike the peak height). ``threshold``: the
    integrated intensity below which candidates are dropped; None splits candidates into
    atoms and noise by two-class k-means, when the two classes are well apart.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    vol = np.asarray(volume, np.float32)
    r = max(1, int(np.floor(min_distance / pixel_size / 2)))
    peaks = (vol == ndimage.maximum_filter(vol, size=2 * r + 1)) & (vol > 0)
    # drop peaks on the border, where the parabola has no neighbours
    peaks[[0, -1], :, :] = peaks[:, [0, -1], :] = peaks[:, :, [0, -1]] = False
    idx = np.argwhere(peaks)
    height = vol[peaks]
    order = np.argsort(-height)
    idx, height = idx[order], height[order]
    # greedy acceptance by height with a minimum distance
    keep = np.ones(len(idx), bool)
    tree = cKDTree(idx * pixel_size)
    for i in range(len(idx)):
        if keep[i]:
            for j in tree.query_ball_point(idx[i] * pixel_size, min_distance):
                if j > i:
                    keep[j] = False
    idx = idx[keep]
    box = ndimage.uniform_filter(vol, size=3, mode="constant") * 27
    height = box[tuple(idx.T)]
    if threshold is None and len(height) > 1:
        t = two_class_threshold(height)
        lo, hi = height[height < t], height[height >= t]
        if len(lo) and len(hi) and lo.mean() < 0.5 * hi.mean():
            threshold = t
    if threshold is not None:
        sel = height >= threshold
        idx, height = idx[sel], height[sel]
    sub = idx.astype(np.float64)
    for ax in range(3):
        off = np.zeros(3, int)
        off[ax] = 1
        c = vol[tuple(idx.T)]
        m = vol[tuple((idx - off).T)]
        p = vol[tuple((idx + off).T)]
        denom = m - 2 * c + p
        delta = np.where(denom < 0, 0.5 * (m - p) / np.where(denom < 0, denom, -1), 0.0)
        sub[:, ax] += np.clip(delta, -0.5, 0.5)
    shape = vol.shape
    xyz = np.stack([geometry.index_to_angstrom(sub[:, 2 - k], shape[2 - k], pixel_size) for k in range(3)], 1)
    return xyz, height

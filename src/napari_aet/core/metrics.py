"""Figures of merit against ground truth: atom matching, recall, precision, position error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AtomMatch", "match_atoms", "normalized_error", "atom_elongation"]


@dataclass
class AtomMatch:
    """One-to-one matching of found atoms to true atoms within ``max_distance`` Å."""

    recall: float
    precision: float
    rmsd_pm: float  # root-mean-square position error of matched atoms, picometres
    n_true: int
    n_found: int
    n_matched: int
    found_index: np.ndarray  # matched pairs: found[i] <-> true[j]
    true_index: np.ndarray

    def as_dict(self) -> dict:
        return {
            "recall": self.recall, "precision": self.precision, "rmsd_pm": self.rmsd_pm,
            "n_true": self.n_true, "n_found": self.n_found, "n_matched": self.n_matched,
        }


def match_atoms(found, true, max_distance: float = 1.0) -> AtomMatch:
    """Match found atoms to true ones, each at most once, minimising the total distance.

    Parameters
    ----------
    found, true : (n, 3) and (m, 3) arrays
        Positions, Å.
    max_distance : float
        Largest distance (Å) of a match.

    Returns
    -------
    AtomMatch
        ``recall``, ``precision``, ``rmsd_pm`` (pm) and the matched index pairs.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    found = np.asarray(found, float).reshape(-1, 3)
    true = np.asarray(true, float).reshape(-1, 3)
    nf, nt = len(found), len(true)
    if nf == 0 or nt == 0:
        return AtomMatch(0.0, 0.0, float("nan"), nt, nf, 0, np.zeros(0, int), np.zeros(0, int))
    pairs = cKDTree(found).sparse_distance_matrix(cKDTree(true), max_distance, output_type="coo_matrix")
    if pairs.nnz == 0:
        return AtomMatch(0.0, 0.0, float("nan"), nt, nf, 0, np.zeros(0, int), np.zeros(0, int))
    # Allow "unmatched" with a dummy cost so the matching is full: pad with a large cost.
    big = 10.0 * max_distance
    try:
        from scipy.sparse import bmat, identity

        dist = csr_matrix((pairs.data + 1e-9, (pairs.row, pairs.col)), shape=(nf, nt))
        dummy_f = identity(nf, format="csr") * big
        dummy_t = identity(nt, format="csr") * big
        zeros = csr_matrix((np.full(pairs.nnz, 1e-9), (pairs.col, pairs.row)), shape=(nt, nf))
        full = bmat([[dist, dummy_f], [dummy_t, zeros]], format="csr")
        rows, cols = min_weight_full_bipartite_matching(full)
        keep = (rows < nf) & (cols < nt)
        fi, ti = rows[keep], cols[keep]
    except ValueError:
        dense = np.full((nf, nt), big)
        dense[pairs.row, pairs.col] = pairs.data
        fi, ti = linear_sum_assignment(dense)
        ok = dense[fi, ti] <= max_distance
        fi, ti = fi[ok], ti[ok]
    d = np.linalg.norm(found[fi] - true[ti], axis=1)
    ok = d <= max_distance
    fi, ti, d = fi[ok], ti[ok], d[ok]
    m = len(fi)
    return AtomMatch(
        recall=m / nt, precision=m / nf, rmsd_pm=float(np.sqrt(np.mean(d**2)) * 100) if m else float("nan"),
        n_true=nt, n_found=nf, n_matched=m, found_index=fi, true_index=ti,
    )


def normalized_error(volume, reference) -> float:
    """Relative error ``|s v - ref|_2 / |ref|_2`` with ``s`` the least-squares intensity scale.

    Parameters
    ----------
    volume, reference : arrays of one shape

    Returns
    -------
    float
    """
    v = np.asarray(volume, np.float64).ravel()
    r = np.asarray(reference, np.float64).ravel()
    scale = float(v @ r) / max(float(v @ v), 1e-30)
    return float(np.linalg.norm(scale * v - r) / max(np.linalg.norm(r), 1e-30))


def atom_elongation(volume, window: int = 3, threshold: float = 0.3) -> float:
    """How much longer a tomogram's atoms are along z (the beam at zero tilt) than along x:
    the ratio of their median root-mean-square widths, 1 for round atoms, above 1 where the
    missing wedge of a tilt series about y stretches them. No atoms need tracing: the atoms
    are the local maxima above ``threshold`` of the 99.9th percentile.

    Parameters
    ----------
    volume : (nz, ny, nx) array
    window : int
        Half-width of the cube measured about each maximum, voxels (well under the
        interatomic distance).
    threshold : float
        Share of the 99.9th percentile a maximum must reach.

    Returns
    -------
    float
        NaN when the volume has no such maxima.
    """
    from scipy.ndimage import maximum_filter

    vol = np.asarray(volume, np.float32)
    w = int(window)
    peaks = (vol == maximum_filter(vol, size=2 * w + 1)) & (vol > threshold * float(np.percentile(vol, 99.9)))
    peaks[:w], peaks[-w:], peaks[:, :w], peaks[:, -w:], peaks[..., :w], peaks[..., -w:] = (False,) * 6
    idx = np.argwhere(peaks)
    if not len(idx):
        return float("nan")
    g = np.arange(-w, w + 1)
    dz, dy, dx = np.meshgrid(g, g, g, indexing="ij")
    cubes = vol[idx[:, :1, None, None] + dz, idx[:, 1:2, None, None] + dy, idx[:, 2:, None, None] + dx]
    cubes = np.clip(cubes - cubes.min(axis=(1, 2, 3), keepdims=True), 0.0, None).astype(np.float64)
    total = cubes.sum(axis=(1, 2, 3))
    ok = total > 0
    widths = []
    for axes in ((2, 3), (1, 2)):  # z profile (sum over y, x), x profile (sum over z, y)
        prof = cubes[ok].sum(axis=axes) / total[ok, None]
        mean = prof @ g
        widths.append(np.median(prof @ g ** 2 - mean ** 2))
    return float(np.sqrt(widths[0] / widths[1]))

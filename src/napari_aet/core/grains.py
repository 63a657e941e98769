"""Local structure, grains and twins: the built-in fallback for multiply twinned particles.

* Local structure by adaptive common-neighbour analysis (a-CNA, Stukowski 2012): each atom's
  12 nearest neighbours and a cutoff of (1 + sqrt 2) / 2 times their mean distance; every
  bond to a neighbour is classified by (common neighbours, bonds among them, longest chain).
  f.c.c.: 12 x (4, 2, 1); h.c.p.: 6 x (4, 2, 1) + 6 x (4, 2, 2); icosahedral: 12 x (5, 5, 5);
  anything else is 'other'.
* Grains: connected regions of f.c.c. atoms (neighbours that are both f.c.c.). Twin
  boundaries are single h.c.p. planes, so they separate the grains of a twinned particle.
  Non-f.c.c. atoms join the grain most of their f.c.c. neighbours belong to, or none.

OVITO's polyhedral template matching is more tolerant of thermal noise; this fallback needs
no extra package and is exact on ideal and mildly noisy positions.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["local_structure", "local_orientations", "segment_grains", "STRUCTURES"]

STRUCTURES = ("fcc", "hcp", "ico", "other")


def _longest_chain(bonds: list) -> int:
    """Number of bonds in the largest connected group of bonds (CNA's third index)."""
    best, remaining = 0, list(bonds)
    while remaining:
        group = [remaining.pop()]
        nodes = set(group[0])
        grown = True
        while grown:
            grown = False
            for b in list(remaining):
                if b[0] in nodes or b[1] in nodes:
                    remaining.remove(b)
                    group.append(b)
                    nodes.update(b)
                    grown = True
        best = max(best, len(group))
    return best


# pyscal3's structure codes (common_neighbor_analysis): 0 other, 1 fcc, 2 hcp, 3 bcc, 4 ico
_PYSCAL_CODES = {0: "other", 1: "fcc", 2: "hcp", 3: "other", 4: "ico"}


def _pyscal3_structure(pos: np.ndarray):
    """a-CNA through pyscal3 (compiled, for large particles), or None when it is not installed."""
    try:
        import pyscal3
    except ImportError:
        return None
    import ase

    span = np.ptp(pos, axis=0).max() + 20.0
    atoms = ase.Atoms(symbols=["Pt"] * len(pos), positions=pos - pos.min(0) + 10.0, cell=np.eye(3) * span, pbc=False)
    pyscal3.common_neighbor_analysis(atoms)
    codes = np.asarray(atoms.arrays["pyscal_structure"], int)
    return np.array([_PYSCAL_CODES.get(int(c), "other") for c in codes])


def local_structure(pos: np.ndarray, method: str = "auto") -> np.ndarray:
    """'fcc', 'hcp', 'ico' or 'other' for each atom (a-CNA on its 12 nearest neighbours).

    ``method``: 'builtin' (this module, pure numpy), 'pyscal3' (the compiled a-CNA of the
    ``pyscal3`` package, extra ``[grains]``) or 'auto' (pyscal3 when installed). Both give the
    same classes on the test particles.

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    method : {"auto", "builtin", "pyscal3"}

    Returns
    -------
    (n,) str array
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(pos, float)
    if method not in ("auto", "builtin", "pyscal3"):
        raise ValueError(f"structure method {method!r} unknown; use auto, builtin or pyscal3")
    if method != "builtin" and len(pos) >= 13:
        got = _pyscal3_structure(pos)
        if got is not None:
            return got
        if method == "pyscal3":
            from .errors import AETInputError

            raise AETInputError("pyscal3 is not installed; pip install \"napari-aet[grains]\" or use the built-in method")
    n = len(pos)
    out = np.full(n, "other", dtype=object)
    if n < 13:
        return out.astype(str)
    tree = cKDTree(pos)
    dist, idx = tree.query(pos, k=13)
    nbr = idx[:, 1:]
    rc = (1 + math.sqrt(2)) / 2 * dist[:, 1:].mean(1)
    for i in range(n):
        ring = nbr[i]
        p = pos[ring]
        d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        bonded = d2 < rc[i] ** 2
        np.fill_diagonal(bonded, False)
        sig = []
        for a in range(12):
            common = np.flatnonzero(bonded[a])
            sub = bonded[np.ix_(common, common)]
            pairs = [(int(common[x]), int(common[y])) for x, y in zip(*np.nonzero(np.triu(sub)))]
            sig.append((len(common), len(pairs), _longest_chain(pairs)))
        counts = {s: sig.count(s) for s in set(sig)}
        if counts.get((4, 2, 1)) == 12:
            out[i] = "fcc"
        elif counts.get((4, 2, 1)) == 6 and counts.get((4, 2, 2)) == 6:
            out[i] = "hcp"
        elif counts.get((5, 5, 5)) == 12:
            out[i] = "ico"
    return out.astype(str)


def _cubic_symmetry() -> np.ndarray:
    """The 24 proper rotations of the cube."""
    from itertools import permutations, product

    ops = []
    for perm in permutations(range(3)):
        for signs in product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for r, (c, s) in enumerate(zip(perm, signs)):
                m[r, c] = s
            if np.linalg.det(m) > 0:
                ops.append(m)
    return np.array(ops)


def local_orientations(pos: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Crystal orientation (3x3, crystal -> sample) of each f.c.c. atom from its 12 neighbour
    vectors; NaN for the others.

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    structure : (n,) str array
        From :func:`local_structure`.

    Returns
    -------
    (n, 3, 3) array
    """
    from scipy.spatial import cKDTree

    from .lattice import NN_110, _kabsch

    ideal = NN_110 / np.linalg.norm(NN_110, axis=1, keepdims=True)
    out = np.full((len(pos), 3, 3), np.nan)
    partners = np.flatnonzero(np.abs(ideal @ ideal[0] - 0.5) < 1e-6)
    _, idx = cKDTree(pos).query(pos, k=13)
    for i in np.flatnonzero(np.asarray(structure) == "fcc"):
        v = pos[idx[i, 1:]] - pos[i]
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        # two neighbours 60 degrees apart fix a first guess; then every neighbour is matched
        j = int(np.argmin(np.abs(v @ v[0] - 0.5)))
        best = None
        # an ordered pair at 60 degrees fixes a rotation, but only one of ideal[0]'s four
        # 60-degree partners makes it a lattice rotation: try them all, keep the best match
        for k in partners:
            r = _kabsch(np.stack([ideal[0], ideal[k]]), np.stack([v[0], v[j]]))
            for _ in range(2):
                match = np.argmax(v @ (ideal @ r.T).T, axis=1)
                r = _kabsch(ideal[match], v)
            err = float(np.linalg.norm(v - ideal[match] @ r.T, axis=1).sum())
            if best is None or err < best[0]:
                best = (err, r)
        out[i] = best[1]
    return out


def segment_grains(pos: np.ndarray, structure: np.ndarray, min_atoms: int = 13,
                   max_misorientation: float = 10.0) -> np.ndarray:
    """Grain index of each atom (-1: none). Grains are connected f.c.c. regions, neighbours
    joined only when their local lattices agree within ``max_misorientation`` degrees (a twin
    is 60°), of at least ``min_atoms`` atoms, numbered by size (0 the largest); other atoms
    join the grain most of their neighbours belong to.

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    structure : (n,) str array
    min_atoms : int
    max_misorientation : float
        Degrees.

    Returns
    -------
    (n,) int array
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pos = np.asarray(pos, float)
    n = len(pos)
    grain = np.full(n, -1, dtype=int)
    fcc = np.asarray(structure) == "fcc"
    if fcc.sum() == 0:
        return grain
    tree = cKDTree(pos)
    dist, idx = tree.query(pos, k=min(13, n))
    cutoff = (1 + math.sqrt(2)) / 2 * dist[:, 1:].mean(1)
    orient = local_orientations(pos, structure)
    sym = _cubic_symmetry()
    cos_max = math.cos(math.radians(max_misorientation))
    rows, cols = [], []
    for k in range(1, idx.shape[1]):
        ok = fcc & fcc[idx[:, k]] & (dist[:, k] < cutoff)
        a, b = np.flatnonzero(ok), idx[ok, k]
        if len(a):
            # misorientation: smallest rotation angle of Ra^T Rb S over the cube's symmetry
            rel = np.einsum("nji,njk->nik", orient[a], orient[b])  # Ra^T Rb
            tr = np.einsum("nik,ski->ns", rel, sym)  # trace(Ra^T Rb S)
            same = ((tr.max(axis=1) - 1) / 2) >= cos_max
            a, b = a[same], b[same]
        rows.append(a)
        cols.append(b)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    comp = np.where(fcc, labels, -1)
    ids, sizes = np.unique(comp[fcc], return_counts=True)
    order = ids[np.argsort(-sizes, kind="stable")]
    sizes_sorted = np.sort(sizes)[::-1]
    remap = {int(old): new for new, (old, size) in enumerate(zip(order, sizes_sorted)) if size >= min_atoms}
    grain[fcc] = [remap.get(int(v), -1) for v in comp[fcc]]
    # the rest (twin planes, surface atoms CNA cannot classify) join their neighbours' grain,
    # one shell at a time from a snapshot, so that no grain floods across the others
    for _ in range(4):
        before = grain.copy()
        for i in np.flatnonzero(before < 0):
            g = before[idx[i, 1:]][dist[i, 1:] < cutoff[i]]
            g = g[g >= 0]
            if len(g):
                vals, cnt = np.unique(g, return_counts=True)
                grain[i] = int(vals[np.argmax(cnt)])
        if np.array_equal(before, grain):
            break
    return grain

"""Crystal analysis: f.c.c. lattice fit, site assignment, displacements and strain.

* Lattice: orientation from the nearest-neighbour vectors (the 12 <110>/2 of f.c.c.), then a
  similarity fit (rotation, lattice constant, origin; Umeyama) of assigned atoms to their
  ideal sites, iterated with the assignment.
* Sites: each atom goes to its nearest ideal site within ``tolerance`` Å, each site at most
  once (the nearer atom wins); ``fcc = 1`` for assigned atoms.
* Displacement of each assigned atom from its site, in the crystal frame.
* Strain: at each atom, the displacement gradient from a Gaussian-weighted (``sigma`` Å)
  least-squares local quadratic fit of the neighbours' displacements (a plane fit
  underestimated the strain near the surface, where the window is one-sided, by a third);
  the symmetric part is the strain tensor (plain fractions), in the crystal frame.

The crystal frame's axes are the fitted lattice's [100], [010], [001]; ``rotation`` maps
crystal to sample coordinates (columns = crystal axes in the sample frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import geometry
from .errors import AETInputError

__all__ = ["Lattice", "fit_fcc_lattice", "assign_sites", "displacements", "strain_tensor", "coordination",
           "alpha_shape_surface", "LATTICE_KINDS",
           "FACET_FAMILIES", "facets", "facet_labels", "strain_on_grid", "interior_atoms"]

# Miller families and their interplanar spacing (in lattice constants) for f.c.c.
FACET_FAMILIES = {
    "100": (np.array([1, 0, 0]), 0.5),
    "111": (np.array([1, 1, 1]), 1 / math.sqrt(3)),
    "110": (np.array([1, 1, 0]), 1 / (2 * math.sqrt(2))),
}

# Default strain smoothing width, in lattice constants. Measured on simulated particles with
# 15 pm of position noise (benchmarks/bench_analysis.py): 1.0 a leaves ~0.3% of noise in the
# volumetric strain, 1.5 a starts to smooth real gradients away; 1.25 a balances the two.
DEFAULT_SIGMA = 1.25

NN_110 = np.array([[1, 1, 0], [1, -1, 0], [-1, 1, 0], [-1, -1, 0], [1, 0, 1], [1, 0, -1], [-1, 0, 1], [-1, 0, -1],
                   [0, 1, 1], [0, 1, -1], [0, -1, 1], [0, -1, -1]], float) / 2.0


@dataclass
class Lattice:
    """An f.c.c. lattice in the sample frame: site = origin + basis @ s (s in the f.c.c. set).

    ``basis`` holds the three base vectors (Å, columns, sample frame). A cubic lattice has
    ``basis = lattice_constant * rotation``; an affine one has three independent vectors, its
    ``rotation`` is the rotation of the basis's polar decomposition ``basis = rotation @ stretch``
    and its ``lattice_constant`` the mean base-vector length.
    """

    lattice_constant: float
    rotation: np.ndarray  # (3, 3) crystal -> sample
    origin: np.ndarray  # (3,) Å
    rms_residual: float = float("nan")  # Å, assigned atoms
    history: list = field(default_factory=list)
    basis: Optional[np.ndarray] = None  # (3, 3) Å; None: cubic
    kind: str = "cubic"
    statistics: dict = field(default_factory=dict)  # base-vector lengths and angles with standard errors

    @property
    def matrix(self) -> np.ndarray:
        """Base vectors (Å) as columns, sample frame."""
        return self.basis if self.basis is not None else self.lattice_constant * self.rotation

    @property
    def stretch(self) -> np.ndarray:
        """The basis in the crystal frame (symmetric, Å): ``rotation.T @ basis``; ``a I`` if cubic."""
        return self.rotation.T @ self.matrix

    def to_crystal(self, xyz) -> np.ndarray:
        """Sample-frame positions (Å) to crystal-frame coordinates in lattice constants (site units)."""
        return np.linalg.solve(self.matrix, (np.asarray(xyz, float) - self.origin).T).T

    def to_sample(self, frac) -> np.ndarray:
        return self.origin + np.asarray(frac, float) @ self.matrix.T

    def crystal_positions(self, frac) -> np.ndarray:
        """Where sites sit in the crystal frame (Å): ``frac @ stretch.T`` (``a * frac`` if cubic)."""
        return np.asarray(frac, float) @ self.stretch.T

    def homogeneous_strain(self) -> np.ndarray:
        """Strain of this lattice relative to the cubic one of the same mean constant (crystal
        frame, plain fractions): ``stretch / a - I`` (zero for a cubic lattice)."""
        p = self.stretch
        return 0.5 * (p + p.T) / self.lattice_constant - np.eye(3)

    def as_dict(self) -> dict:
        e = self.homogeneous_strain()
        out = {"kind": self.kind, "lattice_constant": self.lattice_constant, "crystal_rotation": self.rotation.tolist(),
               "origin": self.origin.tolist(), "rms_residual": self.rms_residual,
               "base_vectors": self.matrix.T.tolist(),
               "homogeneous_strain_vs_cubic": [e[0, 0], e[1, 1], e[2, 2], e[0, 1], e[0, 2], e[1, 2]],
               "crystal_rotation_note": "columns are the crystal [100], [010], [001] axes in the sample frame"}
        out.update(self.statistics)
        return out


def _check_positions(xyz) -> np.ndarray:
    from scipy.spatial import cKDTree

    pos = np.asarray(xyz, float).reshape(-1, 3)
    if not np.all(np.isfinite(pos)):
        raise AETInputError(f"{int((~np.isfinite(pos).all(1)).sum())} atoms have NaN/Inf positions; remove those rows")
    if len(pos) < 13:
        raise AETInputError(f"{len(pos)} atoms are too few to fit a lattice; give at least 13 (one atom and its neighbours)")
    d, _ = cKDTree(pos).query(pos, k=2)
    if np.any(d[:, 1] < 1e-6):
        raise AETInputError(f"{int((d[:, 1] < 1e-6).sum())} atoms are duplicates (same position); remove them")
    nn = float(np.median(d[:, 1]))
    if not 2.0 <= nn <= 3.6:
        raise AETInputError(
            f"nearest-neighbour distance {nn:.3g} is far from any fcc metal's (2.5-2.9 Å): coordinates in voxels "
            "or nm rather than Å? multiply by the voxel size"
        )
    return pos


def _kabsch(a: np.ndarray, b: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
    """Rotation R minimising sum |R a_i - b_i|^2 (proper rotation)."""
    w = np.ones(len(a)) if w is None else w
    h = (a * w[:, None]).T @ b
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1, 1, d]) @ u.T


def _umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (R, scale, t) minimising sum |scale R src_i + t - dst_i|^2."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    r = _kabsch(s0, d0)
    scale = float(np.sum(d0 * (s0 @ r.T)) / np.sum(s0**2))
    t = mu_d - scale * mu_s @ r.T
    return r, scale, t


def _nearest_fcc(frac: np.ndarray) -> np.ndarray:
    """Nearest f.c.c. site (in lattice constants; coordinates in halves with even sum)."""
    h = frac * 2
    r = np.round(h)
    odd = (r.sum(1) % 2) != 0
    if odd.any():
        resid = h[odd] - r[odd]
        k = np.argmax(np.abs(resid), axis=1)
        rows = np.flatnonzero(odd)
        r[rows, k] += np.where(resid[np.arange(len(rows)), k] > 0, 1, -1)
    return r / 2


def _orientation(pos: np.ndarray, a_guess: Optional[float]):
    """Rotation and lattice constant from nearest-neighbour vectors."""
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    d, _ = tree.query(pos, k=2)
    nn = float(np.median(d[:, 1]))
    pairs = tree.query_pairs(geometry.neighbour_cutoff(nn), output_type="ndarray")
    vec = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    if len(vec) > 50_000:  # plenty for an orientation; keeps 10^5-10^6 atoms fast (seeded: deterministic)
        vec = vec[np.random.default_rng(0).choice(len(vec), 50_000, replace=False)]
    vec = np.vstack([vec, -vec])
    # start: one well-coordinated atom's neighbours matched to ideal <110>/2 directions
    counts = np.bincount(pairs.ravel(), minlength=len(pos))
    best = None
    for i in np.argsort(-counts, kind="stable")[:5]:
        nbr = np.concatenate([pairs[pairs[:, 0] == i, 1], pairs[pairs[:, 1] == i, 0]])
        v = pos[nbr] - pos[i]
        v1 = v[0]
        ang = np.degrees(np.arccos(np.clip(v @ v1 / np.linalg.norm(v, axis=1) / np.linalg.norm(v1), -1, 1)))
        cand = np.flatnonzero(np.abs(ang - 60) < 12)
        if not len(cand):
            continue
        v2 = v[cand[0]]
        a1, a2 = NN_110[0], NN_110[4]  # [110]/2 and [101]/2 are 60° apart
        r = _kabsch(np.stack([a1 / np.linalg.norm(a1), a2 / np.linalg.norm(a2)]),
                    np.stack([v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)]))
        score = _orientation_score(r, vec)
        if best is None or score > best[0]:
            best = (score, r)
    if best is None:
        raise AETInputError("no atom has fcc-like neighbours (60° nearest-neighbour pairs); is this an fcc crystal?")
    r = best[1]
    for _ in range(10):  # refine with all nearest-neighbour vectors
        ideal = NN_110 / np.linalg.norm(NN_110, axis=1, keepdims=True)
        vn = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        match = np.argmax(vn @ (ideal @ r.T).T, axis=1)
        good = (vn * (ideal[match] @ r.T)).sum(1) > math.cos(math.radians(15))
        r = _kabsch(ideal[match][good], vn[good])
    a = a_guess or float(np.median(np.linalg.norm(vec, axis=1)) * math.sqrt(2))
    return r, a


def _orientation_score(r, vec) -> float:
    ideal = NN_110 / np.linalg.norm(NN_110, axis=1, keepdims=True)
    vn = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    return float(np.mean(np.max(vn @ (ideal @ r.T).T, axis=1) > math.cos(math.radians(10))))


def assign_sites(pos: np.ndarray, lattice: Lattice, tolerance: float = 0.7):
    """Nearest ideal site of each atom within ``tolerance`` Å, each site at most once (the
    nearer atom wins).

    Parameters
    ----------
    pos : (n, 3) array
        Å, sample frame.
    lattice : Lattice
    tolerance : float
        Å.

    Returns
    -------
    site : (n, 3) array
        Fractional crystal coordinates of each atom's site.
    assigned : (n,) bool array
    """
    frac = lattice.to_crystal(pos)
    site = _nearest_fcc(frac)
    dist = np.linalg.norm(pos - lattice.to_sample(site), axis=1)
    ok = dist <= tolerance
    keys = np.round(site * 2).astype(np.int64)
    order = np.argsort(dist, kind="stable")
    cand = order[ok[order]]
    _, first = np.unique(keys[cand], axis=0, return_index=True)
    keep = np.zeros(len(pos), bool)
    keep[cand[first]] = True
    return site, keep


LATTICE_KINDS = ("auto", "cubic", "affine")
# "auto" takes the affine lattice when one of its base-vector lengths or angles departs from
# the cubic value by more than this many standard errors (a real anisotropy, not noise).
AFFINE_SIGNIFICANCE = 4.0


def _affine_fit(site: np.ndarray, pos: np.ndarray):
    """Least-squares basis (3x3, columns) and origin with ``pos = origin + basis @ site``, and
    the standard errors of the base-vector lengths (Å) and angles (degrees)."""
    x = np.hstack([site, np.ones((len(site), 1))])
    coef, *_ = np.linalg.lstsq(x, pos, rcond=None)
    basis, origin = coef[:3].T, coef[3]
    resid = pos - x @ coef
    dof = max(3 * len(site) - 12, 1)
    s2 = float((resid**2).sum() / dof)
    inv = np.linalg.inv(x.T @ x)
    lengths = np.linalg.norm(basis, axis=0)
    len_err = np.sqrt(s2 * np.diag(inv)[:3])
    angles, ang_err = [], []
    for i, j in ((1, 2), (0, 2), (0, 1)):  # alpha (a2, a3), beta (a1, a3), gamma (a1, a2)
        c = basis[:, i] @ basis[:, j] / (lengths[i] * lengths[j])
        angles.append(math.degrees(math.acos(np.clip(c, -1, 1))))
        ang_err.append(math.degrees(math.sqrt(s2 * (inv[i, i] / lengths[i] ** 2 + inv[j, j] / lengths[j] ** 2))))
    stats = {"base_vector_lengths": lengths.tolist(), "base_vector_length_errors": len_err.tolist(),
             "base_vector_angles": angles, "base_vector_angle_errors": ang_err}
    return basis, origin, stats


def _polar_rotation(basis: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(basis)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def fit_fcc_lattice(xyz, lattice_constant: Optional[float] = None, tolerance: float = 0.7, iterations: int = 50,
                    kind: str = "cubic", start: int = 0) -> Lattice:
    """Fit the f.c.c. lattice best matching the atoms.

    The fit alternates with the site assignment, growing outwards from the atom nearest the
    centroid, until the assigned atoms no longer change.

    Parameters
    ----------
    xyz : (n, 3) array
        Atom positions, Å (sample frame).
    lattice_constant : float, optional
        Fix the lattice constant (Å); default: fitted.
    tolerance : float
        Largest distance (Å) from an atom to its site.
    iterations : int
        Most fit/assignment rounds.
    kind : {"cubic", "affine", "auto"}
        'cubic': rotation, one lattice constant and origin (a similarity fit); 'affine':
        three independent base vectors and the origin (what pixel-size, tilt and scan errors
        make of a measured lattice); 'auto': affine when its anisotropy is significant
        (:data:`AFFINE_SIGNIFICANCE`).
    start : int
        Grow from the ``start``-th atom nearest the centroid (0: the nearest); another start
        helps when the nearest is not on a site (an interstitial or a noise peak).

    Returns
    -------
    Lattice
        ``lattice_constant`` (Å), ``rotation`` (crystal to sample frame), ``origin`` (Å),
        ``basis`` (affine base vectors, Å), ``kind``, ``rms_residual`` of the assigned atoms
        (Å) and the base vectors' ``statistics`` with standard errors.
    """

    if kind not in LATTICE_KINDS:
        raise AETInputError(f"lattice {kind!r} unknown; use one of {', '.join(LATTICE_KINDS)}")
    pos = _check_positions(xyz)
    r, a = _orientation(pos, lattice_constant)
    # origin: the atom nearest the centroid sits on a site to start
    centre = pos[np.argsort(np.linalg.norm(pos - pos.mean(0), axis=1), kind="stable")[min(int(start), len(pos) - 1)]].copy()
    lat = Lattice(a, r, centre)
    dist_centre = np.linalg.norm(pos - centre, axis=1)
    radius, extent = 4.0 * a, float(dist_centre.max()) + a
    previous = None
    for it in range(iterations):
        use = dist_centre <= radius  # a region that grows, so small errors in a or R cannot pile up far out
        site, ok = assign_sites(pos, lat, tolerance)
        ok_fit = ok & use
        if ok_fit.sum() < 4:
            raise AETInputError("fewer than 4 atoms sit near an fcc site: not an fcc crystal, or a wrong lattice constant")
        rot, scale, t = _umeyama(site[ok_fit], pos[ok_fit])
        lat = Lattice(lattice_constant or scale, rot, t if lattice_constant is None else
                      (pos[ok_fit] - lattice_constant * site[ok_fit] @ rot.T).mean(0))
        resid = pos[ok_fit] - lat.to_sample(site[ok_fit])
        lat.rms_residual = float(np.sqrt((resid**2).sum(1).mean()))
        lat.history.append({"iteration": it + 1, "assigned": int(ok.sum()), "rms_residual": lat.rms_residual,
                            "lattice_constant": lat.lattice_constant})
        if radius >= extent and previous is not None and np.array_equal(ok, previous):
            break
        previous = ok
        radius *= 1.6
    if kind == "cubic" and lattice_constant is None:
        site, ok = assign_sites(pos, lat, tolerance)
        basis, _, stats = _affine_fit(site[ok], pos[ok])
        lat.statistics = {"anisotropy": _anisotropy(stats), **stats}
        return lat
    if kind == "cubic" or lattice_constant is not None:
        return lat
    cubic = lat
    for it in range(20):
        site, ok = assign_sites(pos, lat, tolerance)
        basis, origin, stats = _affine_fit(site[ok], pos[ok])
        rot = _polar_rotation(basis)
        lengths = np.array(stats["base_vector_lengths"])
        new = Lattice(float(lengths.mean()), rot, origin, basis=basis, kind="affine",
                      history=cubic.history, statistics={"anisotropy": _anisotropy(stats), **stats})
        resid = pos[ok] - new.to_sample(site[ok])
        new.rms_residual = float(np.sqrt((resid**2).sum(1).mean()))
        new.history = cubic.history + [{"iteration": f"affine {it + 1}", "assigned": int(ok.sum()),
                                        "rms_residual": new.rms_residual, "lattice_constant": new.lattice_constant}]
        done = previous is not None and np.array_equal(ok, previous)
        previous, lat = ok, new
        if done:
            break
    if kind == "auto" and not _significant(lat.statistics):
        cubic.statistics = lat.statistics | {"kind_rule": f"cubic: no length or angle departs by more than "
                                             f"{AFFINE_SIGNIFICANCE:g} standard errors"}
        return cubic
    if kind == "auto":
        lat.statistics["kind_rule"] = (f"affine: a base-vector length or angle departs from the cubic value by more "
                                       f"than {AFFINE_SIGNIFICANCE:g} standard errors")
    return lat


def _anisotropy(stats: dict) -> dict:
    lengths = np.array(stats["base_vector_lengths"])
    angles = np.array(stats["base_vector_angles"])
    return {"length_spread": float((lengths.max() - lengths.min()) / lengths.mean()),
            "largest_angle_deviation_deg": float(np.abs(angles - 90).max())}


def _significant(stats: dict) -> bool:
    lengths = np.array(stats["base_vector_lengths"])
    le = np.array(stats["base_vector_length_errors"])
    ang = np.array(stats["base_vector_angles"])
    ae = np.array(stats["base_vector_angle_errors"])
    return bool(np.any(np.abs(lengths - lengths.mean()) > AFFINE_SIGNIFICANCE * np.maximum(le, 1e-12))
                or np.any(np.abs(ang - 90) > AFFINE_SIGNIFICANCE * np.maximum(ae, 1e-12)))


def displacements(pos: np.ndarray, site: np.ndarray, assigned: np.ndarray, lattice: Lattice) -> np.ndarray:
    """Displacement from the assigned site in the crystal frame (Å); NaN where unassigned.

    Parameters
    ----------
    pos : (n, 3) array
        Å, sample frame.
    site : (n, 3) array
        Sites, fractional crystal coordinates.
    assigned : (n,) bool array
    lattice : Lattice

    Returns
    -------
    (n, 3) array
        Å, crystal frame.
    """
    u = np.full((len(pos), 3), np.nan)
    u[assigned] = (pos[assigned] - lattice.to_sample(site[assigned])) @ lattice.rotation
    return u


def _local_gradient(points: np.ndarray, src_pos: np.ndarray, src_u: np.ndarray, sigma: float, order: int,
                    with_displacement: bool = False, chunk: int = 512):
    """Strain (and smoothed displacement) at ``points`` (Å) from a Gaussian-weighted local fit.

    The neighbours within 3 sigma of each point enter a weighted least-squares fit of the
    displacement (a local quadratic with at least 16 neighbours, else a plane; fewer than 7:
    NaN). Points are solved in chunks by batched normal equations on padded neighbour
    arrays (memory ``chunk`` x neighbours, no loop over atoms: 10^5 atoms in seconds).
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, float)
    out = np.full((len(points), 6), np.nan)
    disp = np.full((len(points), 3), np.nan)
    if len(points) == 0 or len(src_pos) == 0:
        return (out, disp) if with_displacement else out
    tree = cKDTree(src_pos)
    radius = 3 * sigma
    k = 64
    for start in range(0, len(points), chunk):
        pts = points[start:start + chunk]
        while True:
            dist, idx = tree.query(pts, k=min(k, len(src_pos)), distance_upper_bound=radius)
            dist, idx = np.atleast_2d(dist), np.atleast_2d(idx)
            if k >= len(src_pos) or not np.isfinite(dist[:, -1]).any():
                break
            k *= 2  # some point has more neighbours than columns: widen and query again
        valid = np.isfinite(dist)
        idx = np.where(valid, idx, 0)
        count = valid.sum(1)
        d = src_pos[idx] - pts[:, None, :]
        w = np.where(valid, np.exp(-(d**2).sum(-1) / (2 * sigma**2)), 0.0)
        uu = src_u[idx]
        ones = np.ones(d.shape[:2] + (1,))
        quad = np.stack([d[..., 0]**2, d[..., 1]**2, d[..., 2]**2, d[..., 0] * d[..., 1], d[..., 0] * d[..., 2],
                         d[..., 1] * d[..., 2]], -1) / sigma
        for use_quad, rows in ((True, (count >= 16) & (order == 2)), (False, (count >= 7) & ~((count >= 16) & (order == 2)))):
            if not rows.any():
                continue
            design = np.concatenate([ones[rows], d[rows]] + ([quad[rows]] if use_quad else []), -1)
            aw = design * w[rows][..., None]
            m = np.swapaxes(aw, 1, 2) @ design  # (c, p, p)
            b = np.swapaxes(aw, 1, 2) @ uu[rows]  # (c, p, 3)
            try:
                coef = np.linalg.solve(m, b)
            except np.linalg.LinAlgError:  # a degenerate neighbourhood (e.g. one plane of atoms)
                coef = np.linalg.pinv(m) @ b
            g = np.swapaxes(coef[:, 1:4, :], 1, 2)  # g[:, k, l] = d u_k / d x_l
            e = 0.5 * (g + np.swapaxes(g, 1, 2))
            sel = start + np.flatnonzero(rows)
            out[sel] = np.stack([e[:, 0, 0], e[:, 1, 1], e[:, 2, 2], e[:, 0, 1], e[:, 0, 2], e[:, 1, 2]], 1)
            disp[sel] = coef[:, 0, :]
    return (out, disp) if with_displacement else out


def strain_tensor(site: np.ndarray, u: np.ndarray, lattice: Lattice, sigma: Optional[float] = None,
                  use: Optional[np.ndarray] = None, order: int = 2) -> np.ndarray:
    """Per-atom strain (exx, eyy, ezz, exy, exz, eyz) from a Gaussian-weighted displacement gradient.

    ``site`` in lattice constants (crystal frame), ``u`` in Å (crystal frame); ``sigma`` in Å
    (default 1.25 lattice constants, see ``DEFAULT_SIGMA``); ``use``: atoms whose displacements enter the fits
    (e.g. excluding the surface); atoms without a displacement get NaN. ``order``: 2 fits a
    local quadratic (default), 1 a plane.

    Parameters
    ----------
    site : (n, 3) array
        Lattice constants, crystal frame.
    u : (n, 3) array
        Å, crystal frame.
    lattice : Lattice
    sigma : float, optional
        Å.
    use : (n,) bool array, optional
    order : {1, 2}

    Returns
    -------
    (n, 6) array
        Plain fractions.
    """
    a = lattice.lattice_constant
    have = np.all(np.isfinite(u), axis=1)
    src = have if use is None else have & use
    r = lattice.crystal_positions(site)
    out = np.full((len(site), 6), np.nan)
    out[have] = _local_gradient(r[have], r[src], u[src], sigma or DEFAULT_SIGMA * a, order)
    return out


def strain_on_grid(site: np.ndarray, u: np.ndarray, lattice: Lattice, spacing: Optional[float] = None,
                   sigma: Optional[float] = None, order: int = 2):
    """Strain and smoothed displacement on a regular crystal-frame grid (Å) over the atoms.

    Parameters
    ----------
    site, u, lattice, sigma, order
        As :func:`strain_tensor`.
    spacing : float, optional
        Grid spacing, Å (default half a lattice constant).

    Returns
    -------
    axes : tuple of three arrays
    strain : (nz, ny, nx, 6) array
    displacement : (nz, ny, nx, 3) array
    """
    from scipy.spatial import cKDTree

    a = lattice.lattice_constant
    spacing = spacing or a / 2
    have = np.all(np.isfinite(u), axis=1)
    r = lattice.crystal_positions(site[have])
    lo, hi = r.min(0), r.max(0)
    axes = [np.arange(lo[k], hi[k] + spacing / 2, spacing) for k in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    inside = cKDTree(r).query(pts)[0] <= a
    field = np.full((len(pts), 6), np.nan)
    disp = np.full((len(pts), 3), np.nan)
    field[inside], disp[inside] = _local_gradient(pts[inside], r, u[have], sigma or DEFAULT_SIGMA * a, order,
                                                  with_displacement=True)
    return axes, field.reshape(zz.shape + (6,)), disp.reshape(zz.shape + (3,))


def interior_atoms(pos: np.ndarray, surface: np.ndarray, lattice_constant: float) -> np.ndarray:
    """Atoms neither on the surface nor next to a surface atom (two or more layers deep).

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    surface : (n,) bool array
    lattice_constant : float
        Å.

    Returns
    -------
    (n,) bool array
    """
    from scipy.spatial import cKDTree

    if not surface.any():
        return np.ones(len(pos), bool)
    d, _ = cKDTree(pos[surface]).query(pos, k=1)
    return ~surface & (d > geometry.neighbour_cutoff(lattice_constant / math.sqrt(2)))


def alpha_shape_surface(pos: np.ndarray, alpha: float) -> np.ndarray:
    """Surface atoms as the vertices of the alpha shape's boundary (``alpha`` in Å).

    Delaunay tetrahedra whose circumsphere radius is at most ``alpha`` make up the solid; the
    boundary is the triangles that belong to exactly one such tetrahedron. In an f.c.c. metal
    the interior tetrahedra have radii up to a/2 (1.96 Å for Pt), so an alpha a little above
    that (2.5 Å, the default of ``analyze --alpha``) gives the coordination rule's surface on
    clean particles; a larger alpha rolls over surface steps. Any empty site inside borders a
    void and its neighbours count as surface, as in every alpha-shape surface.

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    alpha : float
        Å.

    Returns
    -------
    (n,) bool array
    """
    from scipy.spatial import Delaunay

    pos = np.asarray(pos, float)
    if len(pos) < 5:
        return np.ones(len(pos), bool)
    tri = Delaunay(pos)
    simp = tri.simplices
    p = pos[simp]  # (t, 4, 3)
    a = p[:, 1:] - p[:, :1]
    rhs = 0.5 * (a**2).sum(-1)
    ok = np.abs(np.linalg.det(a)) > 1e-9
    radius = np.full(len(simp), np.inf)
    centre = np.linalg.solve(a[ok], rhs[ok][..., None])[..., 0]
    radius[ok] = np.linalg.norm(centre, axis=1)
    keep = simp[radius <= alpha]
    faces = np.sort(np.concatenate([keep[:, [0, 1, 2]], keep[:, [0, 1, 3]], keep[:, [0, 2, 3]], keep[:, [1, 2, 3]]]), axis=1)
    uniq, counts = np.unique(faces, axis=0, return_counts=True)
    boundary = uniq[counts == 1]
    out = np.zeros(len(pos), bool)
    out[boundary.ravel()] = True
    inside = np.zeros(len(pos), bool)
    inside[keep.ravel()] = True
    return out | ~inside  # atoms in no kept tetrahedron stick out: surface too


def coordination(pos: np.ndarray, lattice_constant: float) -> np.ndarray:
    """Number of nearest neighbours (within :func:`geometry.neighbour_cutoff` of the f.c.c.
    nearest-neighbour distance, as the simulator counts them).

    Parameters
    ----------
    pos : (n, 3) array
        Å.
    lattice_constant : float
        Å.

    Returns
    -------
    (n,) int array
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    return tree.query_ball_point(pos, geometry.neighbour_cutoff(lattice_constant / math.sqrt(2)),
                                 return_length=True) - 1


def family_normals(family: str) -> np.ndarray:
    """Unit normals of a Miller family ({100}: 6, {111}: 8, {110}: 12), crystal frame."""
    from itertools import permutations, product

    hkl, _ = FACET_FAMILIES[family]
    out = set()
    for perm in set(permutations(hkl)):
        for signs in product((1, -1), repeat=3):
            v = tuple(int(s * c) for s, c in zip(signs, perm))
            if any(v):
                out.add(v)
    arr = np.array(sorted(out), dtype=float)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def facets(sites: np.ndarray, surface: np.ndarray, a: float, min_atoms: int = 4):
    """Facet of each surface atom from its (ideal-site) crystal-frame position in Å.

    Labels: '100', '111', '110' for an atom on exactly one facet plane, '' for edges and
    corners (two or more) and for interior atoms, 'other' for surface atoms on none.

    An atom is on the facet of normal n when it lies in the outermost atomic plane along n
    (within half the interplanar spacing), the plane holding at least ``min_atoms`` surface
    atoms. Atoms on the planes of two or more normals (edges, corners) or of none get no
    facet. Returns (family '100'/'111'/'110'/'' per atom, facet id (-1 none), normals (k, 3)
    of the facets by id, in the crystal frame).

    Parameters
    ----------
    sites : (n, 3) array
        Crystal frame, Å.
    surface : (n,) bool array
    a : float
        Lattice constant, Å.
    min_atoms : int
        Fewest atoms a facet plane holds.

    Returns
    -------
    family : (n,) str array
    facet_id : (n,) int array
        -1 where none.
    normals : (m, 3) array
        Crystal frame.
    """
    n = len(sites)
    hits = np.zeros(n, dtype=int)
    label = np.full(n, "", dtype=object)
    fid = np.full(n, -1, dtype=int)
    normals = []
    for fam, (_, spacing) in FACET_FAMILIES.items():
        d = spacing * a
        for normal in family_normals(fam):
            h = sites @ normal
            on = surface & (h > h[surface].max() - 0.5 * d) if surface.any() else surface
            if on.sum() < min_atoms:
                continue
            hits[on] += 1
            label[on] = fam
            fid[on] = len(normals)
            normals.append(normal)
    single = hits == 1
    label[~single] = ""
    label[surface & (hits == 0)] = "other"  # on the surface but on no low-index facet
    fid[~single] = -1
    return label.astype(str), fid, np.array(normals).reshape(-1, 3)


def facet_labels(sites: np.ndarray, surface: np.ndarray, a: float, min_atoms: int = 4) -> np.ndarray:
    """Miller family of each surface atom's facet ('' for edges, corners and none).

    Parameters
    ----------
    sites, surface, a, min_atoms
        As :func:`facets`.

    Returns
    -------
    (n,) str array
    """
    return facets(sites, surface, a, min_atoms)[0]

"""Species in the atom model: light atoms found, every atom's species decided from the
projections, with a confidence (issue 24).

In HAADF-STEM an atom's integrated intensity grows as about Z^1.7: a Ni atom is a sixth of a
Pt atom. In a tomogram of an alloy most light atoms are not even local maxima: they sit on
the tails of their heavy neighbours. So species are not decided on the tomogram alone:

1. :func:`implied_heights`: each atom's integrated intensity as the tilt series wants it,
   with its standard error (the best scale of the atom's own projected Gaussian into the
   data once every other atom of the model is subtracted; one pass over the projections).
2. :func:`assign_species`: a Gaussian mixture over those heights with a class at zero (noise:
   the data does not want an atom there) and one class per species, each with its own mean
   and intrinsic scatter, every atom's own error added. The species is the most probable
   class; ``species_confidence`` the posterior probability of that species among the species.
   The atom/noise split is thereby made per species, from the projections, not by one cut
   on tomogram intensity.
3. :func:`light_atom_candidates`: where the model of the atoms found so far leaves density in
   the residual tomogram (the tilt series minus the model, reconstructed), at physical
   distances from the atoms: the light atoms hidden by their neighbours.
4. :func:`joint_heights`: every atom's and candidate's own height (and a small move) fitted
   all at once, so that no candidate takes the intensity of a light atom still missing from the
   model: what the rounds decide on (1 stays for the final species confidence and the second
   population).
5. :func:`resolve_species`: one round of 3 and 4-2, refinement (per-species heights, one
   B-factor), then rounds of 4-2 and refinement until the assignment stops changing; a round
   that raises the working R-factor is undone.

Lengths in Å, sample frame; heights in the tilt series' intensity units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import AETInputError, Reporter

__all__ = ["SpeciesResult", "z_contrast", "implied_heights", "joint_heights", "assign_species", "light_atom_candidates",
           "resolve_species", "second_population", "tomogram_species", "lattice_site_candidates"]

Z_EXPONENT = 1.7
R_TOLERANCE = 1.01  # a round that raises the working R-factor by more than 1% (and R_SLACK) is undone
R_SLACK = 1e-3  # noise-free data: R near zero, where 1% is no change
LATTICE_STARTS = 5  # lattice fits tried from the atoms nearest the centroid (abTEM S1: the nearest gave 32% on sites)
JOINT_ITERATIONS = 150  # of joint_heights (abTEM S1: the loss flattens by 100)


def z_contrast(names: Sequence[str], z_exponent: float = Z_EXPONENT) -> Optional[np.ndarray]:
    """Expected HAADF intensity of one atom of each species relative to the heaviest,
    ``(Z / Z_max) ** z_exponent``; None when a name is not an element.

    Parameters
    ----------
    names : sequence of str
        Element symbols.
    z_exponent : float

    Returns
    -------
    (k,) array or None
    """
    from ase.data import atomic_numbers

    z = [atomic_numbers.get(str(n).capitalize()) for n in names]
    if any(v is None for v in z):
        return None
    z = np.asarray(z, float)
    return (z / z.max()) ** z_exponent


def implied_heights(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                    in_model=None, model=None, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Each atom's integrated intensity as the tilt series wants it, and its standard error.

    Parameters
    ----------
    positions : (n, 3) array
        Å.
    classes : (n,) int array
        Keys of ``heights`` and ``b_factors`` (the footprint each atom is measured with).
    heights, b_factors : dict
        Per-class integrated intensity and B-factor (Å²) of the refined model.
    tilts : (a, nv, nu) array
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    in_model : (n,) bool array, optional
        Atoms that are part of the model (default all); the others are measured as candidates
        against the model.
    model : (a, nv, nu) array, optional
        The model's projections, when already computed.
    device : str

    Returns
    -------
    height, error : (n,) arrays
    """
    from .confidence import atom_confidence

    conf = atom_confidence(positions, classes, heights, b_factors, tilts, angles, pixel_size, in_model=in_model,
                           model=model, device=device)
    h = np.array([heights[int(c)] for c in np.asarray(classes)], float)
    return conf.occupancy * h, conf.occupancy_error * h


# Long: the expectation-maximisation loop of a heteroscedastic 1D mixture; split up, its
# responsibilities and parameters would be passed back and forth.
def assign_species(height, error, centres, iterations: int = 50, fixed_centres: bool = False,
                   scatter: Optional[float] = None) -> tuple:
    """Each atom's class from its implied height: a Gaussian mixture with a noise class at 0.

    Parameters
    ----------
    height, error : (n,) arrays
        Implied heights and their standard errors (:func:`implied_heights`).
    centres : (k,) array
        Starting heights of the species, lightest first (class ``j + 1`` is species ``j``).
    iterations : int
        Expectation-maximisation iterations.
    fixed_centres : bool
        Keep the species' heights at ``centres`` (only their scatter and shares are fitted).
    scatter : float, optional
        One intrinsic scatter for every class, noise included, kept fixed (the model's misfit
        measured elsewhere, e.g. on the heavy atoms), and equal shares: every atom is decided
        by its own likelihoods (with overlapping classes, fitted shares run away to the larger
        class: measured on abTEM Pt-Ni, where the noise class emptied); default fitted per class.

    Returns
    -------
    labels : (n,) int array
        0: noise (the data wants no atom), ``j + 1``: species ``j``.
    species_confidence : (n,) array
        Posterior probability of the most probable species among the species.
    fit : dict
        Fitted ``centres``, ``scatter`` (intrinsic standard deviation) and ``shares`` of the
        classes, noise first.
    """
    y = np.asarray(height, float)
    e = np.maximum(np.asarray(error, float), 1e-12)
    mu = np.r_[0.0, np.asarray(centres, float)]
    k = len(mu)
    tau = np.full(k, 0.25 * abs(mu[1]) if scatter is None else float(scatter))
    share = np.full(k, 1.0 / k)
    resp = np.zeros((len(y), k))
    for _ in range(max(1, int(iterations))):
        var = e[:, None] ** 2 + tau[None] ** 2
        logp = np.log(np.maximum(share, 1e-12))[None] - 0.5 * np.log(var) - 0.5 * (y[:, None] - mu[None]) ** 2 / var
        logp -= logp.max(1, keepdims=True)
        resp = np.exp(logp)
        resp /= resp.sum(1, keepdims=True)
        share = np.maximum(resp.mean(0), 1e-6)
        if scatter is not None:
            share = np.full(k, 1.0 / k)
            if fixed_centres:
                continue
            for j in range(1, k):
                w = resp[:, j]
                mu[j] = float((w * y / var[:, j]).sum() / max((w / var[:, j]).sum(), 1e-300)) if w.sum() > 1e-6 else mu[j]
            mu[1:] = np.maximum.accumulate(np.maximum(mu[1:], 1e-12))
            continue
        w0 = resp[:, 0]  # noise: the model's own misfit scatters implied heights about zero
        tau[0] = float(np.sqrt(max(0.0, (w0 * (y**2 - e**2)).sum() / max(w0.sum(), 1e-9))))
        for j in range(1, k):
            w = resp[:, j]
            if w.sum() < 1e-6:
                continue
            if not fixed_centres:
                mu[j] = float((w * y / var[:, j]).sum() / (w / var[:, j]).sum())
            tau[j] = float(np.sqrt(max(0.0, (w * ((y - mu[j]) ** 2 - e**2)).sum() / w.sum())))
        mu[1:] = np.maximum.accumulate(np.maximum(mu[1:], 1e-12))  # species stay ordered, light first
    labels = np.argmax(resp, 1)
    species_resp = resp[:, 1:] / np.maximum(resp[:, 1:].sum(1, keepdims=True), 1e-300)
    confidence = species_resp.max(1)
    return labels, confidence, {"centres": mu.tolist(), "scatter": tau.tolist(), "shares": share.tolist()}


def joint_heights(positions, start_heights, b_factor: float, tilts, angles, pixel_size: float,
                  iterations: int = JOINT_ITERATIONS, max_move: float = 1.0, device="cpu",
                  cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Every atom's and candidate's own integrated intensity, fitted all at once.

    Each position is its own class: all of them are in the model together, and their heights
    (free, not kept positive: an empty site goes to about zero) and small moves are fitted to
    the tilt series by Adam. Unlike :func:`implied_heights`, which scales one atom into the
    residual of all the others, a candidate beside a light atom still missing from the model
    does not take that atom's intensity, nor does a heavy atom the tails of its missing
    neighbours. On abTEM projections of the Pt-Ni particle S1 (BENCHMARKS.md "Alloys"), empty
    f.c.c. sites came to 0.007 / 0.038 / 0.060 of a Pt atom (quartiles) and Ni sites to
    0.139 / 0.175 / 0.208 this way, against -0.035 / 0.030 / 0.104 and 0.062 / 0.163 / 0.257
    one at a time.

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame.
    start_heights : (n,) array
        Starting integrated intensities.
    b_factor : float
        One Debye-Waller B for every atom, Å².
    tilts : (a, nv, nu) array
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    iterations : int
    max_move : float
        Å; a position that moves further returns to its start (with the height it reached).
    device : str
    cancel : threading.Event, optional

    Returns
    -------
    heights : (n,) array
    positions : (n, 3) array
        Å, after the fit's moves.
    """
    import torch

    from .forward import AtomProjector, b_factor_to_sigma

    pos = torch.as_tensor(np.asarray(positions, np.float32).reshape(-1, 3), device=device)
    data = torch.as_tensor(np.asarray(tilts, np.float32), device=device)
    proj = AtomProjector(angles, data.shape[1:], pixel_size, device=device)
    sigma = torch.full((len(pos),), b_factor_to_sigma(float(b_factor)), device=device)
    h = torch.as_tensor(np.asarray(start_heights, np.float32), device=device).clone().requires_grad_(True)
    shift = torch.zeros_like(pos, requires_grad=True)
    scale = float(h.detach().abs().max().clamp(min=1e-12))
    opt = torch.optim.Adam([{"params": [h], "lr": 0.01 * scale}, {"params": [shift], "lr": 0.005}])
    norm = float((data**2).sum())
    rep = Reporter(int(iterations), None, cancel)
    for _ in range(int(iterations)):
        rep.check()
        opt.zero_grad()
        loss = ((proj.project(pos + shift, h, sigma) - data) ** 2).sum() / norm
        loss.backward()
        opt.step()
    with torch.no_grad():
        shift[torch.linalg.norm(shift, dim=1) > max_move] = 0
        return h.cpu().numpy().astype(np.float64), (pos + shift).cpu().numpy().astype(np.float64)


def light_atom_candidates(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                          volume_shape, min_distance: float = 2.0, significance: float = 3.0, device="cpu",
                          model=None, cancel=None) -> np.ndarray:
    """Positions (m, 3) Å where the residual tomogram of the model holds significant density at
    least ``min_distance`` Å from every atom (highest first).

    Parameters
    ----------
    positions, classes, heights, b_factors : the model (as :func:`implied_heights`)
    tilts : (a, nv, nu) array
    angles : (a,) or (a, 3) array
    pixel_size : float
        Å.
    volume_shape : (nz, ny, nx)
    min_distance : float
        Å.
    significance : float
        Least residual peak in units of the residual's noise near the atoms.
    device : str
    model : (a, nv, nu) array, optional
        The model's projections.
    cancel : threading.Event, optional

    Returns
    -------
    (m, 3) array
    """
    from .completion import propose_atoms, residual_noise
    from .confidence import residual_tomogram

    res = residual_tomogram(positions, classes, heights, b_factors, tilts, angles, pixel_size, volume_shape,
                            device=device, model=model, cancel=cancel)
    noise = residual_noise(res, positions, pixel_size)
    return propose_atoms(res, positions, pixel_size, significance * noise, min_distance=min_distance)


def empty_distance_for(min_distance: float) -> float:
    """Å: a site is empty when no atom is nearer than half the minimum distance between atoms."""
    return 0.5 * float(min_distance)


def lattice_site_candidates(positions, occupied, min_neighbours: int = 4, empty_distance: float = 1.0,
                            max_rms: float = 0.5) -> np.ndarray:
    """Empty f.c.c. sites next to the atoms: where light atoms hidden by heavy neighbours sit.

    The f.c.c. lattice is fitted to the ``occupied`` atoms
    (:func:`~napari_aet.core.lattice.fit_fcc_lattice`); its sites with no occupied atom within
    ``empty_distance`` Å and at least ``min_neighbours`` atoms within 1.15 nearest-neighbour
    distances are returned, each moved by the mean displacement of those neighbours from their
    own sites (the local strain). None when the atoms are not one f.c.c. crystal (fitted rms
    residual above ``max_rms`` Å or fewer than half the atoms on sites): the residual alone
    proposes atoms then.

    Parameters
    ----------
    positions : (n, 3) array
        Å.
    occupied : (n,) bool array
        Atoms that hold their site (the heavy ones the tomogram shows well).
    min_neighbours : int
    empty_distance : float
        Å.
    max_rms : float
        Å.

    Returns
    -------
    (m, 3) array
        Å; empty when no lattice fits.
    """
    from scipy.spatial import cKDTree

    from .lattice import assign_sites, fit_fcc_lattice

    pos = np.asarray(positions, float).reshape(-1, 3)
    occ = np.asarray(occupied, bool)
    if occ.sum() < 20:
        return np.zeros((0, 3))
    for start in range(LATTICE_STARTS):  # a start atom off its site can lock the fit onto a wrong sublattice
        lat = fit_fcc_lattice(pos[occ], start=start)
        site, assigned = assign_sites(pos, lat)
        if lat.rms_residual <= max_rms and assigned[occ].mean() >= 0.5:
            break
    else:
        return np.zeros((0, 3))
    frac = lat.to_crystal(pos)
    lo, hi = np.floor(frac.min(0)) - 1, np.ceil(frac.max(0)) + 1
    cells = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    xyz = lat.to_sample((cells[:, None, :] + basis[None]).reshape(-1, 3))
    nn = lat.lattice_constant / np.sqrt(2)
    tree_occ, tree_all = cKDTree(pos[occ]), cKDTree(pos)
    empty = tree_occ.query(xyz)[0] > empty_distance
    xyz = xyz[empty]
    near = tree_all.query_ball_point(xyz, 1.15 * nn)
    enough = np.array([len(v) >= min_neighbours for v in near], bool)
    disp = np.where(assigned[:, None], pos - lat.to_sample(site), np.nan)
    shift = np.array([np.nanmean(disp[v], 0) if len(v) and np.isfinite(disp[v]).any() else np.zeros(3)
                      for v, ok in zip(near, enough) if ok]).reshape(-1, 3)
    return xyz[enough] + np.nan_to_num(shift)


@dataclass
class SpeciesResult:
    """The atom model after species are resolved."""

    positions: np.ndarray  # (n, 3) Å
    classes: np.ndarray  # (n,) int: index into ``names``
    names: list
    heights: dict  # class -> integrated intensity
    b_factors: dict  # class -> Å²
    species_confidence: np.ndarray  # (n,)
    origin: np.ndarray  # (n,) int: index of the input atom each came from, -1 when found in the residual
    rounds: list = field(default_factory=list)
    r_factor_after: float = float("nan")
    seconds: float = 0.0

    def summary(self) -> dict:
        """A JSON-ready record."""
        counts = {str(n): int((self.classes == j).sum()) for j, n in enumerate(self.names)}
        return {"species": list(self.names), "counts": counts, "rounds": self.rounds,
                "heights": {str(self.names[k]): v for k, v in self.heights.items()},
                "b_factors_A2": {str(self.names[k]): v for k, v in self.b_factors.items()},
                "median_species_confidence": round(float(np.nanmedian(self.species_confidence)), 4)
                if np.isfinite(self.species_confidence).any() else None,
                "n_species_confidence_below_0.9": int((self.species_confidence < 0.9).sum()),
                "seconds": round(self.seconds, 1)}


def _apart(positions, height, min_distance: float) -> np.ndarray:
    """Positions to keep so that none is within ``min_distance`` of a brighter one (the joint
    fit's moves can bring a candidate onto an atom or onto another candidate)."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(positions), bool)
    tree = cKDTree(positions)
    for i in np.argsort(-np.asarray(height), kind="stable"):
        if keep[i]:
            near = np.asarray(tree.query_ball_point(positions[i], min_distance), int)
            keep[near[near != i]] = False
    return keep


def _class_centres(heights, names, contrast) -> np.ndarray:
    """Heights of each species: with element names, the heaviest refined class's height times
    each element's Z-contrast (the mixture keeps them: a light class left free drifts into the
    misfit around its bright neighbours); otherwise the refined heights, an empty class from
    evenly spaced ratios."""
    k = len(names)
    out = np.array([heights.get(j, np.nan) for j in range(k)], float)
    ref = max((j for j in range(k) if np.isfinite(out[j])), default=None)
    if ref is None:
        raise AETInputError("no refined atom class to scale the species' heights from; trace atoms first")
    if contrast is not None:
        return out[ref] * contrast / contrast[ref]
    ratio = np.geomspace(0.2, 1.0, k)
    return np.where(np.isfinite(out), out, out[ref] * ratio / ratio[ref])


# Long: the rounds (candidates, heights, mixture, refinement) share the model state; split up,
# each step would pass positions, classes, heights and B-factors around.
def resolve_species(positions, classes, heights: dict, b_factors: dict, tilts, angles, pixel_size: float,
                    volume_shape, names: Sequence[str], min_distance: float = 2.0, rounds: int = 3,
                    refine_iterations: int = 60, significance: float = 3.0, device="cpu", progress=None,
                    cancel=None, contrast=None) -> SpeciesResult:
    """Light atoms found and every atom's species decided from the tilt series.

    Parameters
    ----------
    positions : (n, 3) array
        Refined atoms, Å.
    classes : (n,) int array
        Index into ``names`` of each atom's species so far.
    heights, b_factors : dict
        Per-class refined values (classes missing from them start from the Z-contrast).
    tilts : (a, nv, nu) array
        The working projections (held-out ones excluded by the caller).
    angles : (a,) or (a, 3) array
        Degrees.
    pixel_size : float
        Å.
    volume_shape : (nz, ny, nx)
        Of the residual tomogram.
    names : sequence of str
        Species, lightest first.
    min_distance : float
        Å between atoms.
    rounds : int
        Rounds of species assignment and refinement; the first also proposes light atoms
        (empty lattice sites and residual peaks), later ones decide again with them in the
        model (an atom the data no longer wants is dropped).
    refine_iterations : int
        Refinement iterations after each round.
    significance : float
        Of a residual peak (:func:`light_atom_candidates`).
    device : str
    progress, cancel : progress callback and ``threading.Event``
    contrast : (k,) array, optional
        Each species' height relative to the heaviest (default :func:`z_contrast` of the
        names; for unnamed populations, the measured ratio); None for names that are not
        elements leaves the heights free.

    Returns
    -------
    SpeciesResult
    """
    from .confidence import atom_model_projections
    from .refine import refine_positions

    t0 = time.perf_counter()
    names = [str(n) for n in names]
    if len(names) < 2:
        raise AETInputError(f"species resolution needs two or more species; got {names}")
    pos = np.asarray(positions, np.float64).reshape(-1, 3)
    cls = np.asarray(classes, int).reshape(-1)
    origin = np.arange(len(pos))
    data = np.asarray(tilts, np.float32)
    contrast = z_contrast(names) if contrast is None else np.asarray(contrast, float)
    heights, b_factors = dict(heights), dict(b_factors)
    shared_b = float(b_factors[max(b_factors)])  # the heaviest class's: the best determined
    rep = Reporter(rounds * 3, progress, cancel)
    record, conf, r_after = [], np.full(len(pos), np.nan), float("nan")  # NaN: not decided from the projections
    for rnd in range(int(rounds)):
        centres = _class_centres(heights, names, contrast)
        h_all = {j: float(centres[j]) for j in range(len(names))}
        # the first round proposes light atoms; later ones, with them in the model, only decide again
        cand, sites = np.zeros((0, 3)), np.zeros((0, 3))
        if rnd == 0:
            b_all = {j: shared_b for j in range(len(names))}
            model = atom_model_projections(pos, cls, h_all, b_all, angles, data.shape[1:], pixel_size, device)
            r_after = float(np.abs(model - data).sum() / np.abs(data).sum())
            cand = light_atom_candidates(pos, cls, h_all, b_all, data, angles, pixel_size, volume_shape,
                                         min_distance=min_distance, significance=significance, device=device,
                                         model=model, cancel=cancel)
            sites = lattice_site_candidates(pos, cls == len(names) - 1)
        before = (pos, cls, conf, origin, heights, r_after)
        if len(sites):
            from scipy.spatial import cKDTree

            sites = sites[cKDTree(pos).query(sites)[0] > empty_distance_for(min_distance)]
            far = cKDTree(sites).query(cand)[0] > 1.0 if len(cand) and len(sites) else np.ones(len(cand), bool)
            cand = np.concatenate([sites, cand[far]])
        rep.step(f"round {rnd + 1}: {len(cand)} candidate sites and residual peaks")
        every = np.concatenate([pos, cand])
        start = np.r_[[h_all[int(c)] for c in cls], np.full(len(cand), 0.5 * h_all[0])]
        height, every = joint_heights(every, start, shared_b, data, angles, pixel_size, device=device, cancel=cancel)
        err = np.zeros(len(height))  # the scatter measured on the heavy atoms stands for every atom's error
        heavy_h = height[:len(pos)][cls == len(names) - 1]
        misfit = 1.4826 * float(np.median(np.abs(heavy_h - np.median(heavy_h)))) if len(heavy_h) >= 10 else None
        labels, conf, fit = assign_species(height, err, centres, fixed_centres=contrast is not None, scatter=misfit)
        keep = (labels > 0) & _apart(every, height, min_distance)
        n_old = len(pos)
        added, dropped = int(keep[n_old:].sum()), int((~keep[:n_old]).sum())
        changed = int((labels[:n_old] - 1 != cls).sum()) + added
        rep.step(f"round {rnd + 1}: {added} added, {dropped} dropped")
        pos, cls, conf = every[keep], labels[keep] - 1, conf[keep]
        origin = np.r_[origin, np.full(len(cand), -1)][keep]
        ref = refine_positions(pos, cls, data, angles, pixel_size, iterations=refine_iterations,
                               initial_b=shared_b, step_size=0.005, device=device, cancel=cancel, share_b_factor=True,
                               fit_b_factor=False)  # a width refitted with new atoms drifts (measured on abTEM)
        pos, heights, r_after = ref.positions, ref.heights, ref.r_factor_after
        shared_b = float(ref.b_factors[max(ref.b_factors)])
        rep.step(f"round {rnd + 1}: R {r_after:.4f}")
        if r_after > R_TOLERANCE * before[-1] + R_SLACK:  # the model explains the data worse: undone
            record.append({"candidates": int(len(cand)), "undone": True, "r_factor": round(r_after, 5)})
            pos, cls, conf, origin, heights, r_after = before
            break
        record.append({"candidates": int(len(cand)), "lattice_sites": int(len(sites)), "added": added, "dropped": dropped, "changed": changed,
                       "mixture": {k: [round(float(x), 5) for x in v] for k, v in fit.items()},
                       "r_factor": round(r_after, 5)})
        if changed == 0:
            break
    every_class = _class_centres(heights, names, contrast)  # a class the rounds emptied keeps a height
    heights = {j: float(heights.get(j, every_class[j])) for j in range(len(names))}
    conf = _final_confidence(pos, cls, heights, shared_b, data, angles, pixel_size, names, contrast, device)
    return SpeciesResult(pos, cls, names, heights, {k: shared_b for k in heights}, conf, origin, record, r_after,
                         time.perf_counter() - t0)


def _final_confidence(pos, cls, heights, b_factor, data, angles, pixel_size, names, contrast, device) -> np.ndarray:
    """Each atom's probability of its named species among the species, on the final model:
    the likelihoods of its implied height under each species' height (the elements' Z-contrast
    scaled to the heaviest, else the refined heights), with the heavy atoms' misfit as scatter."""
    if len(pos) == 0:
        return np.zeros(0)
    b_all = {j: b_factor for j in range(len(names))}
    height, err = implied_heights(pos, cls, heights, b_all, data, angles, pixel_size, device=device)
    centres = _class_centres(heights, names, contrast) if contrast is not None else \
        np.array([heights[j] for j in range(len(names))])
    heavy = height[cls == len(names) - 1]
    scatter = 1.4826 * float(np.median(np.abs(heavy - np.median(heavy)))) if len(heavy) >= 10 else 0.0
    var = err[:, None] ** 2 + scatter**2
    logp = -0.5 * np.log(var) - 0.5 * (height[:, None] - centres[None]) ** 2 / var
    logp -= logp.max(1, keepdims=True)
    post = np.exp(logp)
    post /= post.sum(1, keepdims=True)
    return post[np.arange(len(cls)), cls]


def second_population(height, error, positions=None, min_share: float = 0.02) -> Optional[dict]:
    """Whether the atoms' implied heights hold a second, fainter population of atoms (not
    noise, not a support): a two-species mixture separates it clearly, its atoms are well above
    zero, at least ``min_share`` of the atoms, and (with ``positions``) mostly intermixed with
    the bright ones (two or more bright atoms within 1.2 times their nearest-neighbour
    distance: an alloy's light atoms are, a support film's atoms under the particle are not).

    Parameters
    ----------
    height, error : (n,) arrays
        Implied heights of the atoms and of the residual's candidates.
    positions : (n, 3) array, optional
        Å.
    min_share : float

    Returns
    -------
    dict or None
        ``n_faint`` (intermixed faint atoms), ``n_bright``, ``ratio`` (faint / bright height).
    """
    y = np.asarray(height, float)
    if len(y) < 20:
        return None
    bright = float(np.median(y[y > np.percentile(y, 50)]))
    labels, _, fit = assign_species(y, error, [0.25 * bright, bright])
    faint_h, bright_h = fit["centres"][1], fit["centres"][2]
    sep = (bright_h - faint_h) / max(np.hypot(fit["scatter"][1], fit["scatter"][2]), 1e-12)
    faint = labels == 1
    if positions is not None and faint.any() and (labels == 2).sum() >= 4:
        from scipy.spatial import cKDTree

        pos = np.asarray(positions, float).reshape(-1, 3)
        tree = cKDTree(pos[labels == 2])
        d_nn = float(np.median(tree.query(pos[labels == 2], k=2)[0][:, 1]))
        near = np.array([len(v) for v in tree.query_ball_point(pos[faint], 1.2 * d_nn)])
        if np.mean(near >= 2) < 0.5:
            return None  # the faint atoms lie apart from the bright ones: a support, not an alloy
        faint[np.flatnonzero(faint)[near < 2]] = False
    n_faint = int(faint.sum())
    if n_faint >= min_share * (labels > 0).sum() and faint_h > 3 * np.median(error) and sep > 3 \
            and faint_h < 0.7 * bright_h:
        return {"n_faint": n_faint, "n_bright": int((labels == 2).sum()), "ratio": round(faint_h / bright_h, 3)}
    return None


def tomogram_species(intensity, atom, bright_centre: float, names: Sequence[str]) -> np.ndarray:
    """First guess of each traced peak's species from its integrated intensity in the tomogram:
    the tracer's atoms and the non-atom peaks brighter than half the faintest species' expected
    intensity, each given the species whose expected intensity (``bright_centre`` times its
    Z-contrast) is nearest on a log scale; the projections decide later (:func:`resolve_species`).

    Parameters
    ----------
    intensity : (n,) array
        Integrated intensities of the peaks.
    atom : (n,) bool array
        The tracer's atoms (the bright class of its two-class split).
    bright_centre : float
        The tracer's atom class centre.
    names : sequence of str
        Species, lightest first.

    Returns
    -------
    (n,) int array
        Index into ``names``; -1 for noise.
    """
    contrast = z_contrast(names)
    if contrast is None:
        contrast = np.geomspace(0.2, 1.0, len(names))
    expected = bright_centre * contrast
    value = np.asarray(intensity, float)
    candidate = np.asarray(atom, bool) | (value > 0.5 * expected[0])
    near = np.argmin(np.abs(np.log(np.clip(value, 1e-12, None))[:, None] - np.log(expected)[None]), axis=1)
    return np.where(candidate, near, -1)

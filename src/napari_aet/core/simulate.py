"""Simulated nanoparticles, ideal tomograms and HAADF-STEM tilt series with ground truth.

What the network trains on and every test measures against. The forward model:

* Atoms are 3D Gaussians with the Debye-Waller width ``sigma = sqrt(B / (8 pi^2))`` (Å),
  each integrated exactly over its voxels (erf), so intensity is conserved at any pixel
  size, even for atoms narrower than a voxel.
* An atom's integrated intensity is ``(Z / 78) ** z_exponent`` (HAADF Z-contrast; one Pt
  atom = 1). Volumes and tilt series share this unit, so a noise-free projection at zero tilt
  equals the ideal tomogram summed along z.
* Projections are analytic: the line integral of a Gaussian is a 2D Gaussian of the same
  width at the projected centre (a Gaussian probe adds in quadrature), so the tilt series has
  no interpolation error.
* Poisson noise: an atom sends ``dose * cross_section`` electrons (dose in e/Å² per
  projection, HAADF cross-section in Å², Pt-equivalent) to the detector; counts are drawn
  and scaled back into the same unit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import geometry
from .errors import AETInputError
from .forward import (  # noqa: F401  (the simulator's public names, kept)
    Z_REFERENCE, GaussianAtoms, atom_weights, b_factor_to_sigma, ideal_tomogram, project_atoms,
)
from .io import TiltSeries, Volume, check_pixel_size
from .lattice import FACET_FAMILIES, facet_labels

__all__ = [
    "SimulationConfig",
    "Particle",
    "Simulation",
    "reference_config",
    "tilt_angles",
    "make_particle",
    "atom_weights",
    "ideal_tomogram",
    "project_atoms",
    "add_poisson_noise",
    "simulate",
    "b_factor_to_sigma",
    "FACET_FAMILIES",
]


# Relative surface energies of Pt (DFT, Vitos et al. 1998: 2.299, 2.734, 2.819 J/m²).
PT_SURFACE_ENERGIES = {"111": 1.0, "100": 1.19, "110": 1.23}

SHAPES = ("wulff", "octahedron", "spheres", "sphere")

# Room-temperature lattice constants (Å) of common f.c.c. metals; others from ASE's data.
FCC_LATTICE_CONSTANTS = {"Pt": 3.924, "Au": 4.078, "Pd": 3.891, "Ag": 4.086, "Cu": 3.615, "Ni": 3.524,
                         "Al": 4.050, "Ir": 3.839, "Rh": 3.803}


@dataclass
class SimulationConfig:
    """Every setting of a simulation; lengths in Å unless named otherwise, angles in degrees."""

    element: str = "Pt"
    lattice_constant: Optional[float] = None  # Å; None: ASE's reference value (Pt: 3.924)
    shape: str = "wulff"  # wulff | octahedron | spheres | sphere
    size: float = 3.5  # particle diameter, nm
    surface_energies: dict = field(default_factory=lambda: dict(PT_SURFACE_ENERGIES))
    orientation: str = "random"  # random | aligned (crystal axes along x, y, z)
    vacancy_fraction: float = 0.0  # share of surface atoms removed
    strain: float = 0.0  # amplitude of the imposed smooth strain field (fraction)
    surface_relaxation: float = 0.0  # Å, outward (+) / inward (-) shift of surface atoms
    offsite_fraction: float = 0.0  # share of atoms moved off their sites
    offsite_distance: float = 1.0  # Å, along a random <100> direction
    offsite_min_distance: float = 2.0  # Å, the nearest any other atom may be to a moved atom
    alloy: Optional[dict] = None  # {element: fraction} substituted on random sites, e.g. {"Ni": 0.3}
    surface_enrichment: float = 0.0  # alloying elements' surface share = fraction x (1 + this), -1..; 0 random
    substrate: bool = False  # amorphous light-element film under the particle
    substrate_element: str = "C"
    substrate_thickness: float = 6.0  # Å
    substrate_density: float = 0.10  # atoms / Å³ (amorphous carbon ~2 g/cm³)
    b_factor: float = 5.0  # Å²
    z_exponent: float = 1.7
    pixel_size: float = 0.357  # Å
    n_voxels: int = 144
    tilt_range: float = 65.0  # ± degrees
    tilt_step: float = 6.5  # degrees
    angles: Optional[list] = None  # explicit tilts (N) or Euler (N x 3); overrides range/step
    probe_sigma: float = 0.0  # Å, Gaussian probe blur
    dose: Optional[float] = None  # e/Å² per projection; None: noise-free
    cross_section: float = 0.02  # Å², HAADF cross-section of one Pt atom
    angle_error: float = 0.0  # degrees, max |random error| (uniform) on each Euler angle in use
    shift_error: float = 0.0  # pixels, max |shift| of each projection (uniform)
    centre_offset: float = 1.0  # pixels, max random offset of the particle from the centre
    seed: int = 0

    def replace(self, **changes) -> "SimulationConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reference_config(**changes) -> SimulationConfig:
    """The reference regime: Pt, 0.357 Å pixels, 144³, ±65° in 6.5° steps, Poisson noise.

    Parameters
    ----------
    **changes
        Fields of :class:`SimulationConfig` to change.

    Returns
    -------
    SimulationConfig
    """
    return SimulationConfig(dose=1e5).replace(**changes)


def tilt_angles(tilt_range: float, tilt_step: float) -> np.ndarray:
    """Evenly spaced tilts.

    Parameters
    ----------
    tilt_range : float
        From ``-tilt_range`` to ``+tilt_range``, degrees.
    tilt_step : float
        Degrees.

    Returns
    -------
    (n,) array
    """
    if tilt_step < 0.1 or tilt_range <= 0 or tilt_range >= 90:
        raise AETInputError(f"tilt range ±{tilt_range}° in {tilt_step}° steps is invalid; use 0 < range < 90 and a "
                            "step of at least 0.1°")
    n = int(round(2 * tilt_range / tilt_step)) + 1
    return np.linspace(-tilt_range, tilt_range, n)


@dataclass
class Particle:
    """A particle's atoms with ground truth, in the sample frame (Å)."""

    positions: np.ndarray  # (n, 3) x, y, z in Å
    species: np.ndarray  # (n,) element symbols
    on_site: np.ndarray  # (n,) bool: at (or displaced by the smooth field from) an fcc site
    surface: np.ndarray  # (n,) bool
    facet: np.ndarray  # (n,) str: '100', '111', '110' or ''
    layer: np.ndarray  # (n,) int, -1 for non-particle atoms
    displacement: np.ndarray  # (n, 3) crystal frame, Å (NaN off-site / substrate)
    strain: np.ndarray  # (n, 6) exx, eyy, ezz, exy, exz, eyz (NaN off-site / substrate)
    is_particle: np.ndarray  # (n,) bool: metal atom of the particle (not substrate)
    rotation: np.ndarray  # (3, 3) crystal -> sample frame
    lattice_constant: float
    origin: np.ndarray  # (3,) sample-frame position of the lattice site at the crystal origin


@dataclass
class Simulation:
    """A simulated measurement with ground truth."""

    config: SimulationConfig
    particle: Particle
    tilt_series: TiltSeries  # nominal angles, as a user would have them
    ideal: Volume
    true_angles: np.ndarray  # Euler (N, 3), with the applied angle errors
    shifts: np.ndarray  # (N, 2) applied (du, dv) shifts, pixels

    def truth_table(self):
        """Ground truth as an atoms table with the contract's columns the simulator knows."""
        return particle_table(self.particle, self.config)

    @property
    def support_normal(self) -> Optional[tuple]:
        """Direction (sample frame) from the particle to its substrate: -z, the substrate
        lies under the particle along the beam; None without a substrate."""
        return (0.0, 0.0, -1.0) if self.config.substrate else None

    def metadata(self) -> dict:
        p = self.particle
        return {
            "config": self.config.to_dict(),
            "n_atoms": int(p.is_particle.sum()),
            "n_substrate_atoms": int((~p.is_particle).sum()),
            "n_offsite_atoms": int((~p.on_site & p.is_particle).sum()),
            "support_normal": None if self.support_normal is None else list(self.support_normal),
            "crystal_rotation": p.rotation.tolist(),
            "crystal_rotation_note": "columns are the crystal [100], [010], [001] axes in the sample frame",
            "lattice_constant": p.lattice_constant,
            "lattice_origin": p.origin.tolist(),
            "nominal_angles": np.asarray(self.tilt_series.angles).tolist(),
            "true_euler_angles": self.true_angles.tolist(),
            "shifts_px": self.shifts.tolist(),
            "pixel_size": self.config.pixel_size,
            "units": {"length": "angstrom", "angles": "degrees", "intensity": "Pt-atom equivalents"},
        }


# ----------------------------------------------------------------------- particles


def _lattice_constant(element: str, given: Optional[float]) -> float:
    if given is not None:
        if not 2.0 < given < 7.0:
            raise AETInputError(f"lattice constant {given} Å is not plausible for an fcc metal; give it in Å (Pt: 3.924)")
        return float(given)
    from ase.data import atomic_numbers, reference_states

    if element not in atomic_numbers:
        raise AETInputError(f"unknown element {element!r}; give a chemical symbol such as Pt, Au, Pd")
    if element in FCC_LATTICE_CONSTANTS:
        return FCC_LATTICE_CONSTANTS[element]
    state = reference_states[atomic_numbers[element]]
    if not state or state.get("symmetry") != "fcc":
        raise AETInputError(f"{element} is not fcc in ASE's reference data; give --lattice-constant for an fcc {element}")
    return float(state["a"])


def _fcc_sites(radius: float, a: float) -> np.ndarray:
    n = int(math.ceil(radius / a)) + 1
    r = np.arange(-n, n + 1)
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3).astype(float)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    sites = (g[:, None, :] + basis[None]).reshape(-1, 3) * a
    return sites[np.linalg.norm(sites, axis=1) <= radius]


def _shape_sites(cfg: SimulationConfig, a: float, rng: np.random.Generator) -> np.ndarray:
    """Lattice sites of the particle in the crystal frame (Å), a site at the origin."""
    diameter = cfg.size * 10.0
    if not 0.5 <= cfg.size <= 12:
        raise AETInputError(f"particle size {cfg.size} nm is outside 0.5-12 nm; give the diameter in nm")
    if cfg.shape == "wulff":
        from ase.cluster import wulff_construction

        fams = [f for f in ("100", "111", "110") if f in cfg.surface_energies]
        n_target = max(13, int(round(4 / a**3 * math.pi / 6 * diameter**3)))
        cluster = wulff_construction(
            cfg.element, [tuple(FACET_FAMILIES[f][0]) for f in fams],
            [float(cfg.surface_energies[f]) for f in fams], n_target, "fcc", latticeconstant=a,
        )
        sites = cluster.positions
    elif cfg.shape == "octahedron":
        from ase.cluster import Octahedron

        best = None
        for length in range(2, 80):
            cut = max(0, (length - 1) // 3)
            if 2 * cut >= length:
                continue
            pos = Octahedron(cfg.element, length, cutoff=cut, latticeconstant=a).positions
            extent = 2 * np.linalg.norm(pos - pos.mean(0), axis=1).max()
            if best is None or abs(extent - diameter) < best[0]:
                best = (abs(extent - diameter), pos)
            if extent > diameter * 1.3:
                break
        sites = best[1]
    elif cfg.shape in ("sphere", "spheres"):
        lattice = _fcc_sites(diameter / 2, a)
        if cfg.shape == "sphere":
            keep = np.linalg.norm(lattice, axis=1) <= diameter / 2
        else:
            keep = np.zeros(len(lattice), bool)
            for k in range(rng.integers(2, 5)):
                r = diameter * (rng.uniform(0.3, 0.45) if k == 0 else rng.uniform(0.18, 0.35))
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                centre = direction * rng.uniform(0, diameter / 2 - r) if k else np.zeros(3)
                keep |= np.linalg.norm(lattice - centre, axis=1) <= r
        sites = _largest_cluster(lattice[keep], a)
    else:
        raise AETInputError(f"unknown particle shape {cfg.shape!r}; use one of {', '.join(SHAPES)}")
    # Put the lattice site nearest the centroid at the origin, so sites are lattice points.
    centre = sites[np.argmin(np.linalg.norm(sites - sites.mean(0), axis=1))]
    sites = sites - centre
    return np.round(sites / (a / 2)) * (a / 2)


def _largest_cluster(sites: np.ndarray, a: float) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(sites).query_pairs(a / math.sqrt(2) * 1.1, output_type="ndarray")
    n = len(sites)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return sites[labels == np.bincount(labels).argmax()]


def _coordination(sites: np.ndarray, a: float) -> np.ndarray:
    from scipy.spatial import cKDTree

    tree = cKDTree(sites)
    counts = tree.query_ball_point(sites, geometry.neighbour_cutoff(a / math.sqrt(2)), return_length=True)
    return np.asarray(counts) - 1


def _smooth_field(r: np.ndarray, amplitude: float, radius: float, rng: np.random.Generator):
    """Displacement u (Å) and strain (6 comps) of a smooth field in the crystal frame.

    u = E r + c r |r|² / R²: a homogeneous strain E (random symmetric, entries ~ amplitude)
    plus a radial term whose strain grows towards the surface (c = amplitude).
    """
    if amplitude == 0:
        return np.zeros_like(r), np.zeros((len(r), 6))
    e = rng.normal(scale=amplitude, size=(3, 3))
    e = (e + e.T) / 2
    c = amplitude * rng.choice([-1.0, 1.0])
    rho2 = (r**2).sum(1, keepdims=True) / radius**2
    u = r @ e.T + c * r * rho2
    grad = e[None] + c * (np.eye(3)[None] * rho2[:, :, None] + 2 * r[:, :, None] * r[:, None, :] / radius**2)
    eps = 0.5 * (grad + grad.transpose(0, 2, 1))
    strain = np.stack([eps[:, 0, 0], eps[:, 1, 1], eps[:, 2, 2], eps[:, 0, 1], eps[:, 0, 2], eps[:, 1, 2]], 1)
    return u, strain


def thin_to_min_distance(points: np.ndarray, min_dist: float) -> np.ndarray:
    """Drop points (later ones first) until no two are closer than ``min_dist`` (Å)."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(points), bool)
    for i, j in cKDTree(points).query_pairs(min_dist, output_type="ndarray"):
        if keep[i] and keep[j]:
            keep[j] = False
    return points[keep]


def _amorphous_slab(lo: np.ndarray, hi: np.ndarray, density: float, min_dist: float, rng) -> np.ndarray:
    volume = float(np.prod(hi - lo))
    pts = thin_to_min_distance(rng.uniform(lo, hi, size=(int(volume * density * 1.6), 3)), min_dist)
    n_target = int(volume * density)
    return pts[rng.permutation(len(pts))[:n_target]]


def _move_off_site(sites, disp, on_site, cfg: SimulationConfig, rng, min_distance: float = 2.0):
    """Move a share of atoms ``offsite_distance`` along a random <100> direction.

    A move is kept only if the atom stays ``min_distance`` Å from every other atom, so
    off-site atoms are resolvable, never overlapping neighbours.
    """
    from scipy.spatial import cKDTree

    n_off = int(round(cfg.offsite_fraction * len(sites)))
    pos = sites + disp
    tree = cKDTree(pos)
    directions = np.vstack([np.eye(3), -np.eye(3)])
    moved = 0
    for i in rng.permutation(len(sites)):
        if moved == n_off:
            break
        near = [j for j in tree.query_ball_point(pos[i], cfg.offsite_distance + min_distance + 0.5) if j != i]
        for d in directions[rng.permutation(6)]:
            new = pos[i] + d * cfg.offsite_distance
            if not near or np.linalg.norm(pos[near] - new, axis=1).min() >= min_distance:
                disp[i] = new - sites[i]
                pos[i] = new
                on_site[i] = False
                moved += 1
                break
    return disp, on_site


def make_particle(cfg: SimulationConfig, rng: Optional[np.random.Generator] = None) -> Particle:
    """Build a particle (and optional substrate) with its ground truth, in the sample frame.

    Parameters
    ----------
    cfg : SimulationConfig
        Shape, size, orientation, defects, strain, substrate.
    rng : numpy Generator, optional
        Default: seeded from ``cfg.seed``.

    Returns
    -------
    Particle
        Positions (Å), species, sites, displacement, strain, surface, facets and layers.
    """
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    a = _lattice_constant(cfg.element, cfg.lattice_constant)
    sites = _shape_sites(cfg, a, rng)
    cn = _coordination(sites, a)
    surface = cn < 12
    if cfg.vacancy_fraction > 0:
        idx = np.flatnonzero(surface)
        drop = rng.choice(idx, size=int(round(cfg.vacancy_fraction * len(idx))), replace=False)
        keep = np.ones(len(sites), bool)
        keep[drop] = False
        sites = sites[keep]
        surface = _coordination(sites, a) < 12
    facet = facet_labels(sites, surface, a)
    radius = float(np.linalg.norm(sites, axis=1).max()) or a
    disp, strain = _smooth_field(sites, cfg.strain, radius, rng)
    if cfg.surface_relaxation:
        outward = sites[surface] / np.maximum(np.linalg.norm(sites[surface], axis=1, keepdims=True), 1e-9)
        disp[surface] += cfg.surface_relaxation * outward
    on_site = np.ones(len(sites), bool)
    if cfg.offsite_fraction > 0:
        disp, on_site = _move_off_site(sites, disp, on_site, cfg, rng, cfg.offsite_min_distance)
    layer = geometry.layer_index(sites[:, 2], a)

    rot = geometry.random_rotation(rng) if cfg.orientation == "random" else np.eye(3)
    if cfg.orientation not in ("random", "aligned"):
        raise AETInputError(f"orientation {cfg.orientation!r} unknown; use random or aligned")
    offset = rng.uniform(-1, 1, 3) * cfg.centre_offset * cfg.pixel_size
    positions = (sites + disp) @ rot.T + offset

    n = len(sites)
    nan_off = ~on_site
    disp_out = disp.copy()
    disp_out[nan_off] = np.nan
    strain_out = strain.copy()
    strain_out[nan_off] = np.nan
    species = _alloy_species(cfg, surface, rng)
    particle = Particle(
        positions=positions, species=species, on_site=on_site, surface=surface, facet=facet,
        layer=layer, displacement=disp_out, strain=strain_out, is_particle=np.ones(n, bool),
        rotation=rot, lattice_constant=a, origin=offset,
    )
    if cfg.substrate:
        particle = _add_substrate(particle, cfg, rng)
    _check_fits(particle, cfg)
    return particle


def _alloy_species(cfg: SimulationConfig, surface: np.ndarray, rng) -> np.ndarray:
    """Each site's element: ``cfg.element`` with ``cfg.alloy``'s elements substituted at random,
    their surface share scaled by ``1 + surface_enrichment`` (the interior takes the rest)."""
    species = np.full(len(surface), cfg.element, dtype=object)
    if not cfg.alloy:
        return species
    total = sum(float(f) for f in cfg.alloy.values())
    if not 0 < total < 1 or any(float(f) <= 0 for f in cfg.alloy.values()):
        raise AETInputError(f"alloy fractions {cfg.alloy} must be positive and sum to less than 1 (the rest is "
                            f"{cfg.element})")
    n_surf, n = int(surface.sum()), len(surface)
    share_surf = min(1.0, total * (1 + cfg.surface_enrichment))
    want = int(round(total * n))
    k_surf = min(n_surf, want, int(round(share_surf * n_surf)))
    k_in = min(n - n_surf, want - k_surf)
    chosen = np.r_[rng.choice(np.flatnonzero(surface), k_surf, replace=False),
                   rng.choice(np.flatnonzero(~surface), k_in, replace=False)]
    rng.shuffle(chosen)
    start = 0
    for element, fraction in cfg.alloy.items():
        k = int(round(len(chosen) * float(fraction) / total))
        species[chosen[start:start + k]] = element
        start += k
    return species


def _add_substrate(p: Particle, cfg: SimulationConfig, rng) -> Particle:
    half = (cfg.n_voxels // 2 - 3) * cfg.pixel_size
    top = p.positions[:, 2].min() - 2.0
    lo = np.array([-half, -half, top - cfg.substrate_thickness])
    hi = np.array([half, half, top])
    sub = _amorphous_slab(lo, hi, cfg.substrate_density, 1.4, rng)
    m = len(sub)
    nan3 = np.full((m, 3), np.nan)
    return Particle(
        positions=np.vstack([p.positions, sub]),
        species=np.concatenate([p.species, np.full(m, cfg.substrate_element, dtype=object)]),
        on_site=np.concatenate([p.on_site, np.zeros(m, bool)]),
        surface=np.concatenate([p.surface, np.zeros(m, bool)]),
        facet=np.concatenate([p.facet, np.full(m, "", dtype=object)]).astype(str),
        layer=np.concatenate([p.layer, np.full(m, -1)]),
        displacement=np.vstack([p.displacement, nan3]),
        strain=np.vstack([p.strain, np.full((m, 6), np.nan)]),
        is_particle=np.concatenate([p.is_particle, np.zeros(m, bool)]),
        rotation=p.rotation, lattice_constant=p.lattice_constant, origin=p.origin,
    )


def _check_fits(p: Particle, cfg: SimulationConfig) -> None:
    sigma = b_factor_to_sigma(cfg.b_factor)
    half = (cfg.n_voxels // 2 - 1) * cfg.pixel_size - 4 * sigma - cfg.shift_error * cfg.pixel_size
    extent = float(np.linalg.norm(p.positions[p.is_particle], axis=1).max())
    if extent > half:
        box = cfg.n_voxels * cfg.pixel_size
        raise AETInputError(
            f"a {cfg.size:g} nm particle (radius {extent:.1f} Å) does not fit the {cfg.n_voxels}-voxel "
            f"box of {box:.1f} Å at every tilt; use a smaller --size or more --voxels"
        )


def particle_table(p: Particle, cfg: Optional[SimulationConfig] = None):
    """Atoms table (contract columns) of a particle's ground truth."""
    import pandas as pd

    weights = atom_weights(p.species, cfg.z_exponent if cfg else 1.7)
    df = pd.DataFrame(
        {
            "x": p.positions[:, 0], "y": p.positions[:, 1], "z": p.positions[:, 2],
            "intensity": weights,
            "atom": p.is_particle.astype(int),
            "species": p.species.astype(str),
            "fcc": (p.on_site & p.is_particle).astype(int),
            "surface": p.surface.astype(int),
            "facet": p.facet,
            "layer": pd.array(np.where(p.layer >= 0, p.layer, 0), dtype="Int64"),
            "ux": p.displacement[:, 0], "uy": p.displacement[:, 1], "uz": p.displacement[:, 2],
            "exx": p.strain[:, 0], "eyy": p.strain[:, 1], "ezz": p.strain[:, 2],
            "exy": p.strain[:, 3], "exz": p.strain[:, 4], "eyz": p.strain[:, 5],
        }
    )
    df.loc[p.layer < 0, "layer"] = pd.NA
    return df


# ------------------------------------------------------------------ forward model


def add_poisson_noise(tilts: np.ndarray, dose: float, cross_section: float, rng) -> np.ndarray:
    """Poisson counts for a dose, scaled back to Pt-atom units (noisy and clean data share it).

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
        Noise-free, in Pt-atom units.
    dose : float
        Electrons per Å² per projection.
    cross_section : float
        HAADF cross-section of one Pt atom, Å².
    rng : numpy Generator

    Returns
    -------
    (n_angles, nv, nu) float32 array
    """
    if dose <= 0:
        raise AETInputError(f"dose {dose} e/Å² must be positive; give electrons per Å² per projection")
    scale = float(dose) * float(cross_section)
    counts = rng.poisson(np.clip(tilts, 0, None).astype(np.float64) * scale)
    return (counts / scale).astype(np.float32)


MAX_VOXELS = 512  # volume edge; the ideal tomogram alone is 0.5 GB at 512³


def check_config(cfg: SimulationConfig) -> None:
    """Every setting in its range before any work (one line naming the option otherwise)."""
    from .validate import check_int, check_memory, check_number

    n = check_int(cfg.n_voxels, "--voxels", 16, MAX_VOXELS)
    check_pixel_size(cfg.pixel_size)
    check_number(cfg.vacancy_fraction, "--vacancies", 0.0, 1.0, hint=" (a share of the surface atoms)")
    check_number(cfg.offsite_fraction, "--offsite-fraction", 0.0, 1.0, hint=" (a share of the atoms)")
    check_number(cfg.strain, "--strain", -0.2, 0.2, hint=" (a plain fraction: 0.01 = 1%)")
    check_number(cfg.surface_relaxation, "--surface-relaxation", -2.0, 2.0, unit="Å")
    check_number(cfg.offsite_distance, "--offsite-distance", 0.0, 5.0, unit="Å")
    check_number(cfg.offsite_min_distance, "offsite_min_distance", 0.5, 4.0, unit="Å")
    check_number(cfg.b_factor, "--b-factor", 0.0, 100.0, unit="Å²")
    check_number(cfg.probe_sigma, "--probe-sigma", 0.0, 10.0, unit="Å")
    check_number(cfg.cross_section, "--cross-section", 0.0, 10.0, unit="Å²", lo_open=True)
    check_number(cfg.angle_error, "--angle-error", 0.0, 10.0, unit="°")
    check_number(cfg.shift_error, "--shift-error", 0.0, n / 4, unit="px")
    if cfg.dose is not None:
        check_number(cfg.dose, "--dose", 0.0, 1e12, unit="e/Å²", lo_open=True)
    # ideal tomogram, its projections and working copies: about 4 float32 volumes
    check_memory(4 * 4 * n**3, f"a {n}³ simulation", "use fewer --voxels")


def simulate(cfg: Optional[SimulationConfig] = None, progress=None, cancel=None, model=None,
             **changes) -> Simulation:
    """Simulate a particle, its ideal tomogram and its tilt series (one call, seeded).

    Parameters
    ----------
    cfg : SimulationConfig, optional
        Default: :func:`reference_config`-like defaults of :class:`SimulationConfig`.
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.
    model : forward model, optional
        What makes the tilt series (:mod:`napari_aet.core.forward`, e.g. ``AbtemPotential()``);
        default the configured :class:`~napari_aet.core.forward.GaussianAtoms`. The ideal
        tomogram is always the Gaussian atoms' density.
    **changes
        Fields of ``cfg`` to change, e.g. ``seed=3, dose=1e4``.

    Returns
    -------
    Simulation
        ``particle`` (ground truth: positions, species, sites, displacement, strain,
        facets), ``ideal`` (Volume), ``tilt_series`` (TiltSeries) and the ``config``.

    Examples
    --------
    >>> sim = simulate(seed=1, size=2.0, n_voxels=64, pixel_size=0.4)  # doctest: +SKIP
    >>> sim.truth_table().head()  # doctest: +SKIP
    """
    cfg = (cfg or SimulationConfig()).replace(**changes) if changes else (cfg or SimulationConfig())
    check_config(cfg)
    rng = np.random.default_rng(cfg.seed)
    particle = make_particle(cfg, rng)
    nominal = np.asarray(cfg.angles, float) if cfg.angles is not None else tilt_angles(cfg.tilt_range, cfg.tilt_step)
    euler = geometry.as_euler_angles(nominal)
    true = euler.copy()
    if cfg.angle_error > 0:
        used = [1] if nominal.ndim == 1 else [0, 1, 2]
        true[:, used] += rng.uniform(-cfg.angle_error, cfg.angle_error, size=(len(true), len(used)))
    shifts = rng.uniform(-cfg.shift_error, cfg.shift_error, size=(len(true), 2)) if cfg.shift_error > 0 else np.zeros((len(true), 2))

    n = cfg.n_voxels
    gaussian = GaussianAtoms(cfg.b_factor, cfg.probe_sigma, cfg.z_exponent)
    ideal = gaussian.density(particle.positions, (n, n, n), cfg.pixel_size, species=particle.species)
    tilts = (model or gaussian).project(particle.positions, true, (n, n), cfg.pixel_size, species=particle.species,
                                        shifts=shifts, progress=progress, cancel=cancel)
    if cfg.dose is not None:
        tilts = add_poisson_noise(tilts, cfg.dose, cfg.cross_section, rng)
    ts = TiltSeries(tilts, nominal, cfg.pixel_size, metadata={"simulated": True})
    return Simulation(cfg, particle, ts, Volume(ideal, cfg.pixel_size), true, shifts)

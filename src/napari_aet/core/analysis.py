"""The whole crystal analysis of an atoms table: lattice, sites, surface, facets, strain, layers.

Fills the contract's columns ``fcc, surface, facet, layer, ux, uy, uz, exx ... eyz`` (crystal
frame, plain fractions), adds ``facet_id``, the facet normal ``facet_nx, facet_ny, facet_nz``
(crystal frame) and ``interior`` (two or more layers below the surface), and returns a summary: the lattice (constant, rotation, origin), the
share of atoms assigned to sites, facet statistics ({100} and {111}: mean and spread of each
strain component and of the strain normal to the facet; near a support plane when given) and
per-layer means of displacement and strain; for alloys (two or more species) also ``shell`` and
the summary's ``alloy`` block (:mod:`napari_aet.core.alloy`).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from . import geometry
from .alloy import alloy_analysis
from .errors import AETInputError, Reporter
from .lattice import (
    DEFAULT_SIGMA, alpha_shape_surface, assign_sites, coordination, displacements, facets, fit_fcc_lattice, interior_atoms, strain_on_grid, strain_tensor,
)

__all__ = ["analyze_atoms", "AnalysisSummary", "LAYER_AXES"]

LAYER_AXES = {"100": (1, 0, 0), "010": (0, 1, 0), "001": (0, 0, 1), "110": (1, 1, 0), "111": (1, 1, 1)}
STRAIN = ["exx", "eyy", "ezz", "exy", "exz", "eyz"]


class AnalysisSummary:
    """What :func:`analyze_atoms` found, read by name instead of nested string keys: the
    summary dict it returns (also the ``analysis`` entry of an atoms table's JSON sidecar and
    of a napari atoms layer's metadata).

    Attributes read from it: ``lattice`` (dict or None), ``lattice_constant`` (Å),
    ``crystal_rotation`` ((3, 3), crystal to sample frame), ``layer_axis`` ('001', ...),
    ``support_normal`` ((3,) or None), ``share_assigned`` and ``facet_statistics``.
    """

    def __init__(self, summary: Optional[dict]):
        self.summary = dict(summary or {})

    @classmethod
    def of(cls, source) -> "AnalysisSummary":
        """From a summary dict, an atoms sidecar / layer metadata holding ``analysis``, or None."""
        if isinstance(source, AnalysisSummary):
            return source
        source = source or {}
        return cls(source.get("analysis") if "analysis" in source and "lattice" not in source else source)

    def __bool__(self) -> bool:
        return bool(self.summary)

    @property
    def settings(self) -> dict:
        return self.summary.get("settings") or {}

    @property
    def lattice(self) -> Optional[dict]:
        return self.summary.get("lattice")

    @property
    def lattice_constant(self) -> Optional[float]:
        return None if self.lattice is None else float(self.lattice["lattice_constant"])

    @property
    def crystal_rotation(self) -> Optional[np.ndarray]:
        return None if self.lattice is None else np.asarray(self.lattice["crystal_rotation"], float)

    @property
    def layer_axis(self) -> str:
        return str(self.settings.get("layer_axis", "001"))

    @property
    def support_normal(self) -> Optional[np.ndarray]:
        n = self.settings.get("support_normal")
        return None if n is None else np.asarray(n, float)

    @property
    def share_assigned(self) -> Optional[float]:
        return self.summary.get("share_assigned")

    @property
    def facet_statistics(self) -> dict:
        return self.summary.get("facet_statistics") or {}


def _normal_strain(eps6: np.ndarray, n: np.ndarray) -> np.ndarray:
    e = np.zeros((len(eps6), 3, 3))
    e[:, 0, 0], e[:, 1, 1], e[:, 2, 2] = eps6[:, 0], eps6[:, 1], eps6[:, 2]
    e[:, 0, 1] = e[:, 1, 0] = eps6[:, 3]
    e[:, 0, 2] = e[:, 2, 0] = eps6[:, 4]
    e[:, 1, 2] = e[:, 2, 1] = eps6[:, 5]
    return np.einsum("ni,nij,nj->n", n, e, n)


def _stats(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    return {"n": int(len(v)), "mean": float(v.mean()) if len(v) else None, "std": float(v.std()) if len(v) else None}


MAX_GRID_POINTS = 1e7  # 9 float64 components a point: about 0.7 GB


def analyze_atoms(
    table,
    lattice_constant: Optional[float] = None,
    tolerance: float = 0.7,
    sigma: Optional[float] = None,
    layer_axis: str = "001",
    surface_coordination: int = 12,
    strain_excludes_surface: bool = False,
    support_normal: Optional[Sequence[float]] = None,
    grid_spacing: Optional[float] = None,
    lattice: str = "auto",
    strain_reference: str = "lattice",
    surface_method: str = "coordination",
    alpha: float = 2.5,
    grains: bool = False,
    progress=None,
    cancel=None,
):
    """Fit the f.c.c. lattice to traced atoms and compute everything the contract's analysis
    columns hold: sites, surface, facets, displacements, strain and layers.

    Parameters
    ----------
    table : DataFrame
        Atoms table (contract columns; ``x, y, z`` in Å, sample frame). Rows with ``atom`` 0
        are kept but not analysed.
    lattice_constant : float, optional
        Fix the lattice constant (Å); default: fitted.
    tolerance : float
        Largest distance (Å) from an atom to its assigned f.c.c. site.
    sigma : float, optional
        Gaussian width (Å) of the strain fit; default 1.25 lattice constants.
    layer_axis : {"001", "010", "100", "111"}
        Crystal axis along which the particle is cut into one-unit-cell layers.
    surface_coordination : int
        Atoms with fewer f.c.c. nearest neighbours are surface atoms (``surface_method``
        'coordination').
    strain_excludes_surface : bool
        Fit strain from interior atoms only.
    support_normal : (3,) sequence, optional
        Direction (sample frame) from the particle towards its support; the atoms within
        one unit cell of the outermost plane that way are 'near the support'.
    grid_spacing : float, optional
        Also sample strain and displacement on a crystal-frame grid of this spacing (Å) and
        average it per layer (``summary['grid']``).
    lattice : {"auto", "cubic", "affine"}
        Lattice model (see :func:`~napari_aet.core.lattice.fit_fcc_lattice`).
    strain_reference : {"lattice", "cubic"}
        Strain relative to the fitted lattice (default; removes a homogeneous anisotropy that
        calibration errors create) or to the cubic lattice of the same mean constant.
    surface_method : {"coordination", "alpha"}
        Surface atoms by coordination, or as the vertices of the alpha shape (radius
        ``alpha``, Å; :func:`~napari_aet.core.lattice.alpha_shape_surface`).
    alpha : float
        Alpha-shape radius, Å.
    grains : bool
        Identify local structure (a-CNA) and grains and fit a lattice per grain (twinned
        particles; :mod:`napari_aet.core.grains`).
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.

    Returns
    -------
    table : DataFrame
        The input with ``fcc, surface, facet, layer, ux, uy, uz`` (Å, crystal frame) and
        ``exx ... eyz`` (fractions) filled, plus ``facet_id``, facet normals and ``interior``.
    summary : dict
        ``lattice`` (constant, rotation to the sample frame, origin, base vectors),
        ``share_assigned``, ``facet_statistics``, ``layers`` and the ``settings`` used; when
        the atoms hold two or more species, ``alloy`` (composition overall, per layer and per
        facet, segregation by shell from the surface, chemical order:
        :func:`~napari_aet.core.alloy.alloy_analysis`) and the table gains ``shell``.
    """
    t0 = time.perf_counter()
    lattice_constant, tolerance, sigma, surface_coordination, support_normal, alpha = _check_settings(
        layer_axis, lattice_constant, tolerance, sigma, surface_coordination, support_normal, strain_reference,
        surface_method, alpha)
    rep = Reporter(5, progress, cancel)
    df = table.copy().reset_index(drop=True)
    is_atom = (df["atom"].to_numpy() == 1) if "atom" in df else np.ones(len(df), bool)
    pos = df[["x", "y", "z"]].to_numpy(float)[is_atom]
    if grid_spacing is not None:
        grid_spacing = _check_grid(pos, grid_spacing)
    lat = fit_fcc_lattice(pos, lattice_constant=lattice_constant, tolerance=tolerance, kind=lattice)
    rep.step("lattice")
    site, ok = assign_sites(pos, lat, tolerance)
    u = displacements(pos, site, ok, lat)
    grain_info = _fit_grains(pos, site, ok, u, lattice_constant, tolerance, lattice) if grains else None
    grain_fits = grain_info["fits"] if grains else []
    surface = _surface_atoms(pos, lat, surface_method, surface_coordination, alpha)
    rep.step("sites and surface")
    crystal, fam, fid, normals = _facets(pos, site, ok, surface, lat, grain_fits if grains else None)
    rep.step("facets")
    eps = _strain(site, u, lat, grain_fits if grains else None, sigma,
                  ~surface if strain_excludes_surface else None, strain_reference)
    rep.step("strain")
    axis = np.array(LAYER_AXES[layer_axis], float)
    axis /= np.linalg.norm(axis)
    layer = geometry.layer_index(crystal @ axis, lat.lattice_constant)
    inner = interior_atoms(pos, surface, lat.lattice_constant)
    _fill_columns(df, is_atom, ok, surface, fam, layer, fid, u, eps, normals, inner, grain_info)
    stats = _facet_statistics(fam, fid, eps, normals)
    if support_normal is not None:
        stats["support"] = _support_statistics(pos, eps, support_normal, lat.lattice_constant)
    layers = _layer_summary(layer, ok, u, eps)
    grid = (_layer_grid(site, u, ok, lat, crystal, axis, layer, grid_spacing, sigma) if grid_spacing else None)
    rep.step("statistics")
    summary = {
        "lattice": lat.as_dict(),
        "n_atoms": int(is_atom.sum()), "n_assigned": int(ok.sum()), "share_assigned": float(ok.mean()),
        "n_surface": int(surface.sum()),
        "facet_normals_crystal": normals.tolist(),
        "facet_statistics": stats, "layers": layers,
        "settings": {"lattice_constant": lattice_constant, "tolerance": tolerance,
                     "sigma": sigma or DEFAULT_SIGMA * lat.lattice_constant, "layer_axis": layer_axis,
                     "surface_coordination": surface_coordination, "strain_excludes_surface": strain_excludes_surface,
                     "support_normal": None if support_normal is None else list(support_normal),
                     "grid_spacing": grid_spacing, "lattice": lattice, "strain_reference": strain_reference,
                     "surface_method": surface_method, "alpha": alpha if surface_method == "alpha" else None},
        "displacement_reference": f"the fitted {lat.kind} lattice",
        "strain_reference": ("the fitted lattice" if strain_reference == "lattice" else
                             "the cubic lattice of the fitted mean constant (the fitted lattice's homogeneous strain added)"),
        "seconds": time.perf_counter() - t0,
        "crystal_rotation": lat.rotation.tolist(),
        "n_interior": int(inner.sum()),
        **(grain_info["summary"] if grains else {}),
    }
    if grid is not None:
        summary["grid"] = grid
    return _with_alloy(df, summary), summary


def _with_alloy(df, summary: dict):
    """Two or more species: the ``shell`` column and ``summary['alloy']`` (composition,
    segregation, chemical order); else no ``shell`` (an earlier analysis's no longer holds)."""
    shell, alloy = alloy_analysis(df)
    if alloy is None:
        return df.drop(columns=["shell"]) if "shell" in df else df
    df["shell"] = shell
    summary["alloy"] = alloy
    return df


def _check_settings(layer_axis, lattice_constant, tolerance, sigma, surface_coordination, support_normal,
                    strain_reference, surface_method, alpha) -> tuple:
    """The analysis settings, checked (one-line errors naming the fix)."""
    from .validate import check_direction, check_int, check_number

    if layer_axis not in LAYER_AXES:
        raise AETInputError(f"layer axis {layer_axis!r} unknown; use one of {', '.join(LAYER_AXES)}")
    if lattice_constant is not None:
        lattice_constant = check_number(lattice_constant, "lattice constant", 2.0, 8.0, unit="Å",
                                        hint=" (fcc metals lie within 3.5-4.1 Å; Pt 3.924)")
    tolerance = check_number(tolerance, "site tolerance", 0.0, 2.0, unit="Å", lo_open=True)
    if sigma is not None:
        sigma = check_number(sigma, "strain smoothing width (sigma)", 0.0, 50.0, unit="Å", lo_open=True)
    surface_coordination = check_int(surface_coordination, "surface coordination", 1, 12,
                                     hint=" (fcc atoms have 12 nearest neighbours)")
    if support_normal is not None:
        support_normal = check_direction(support_normal, "support normal")
    if strain_reference not in ("lattice", "cubic"):
        raise AETInputError(f"strain reference {strain_reference!r} unknown; use lattice or cubic")
    if surface_method not in ("coordination", "alpha"):
        raise AETInputError(f"surface method {surface_method!r} unknown; use coordination or alpha")
    if surface_method == "alpha":
        alpha = check_number(alpha, "alpha", 1.0, 20.0, unit="Å")
    return lattice_constant, tolerance, sigma, surface_coordination, support_normal, alpha


def _check_grid(pos: np.ndarray, grid_spacing: float) -> float:
    from .validate import check_number

    grid_spacing = check_number(grid_spacing, "grid spacing", 0.05, 20.0, unit="Å")
    extent = np.ptp(pos, axis=0) if len(pos) else np.zeros(3)
    n_grid = float(np.linalg.norm(extent) / grid_spacing + 3) ** 3  # any rotation fits in the diagonal
    if n_grid > MAX_GRID_POINTS:
        raise AETInputError(f"a {grid_spacing:g} Å grid over this particle has about {n_grid:.2g} points (at most "
                            f"{MAX_GRID_POINTS:.0e}); give a coarser --grid-spacing, e.g. 0.5 Å")
    return grid_spacing


def _fit_grains(pos, site, ok, u, lattice_constant, tolerance, lattice) -> dict:
    """Local structure, grains and a lattice per grain; ``site``, ``ok`` and ``u`` are
    rewritten in place against each atom's own grain."""
    import importlib.util

    from .grains import local_structure, segment_grains

    structure_method = "pyscal3" if importlib.util.find_spec("pyscal3") else "builtin"
    structure = local_structure(pos, structure_method)
    grain = segment_grains(pos, structure)
    ok[:] = False  # every atom is judged against its own grain's lattice
    u[:] = np.nan
    fits, lattices = [], []
    for g in range(grain.max() + 1 if len(grain) else 0):
        sel = np.flatnonzero(grain == g)
        if len(sel) < 13:
            continue
        try:
            lat_g = fit_fcc_lattice(pos[sel], lattice_constant=lattice_constant, tolerance=tolerance, kind=lattice)
        except AETInputError:
            continue
        site_g, ok_g = assign_sites(pos[sel], lat_g, tolerance)
        site[sel], ok[sel] = site_g, ok_g
        u[sel] = displacements(pos[sel], site_g, ok_g, lat_g)  # in the grain's own crystal frame
        fits.append((sel, lat_g))
        lattices.append({"grain": g, "n_atoms": int(len(sel)), "share_assigned": float(ok_g.mean()),
                         **lat_g.as_dict()})
    summary = {"grains": lattices,
               "structure_counts": {k: int((structure == k).sum()) for k in ("fcc", "hcp", "ico", "other")},
               "structure_method": f"adaptive common-neighbour analysis ({structure_method})",
               "grain_note": "sites, fcc, facets, displacement and strain are against each atom's own grain's "
                             "lattice, in that grain's crystal frame (its rotation in 'grains'); layers use the "
                             "largest grain's"}
    return {"structure": structure, "grain": grain, "fits": fits, "summary": summary}


def _surface_atoms(pos, lat, surface_method: str, surface_coordination: int, alpha: float) -> np.ndarray:
    if surface_method == "alpha":
        return alpha_shape_surface(pos, alpha)
    return coordination(pos, lat.lattice_constant) < surface_coordination


def _facets(pos, site, ok, surface, lat, grain_fits) -> tuple:
    """Crystal-frame positions (sites where assigned) and each surface atom's facet family,
    facet id and the facets' normals (per grain when ``grain_fits`` is given)."""
    if grain_fits is None:
        crystal = lat.crystal_positions(np.where(ok[:, None], site, lat.to_crystal(pos)))
        return (crystal, *facets(crystal, surface, lat.lattice_constant))
    crystal = lat.crystal_positions(lat.to_crystal(pos))  # layers: the largest grain's frame
    fam = np.where(surface, "other", "").astype(object)
    fid = np.full(len(pos), -1, dtype=int)
    normal_list = []
    for sel, lat_g in grain_fits:  # facets per grain, normals in that grain's crystal frame
        c_g = lat_g.crystal_positions(np.where(ok[sel][:, None], site[sel], lat_g.to_crystal(pos[sel])))
        f_g, id_g, n_g = facets(c_g, surface[sel], lat_g.lattice_constant)
        fam[sel] = f_g
        fid[sel] = np.where(id_g >= 0, id_g + len(normal_list), -1)
        normal_list.extend(n_g)
    return crystal, fam.astype(str), fid, np.array(normal_list).reshape(-1, 3)


def _strain(site, u, lat, grain_fits, sigma, use, strain_reference: str) -> np.ndarray:
    """Six-component strain of each atom (crystal frame); per grain from its own lattice when
    ``grain_fits`` is given; the fitted lattice's homogeneous strain added for a cubic reference."""
    if grain_fits is not None:
        eps = np.full((len(site), 6), np.nan)
        for sel, lat_g in grain_fits:
            eps[sel] = strain_tensor(site[sel], u[sel], lat_g, sigma=sigma, use=None if use is None else use[sel])
    else:
        eps = strain_tensor(site, u, lat, sigma=sigma, use=use)
    if strain_reference == "cubic":
        h0 = lat.homogeneous_strain()
        eps = eps + np.array([h0[0, 0], h0[1, 1], h0[2, 2], h0[0, 1], h0[0, 2], h0[1, 2]])
    return eps


def _fill_columns(df, is_atom, ok, surface, fam, layer, fid, u, eps, normals, inner, grain_info) -> None:
    """The contract's analysis columns (and the project's extra ones) for every row; non-atoms
    get 0, empty, NA or NaN."""
    import pandas as pd

    n = len(df)
    idx = np.flatnonzero(is_atom)

    def spread(values, fill, dtype=None):
        out = np.full((n,) + np.shape(values)[1:], fill, dtype=dtype or np.asarray(values).dtype)
        out[idx] = values
        return out

    df["fcc"] = spread(ok.astype(int), 0)
    df["surface"] = spread(surface.astype(int), 0)
    df["facet"] = spread(np.asarray(fam, object), "", object).astype(str)
    lay = spread(layer, -1, int)
    df["layer"] = pd.array(np.where(lay >= 0, lay, 0), dtype="Int64")
    df.loc[lay < 0, "layer"] = pd.NA
    uu, ee = spread(u, np.nan, float), spread(eps, np.nan, float)
    for k, c in enumerate(("ux", "uy", "uz")):
        df[c] = uu[:, k]
    for k, c in enumerate(STRAIN):
        df[c] = ee[:, k]
    fid_all = spread(fid, -1, int)
    df["facet_id"] = fid_all
    nrm_all = np.full((n, 3), np.nan)
    has = fid_all >= 0
    nrm_all[has] = normals[fid_all[has]]
    for k, c in enumerate(("facet_nx", "facet_ny", "facet_nz")):
        df[c] = nrm_all[:, k]  # facet normal, crystal frame
    df["interior"] = spread(inner.astype(int), 0, int)
    if grain_info is not None:
        df["structure"] = spread(np.asarray(grain_info["structure"], object), "", object).astype(str)
        df["grain"] = spread(grain_info["grain"], -1, int)


def _facet_statistics(fam, fid, eps, normals) -> dict:
    stats = {}
    for family in ("100", "111"):
        sel = fam == family
        entry = {c: _stats(eps[sel, k]) for k, c in enumerate(STRAIN)}
        nvec = normals[fid[sel]] if sel.any() else np.zeros((0, 3))
        entry["normal_strain"] = _stats(_normal_strain(eps[sel], nvec)) if sel.any() else _stats(np.array([]))
        entry["n_atoms"] = int(sel.sum())
        entry["n_facets"] = int(len(np.unique(fid[sel]))) if sel.any() else 0
        stats[family] = entry
    return stats


def _support_statistics(pos, eps, support_normal, lattice_constant: float) -> dict:
    """Strain of the atoms within one unit cell of the outermost plane towards the support."""
    nrm = np.asarray(support_normal, float)
    nrm /= np.linalg.norm(nrm)
    hs = pos @ nrm
    near = hs > hs.max() - lattice_constant
    return {"normal": nrm.tolist(), "n_atoms": int(near.sum()),
            **{c: _stats(eps[near, k]) for k, c in enumerate(STRAIN)},
            "volumetric": _stats(eps[near, :3].sum(1))}


def _layer_summary(layer, ok, u, eps) -> list:
    layers = []
    for L in range(layer.max() + 1 if len(layer) else 0):
        sel = (layer == L) & ok
        layers.append({"layer": L, "n_atoms": int((layer == L).sum()), "n_assigned": int(sel.sum()),
                       "mean_displacement": np.nanmean(u[sel], 0).tolist() if sel.any() else None,
                       "mean_strain": np.nanmean(eps[sel], 0).tolist()
                       if sel.any() and np.isfinite(eps[sel]).any() else None})
    return layers


def _layer_grid(site, u, ok, lat, crystal, axis, layer, grid_spacing, sigma) -> dict:
    """Strain and displacement on a crystal-frame grid, and their mean over each layer."""
    import warnings

    axes, g_eps, g_u = strain_on_grid(site[ok], u[ok], lat, spacing=grid_spacing, sigma=sigma)
    ax = int(np.argmax(np.abs(axis)))
    if np.count_nonzero(axis) != 1:
        raise AETInputError("per-layer maps need a cube axis as the layer axis (100, 010 or 001)")
    lo = (crystal @ axis)[ok].min()
    layer_of = geometry.layer_index(axes[ax], lat.lattice_constant, start=lo)
    grid_axis = 2 - ax  # grid arrays are (z, y, x)
    maps_e, maps_u = [], []
    for L in range(layer.max() + 1):
        sel = layer_of == L
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty slabs give NaN maps
            maps_e.append(np.nanmean(np.compress(sel, g_eps, axis=grid_axis), axis=grid_axis))
            maps_u.append(np.nanmean(np.compress(sel, g_u, axis=grid_axis), axis=grid_axis))
    return {"axes_x": axes[0], "axes_y": axes[1], "axes_z": axes[2], "strain": g_eps, "displacement": g_u,
            "layer_strain_maps": np.stack(maps_e), "layer_displacement_maps": np.stack(maps_u)}

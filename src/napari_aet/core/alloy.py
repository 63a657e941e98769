"""Alloys: composition, segregation from the surface inward and local chemical order.

:func:`alloy_analysis` is what :func:`~napari_aet.core.analysis.analyze_atoms` adds when the
atoms (``atom`` 1) carry two or more species (the ``species`` column, non-empty labels): the
per-atom ``shell`` column and the summary's ``alloy`` block.

- **Composition**: counts and fractions per species, overall, per one-unit-cell layer (the
  ``layer`` column) and per facet group (``100``, ``111``, ``other_surface``: surface atoms on
  neither, ``below_surface``: atoms with ``surface`` 0).
- **Shells**: nearest-neighbour bonds join atoms closer than ``1.2 x`` the median
  nearest-neighbour distance (:func:`~napari_aet.core.geometry.neighbour_cutoff`); shell 0 is
  the surface atoms, shell ``k`` the atoms ``k`` bonds from the nearest surface atom (graph
  distance). The segregation profile is the fraction of each species per shell.
- **Local chemical order**: for an atom of species A, ``P(B | A)`` is the share of its
  nearest neighbours that are B, pooled over every A atom (bonds counted from the A end), and
  ``P(unlike | A) = 1 - P(A | A)``. Warren-Cowley parameters: pairwise
  ``alpha_AB = 1 - P(B | A) / c_B`` and per species ``alpha_A = 1 - P(unlike | A) / (1 - c_A)``
  (``c``: the species' share of the atoms). Zero for a random arrangement, negative when
  unlike neighbours are preferred (ordering: L1_2 Pt3Ni gives ``alpha_Ni = -1/3``), positive
  when like ones are (clustering, phase separation). A random permutation of the same labels
  over the same bonds gives ``P(unlike | A) = (N - N_A) / (N - 1)`` exactly (in expectation),
  i.e. ``alpha_A = -1 / (N - 1)``. On a finite particle the surface atoms have fewer
  neighbours, so a species depleted at the surface (segregation) shows a small positive
  ``alpha`` even when placed at random within each shell, and ``alpha_AB`` and ``alpha_BA``
  differ slightly; read ``alpha`` beside the segregation profile.

Atoms with an empty species are kept in the bond graph (for the shells) but counted in no
composition and in no bond of the chemical order.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import geometry

__all__ = ["species_labels", "alloy_species", "composition", "nearest_neighbour_bonds", "surface_shells",
           "chemical_order", "alloy_analysis"]

FACET_GROUPS = ("100", "111", "other_surface", "below_surface")


def species_labels(table) -> np.ndarray:
    """Every row's species label as a clean string ('' where unknown).

    Parameters
    ----------
    table : DataFrame
        Atoms table; without a ``species`` column every label is ''.

    Returns
    -------
    (n,) object array of str
    """
    if "species" not in table:
        return np.full(len(table), "", dtype=object)
    out = []
    for v in table["species"]:
        text = "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v).strip()
        out.append("" if text.lower() in ("nan", "none", "<na>") else text)
    return np.array(out, dtype=object)


def alloy_species(table) -> list:
    """The species of the atoms (``atom`` 1), most abundant first (ties by name); an alloy
    has two or more.

    Parameters
    ----------
    table : DataFrame
        Atoms table.

    Returns
    -------
    list of str
        Non-empty species labels.
    """
    labels = species_labels(table)
    if "atom" in table:
        labels = labels[table["atom"].to_numpy() == 1]
    names, counts = np.unique(labels[labels != ""].astype(str), return_counts=True)
    return [str(n) for _, n in sorted(zip(-counts, names))]


def composition(labels, species) -> dict:
    """Counts and fractions of each species among ``labels`` (unknown labels left out).

    Parameters
    ----------
    labels : (n,) array of str
        Species of the atoms in question ('' unknown).
    species : list of str
        The species to count (all of them, so absent ones show as 0).

    Returns
    -------
    dict
        ``n_atoms`` (with a known species), ``counts`` and ``fractions`` (None when no atoms)
        keyed by species.
    """
    labels = np.asarray(labels, dtype=object)
    counts = {s: int((labels == s).sum()) for s in species}
    n = sum(counts.values())
    return {"n_atoms": n, "counts": counts, "fractions": {s: (c / n if n else None) for s, c in counts.items()}}


def nearest_neighbour_bonds(pos: np.ndarray) -> tuple:
    """Nearest-neighbour bonds: pairs of atoms closer than
    :func:`~napari_aet.core.geometry.neighbour_cutoff` of the median nearest-neighbour distance.

    Parameters
    ----------
    pos : (n, 3) array
        Positions, Å.

    Returns
    -------
    pairs : (m, 2) int array
        Bonded atoms ``i < j``.
    nn_distance : float or None
        The median nearest-neighbour distance, Å (None for fewer than 2 atoms).
    cutoff : float or None
        The bond length limit, Å.
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(pos, float).reshape(-1, 3)
    if len(pos) < 2:
        return np.zeros((0, 2), int), None, None
    tree = cKDTree(pos)
    dist, _ = tree.query(pos, k=2)
    nn = float(np.median(dist[:, 1]))
    cutoff = geometry.neighbour_cutoff(nn)
    pairs = tree.query_pairs(cutoff, output_type="ndarray").astype(int).reshape(-1, 2)
    return pairs, nn, cutoff


def surface_shells(n: int, pairs: np.ndarray, surface) -> np.ndarray:
    """Graph distance of every atom from the surface over the bonds: 0 on the surface, ``k``
    for atoms ``k`` bonds from the nearest surface atom.

    Parameters
    ----------
    n : int
        Number of atoms.
    pairs : (m, 2) int array
        Bonds (:func:`nearest_neighbour_bonds`).
    surface : (n,) bool array
        Surface atoms.

    Returns
    -------
    (n,) int array
        Shell index; -1 for atoms no path of bonds joins to the surface.
    """
    from scipy.sparse import coo_matrix

    pairs = np.asarray(pairs, int).reshape(-1, 2)
    adj = coo_matrix((np.ones(2 * len(pairs), np.int8), (np.r_[pairs[:, 0], pairs[:, 1]],
                                                         np.r_[pairs[:, 1], pairs[:, 0]])), shape=(n, n)).tocsr()
    shell = np.full(n, -1, dtype=int)
    frontier = np.asarray(surface, bool).copy()
    shell[frontier] = 0
    k = 0
    while frontier.any():
        k += 1
        reached = (adj @ frontier.astype(np.int32)) > 0
        frontier = reached & (shell < 0)
        shell[frontier] = k
    return shell


def chemical_order(labels, pairs: np.ndarray, species) -> dict:
    """Unlike-neighbour fractions and Warren-Cowley parameters (formulas in the module
    docstring), measured and for a random arrangement of the same composition.

    Parameters
    ----------
    labels : (n,) array of str
        Species of every atom ('' unknown: its bonds are left out).
    pairs : (m, 2) int array
        Nearest-neighbour bonds.
    species : list of str
        Species to report.

    Returns
    -------
    dict
        ``n_bonds`` (between atoms of known species); ``species``: per species
        ``unlike_fraction``, ``unlike_fraction_random``, ``warren_cowley``,
        ``warren_cowley_random`` and ``mean_neighbours``; ``warren_cowley_pairs``:
        ``{A: {B: alpha_AB}}``. Values are None where undefined (no atoms or no bonds).
    """
    labels = np.asarray(labels, dtype=object)
    pairs = np.asarray(pairs, int).reshape(-1, 2)
    known = labels != ""
    pairs = pairs[known[pairs[:, 0]] & known[pairs[:, 1]]] if len(pairs) else pairs
    index = {s: k for k, s in enumerate(species)}
    code = np.array([index.get(v, -1) for v in labels], int)
    ends = np.r_[code[pairs[:, 0]], code[pairs[:, 1]]], np.r_[code[pairs[:, 1]], code[pairs[:, 0]]]
    ok = (ends[0] >= 0) & (ends[1] >= 0)
    m = len(species)
    bonds = np.zeros((m, m))
    np.add.at(bonds, (ends[0][ok], ends[1][ok]), 1)  # bonds[A, B]: neighbours B seen from A atoms
    n_of = np.array([(code == k).sum() for k in range(m)], float)
    n = n_of.sum()
    conc = n_of / n if n else np.full(m, np.nan)
    per, pair_alpha = {}, {}
    for a, name in enumerate(species):
        seen = bonds[a].sum()
        p = bonds[a] / seen if seen else np.full(m, np.nan)
        unlike = 1.0 - p[a]
        random_unlike = (n - n_of[a]) / (n - 1) if n > 1 else np.nan
        other = 1.0 - conc[a]
        per[name] = {"unlike_fraction": _num(unlike), "unlike_fraction_random": _num(random_unlike),
                     "warren_cowley": _num(1.0 - unlike / other) if other > 0 else None,
                     "warren_cowley_random": _num(1.0 - random_unlike / other) if other > 0 else None,
                     "mean_neighbours": _num(seen / n_of[a]) if n_of[a] else None}
        pair_alpha[name] = {b: (_num(1.0 - p[k] / conc[k]) if conc[k] > 0 else None) for k, b in enumerate(species)}
    return {"n_bonds": int(ok.sum() // 2), "species": per, "warren_cowley_pairs": pair_alpha}


def _num(value) -> Optional[float]:
    value = float(value)
    return value if np.isfinite(value) else None


def _groups(labels, keys, species, name: str) -> list:
    """Composition of the atoms of each value of ``keys`` (None keys left out), in order."""
    keys = np.asarray(keys, dtype=object)
    present = sorted({k for k in keys if k is not None})
    return [{name: k, **composition(labels[keys == k], species)} for k in present]


def _facet_keys(table) -> np.ndarray:
    """Each atom's facet group (:data:`FACET_GROUPS`)."""
    n = len(table)
    surface = table["surface"].to_numpy() == 1 if "surface" in table else np.zeros(n, bool)
    facet = (table["facet"].astype(object).where(table["facet"].notna(), "").astype(str).to_numpy()
             if "facet" in table else np.full(n, "", dtype=object))
    keys = np.where(facet == "100", "100", np.where(facet == "111", "111", "other_surface")).astype(object)
    return np.where(surface, keys, "below_surface").astype(object)


def _segregation(labels, shell, species, overall: dict) -> dict:
    """Composition per shell, of the surface (shell 0) and below it, and each species'
    surface enrichment ``c_surface / c_overall - 1`` (the simulator's ``surface_enrichment``)."""
    shells = _groups(labels, np.where(shell >= 0, shell, None), species, "shell")
    surface = composition(labels[shell == 0], species)
    below = composition(labels[shell > 0], species)
    enrichment = {}
    for s in species:
        f_all, f_surf = overall["fractions"][s], surface["fractions"][s]
        enrichment[s] = f_surf / f_all - 1.0 if f_all and f_surf is not None else None
    return {"shells": shells, "surface": surface, "below_surface": below, "surface_enrichment": enrichment,
            "n_unreached": int((shell < 0).sum())}


def _summary_line(species, overall: dict, seg: dict, order: dict) -> str:
    """One line a person reads: each species but the most abundant, its share overall, on
    the surface and below it, and its unlike neighbours against a random arrangement."""
    parts = []
    for s in species[1:] or species:
        def pct(block):
            f = block["fractions"][s]
            return "n/a" if f is None else f"{100 * f:.1f}%"

        o = order["species"][s]
        unlike = "n/a" if o["unlike_fraction"] is None else f"{o['unlike_fraction']:.2f}"
        rnd = "n/a" if o["unlike_fraction_random"] is None else f"{o['unlike_fraction_random']:.2f}"
        wc = "" if o["warren_cowley"] is None else f" (Warren-Cowley α {o['warren_cowley']:+.2f})"
        parts.append(f"{s} {pct(overall)}: surface {pct(seg['surface'])}, below it {pct(seg['below_surface'])}; "
                     f"unlike neighbours {unlike} vs {rnd} random{wc}")
    return " | ".join(parts)


def alloy_analysis(table) -> tuple:
    """Composition, segregation and chemical order of an analysed atoms table.

    Parameters
    ----------
    table : DataFrame
        Atoms table with ``species`` and, from the analysis, ``surface``, ``facet`` and
        ``layer`` (those missing give no per-facet / per-layer composition; without
        ``surface`` no atom is on the surface and every shell is -1).

    Returns
    -------
    shell : (n,) int array or None
        Every row's shell (0 surface, ``k`` bonds inward; -1 for non-atoms and atoms joined
        to no surface atom); None when the atoms hold fewer than two species.
    summary : dict or None
        ``species`` (most abundant first), ``composition``, ``layers``, ``facets``,
        ``segregation``, ``chemical_order``, ``nearest_neighbour_distance`` and
        ``bond_cutoff`` (Å), ``text`` (one line); None when not an alloy.
    """
    species = alloy_species(table)
    if len(species) < 2:
        return None, None
    is_atom = table["atom"].to_numpy() == 1 if "atom" in table else np.ones(len(table), bool)
    atoms = table[is_atom]
    labels = species_labels(atoms)
    pairs, nn, cutoff = nearest_neighbour_bonds(atoms[["x", "y", "z"]].to_numpy(float))
    surface = atoms["surface"].to_numpy() == 1 if "surface" in atoms else np.zeros(len(atoms), bool)
    shell_atoms = surface_shells(len(atoms), pairs, surface)
    overall = composition(labels, species)
    seg = _segregation(labels, shell_atoms, species, overall)
    order = chemical_order(labels, pairs, species)
    layers = []
    if "layer" in atoms:
        lay = atoms["layer"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        layers = _groups(labels, np.array([int(v) if np.isfinite(v) else None for v in lay], dtype=object),
                         species, "layer")
    facet_keys = _facet_keys(atoms)
    facets = {g: composition(labels[facet_keys == g], species) for g in FACET_GROUPS}
    shell = np.full(len(table), -1, dtype=int)
    shell[is_atom] = shell_atoms
    summary = {"species": species, "composition": overall, "layers": layers, "facets": facets,
               "segregation": seg, "chemical_order": order, "nearest_neighbour_distance": nn,
               "bond_cutoff": cutoff, "n_unknown_species": int((labels == "").sum()),
               "text": _summary_line(species, overall, seg, order)}
    return shell, summary

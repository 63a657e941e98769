"""Alloys: composition, segregation by shell from the surface and chemical order, scored
against the simulator's ground truth (random substitution with a known surface depletion)
and against ordered arrangements built on the same sites."""

import numpy as np
import pytest

from napari_aet.core.analysis import analyze_atoms
from napari_aet.core.simulate import make_particle, particle_table, reference_config


def _alloy(enrichment: float, seed: int = 3):
    cfg = reference_config(seed=seed, alloy={"Ni": 0.3}, surface_enrichment=enrichment, size=3.0, n_voxels=112)
    particle = make_particle(cfg)
    return particle, particle_table(particle, cfg)


@pytest.fixture(scope="module")
def depleted():
    """Ni 30%, its surface share half the bulk's (surface_enrichment -0.5), analysed."""
    particle, table = _alloy(-0.5)
    return (particle, *analyze_atoms(table))


@pytest.fixture(scope="module")
def random_alloy():
    """Ni 30% on random sites, no surface depletion: ``(particle, table)``, shared by the chemical
    order tests (built once; each test copies the table before changing it)."""
    return _alloy(0.0)


def _site_indices(particle) -> np.ndarray:
    """Each atom's f.c.c. site in units of half the lattice constant, crystal frame."""
    crystal = (particle.positions - particle.origin) @ particle.rotation
    idx = crystal / (particle.lattice_constant / 2)
    assert np.allclose(idx, np.rint(idx), atol=1e-6)  # no strain, no relaxation: exact sites
    return np.rint(idx).astype(int)


def test_composition_overall_per_layer_and_per_facet_is_exact(depleted):
    particle, table, summary = depleted
    alloy = summary["alloy"]
    n_ni, n = int((particle.species == "Ni").sum()), len(particle.species)
    assert alloy["species"] == ["Pt", "Ni"]
    assert alloy["composition"]["counts"] == {"Pt": n - n_ni, "Ni": n_ni}
    assert alloy["composition"]["fractions"]["Ni"] == pytest.approx(n_ni / n)
    assert alloy["composition"]["fractions"]["Ni"] == pytest.approx(0.3, abs=0.005)
    # per layer: the counts add up and match the table's own layer column
    assert sum(entry["n_atoms"] for entry in alloy["layers"]) == n
    for entry in alloy["layers"]:
        sel = (table["layer"] == entry["layer"]).to_numpy()
        assert entry["counts"]["Ni"] == int((table.loc[sel, "species"] == "Ni").sum())
    # per facet group: every atom in exactly one, the surface ones depleted
    facets = alloy["facets"]
    assert set(facets) == {"100", "111", "other_surface", "below_surface"}
    assert sum(f["n_atoms"] for f in facets.values()) == n
    assert facets["below_surface"]["n_atoms"] == int((~particle.surface).sum())
    assert facets["111"]["n_atoms"] > 0 and facets["111"]["fractions"]["Ni"] < 0.22
    assert "Ni 30.0%" in alloy["text"] and "surface 15" in alloy["text"] and "random" in alloy["text"]


def test_segregation_profile_shows_the_surface_depletion(depleted):
    particle, table, summary = depleted
    seg = summary["alloy"]["segregation"]
    shell = table["shell"].to_numpy()
    assert shell.dtype.kind == "i" and (shell >= 0).all()
    np.testing.assert_array_equal(shell == 0, particle.surface)  # shell 0: the true surface
    ni = particle.species == "Ni"
    truth_surface = ni[particle.surface].mean()
    truth_below = ni[~particle.surface].mean()
    assert truth_surface == pytest.approx(0.15, abs=0.01)
    shells = {entry["shell"]: entry for entry in seg["shells"]}
    assert shells[0]["fractions"]["Ni"] == pytest.approx(truth_surface)
    assert seg["below_surface"]["fractions"]["Ni"] == pytest.approx(truth_below)
    assert truth_below > 0.35
    # shells 1 and 2 (most of the interior) both carry the bulk's share, well above the surface's
    for k in (1, 2):
        assert shells[k]["fractions"]["Ni"] == pytest.approx(truth_below, abs=0.06)
        assert shells[k]["fractions"]["Ni"] > 2 * shells[0]["fractions"]["Ni"]
    # shell k atoms are k bonds from the surface: each has a neighbour in shell k - 1 and none
    # in a shell below it
    from napari_aet.core.alloy import nearest_neighbour_bonds

    pairs, _, _ = nearest_neighbour_bonds(table[["x", "y", "z"]].to_numpy(float))
    assert (np.abs(shell[pairs[:, 0]] - shell[pairs[:, 1]]) <= 1).all()
    lower = np.full(len(shell), 10**6)
    np.minimum.at(lower, pairs[:, 0], shell[pairs[:, 1]])
    np.minimum.at(lower, pairs[:, 1], shell[pairs[:, 0]])
    np.testing.assert_array_equal(lower[shell > 0], shell[shell > 0] - 1)
    assert seg["surface_enrichment"]["Ni"] == pytest.approx(-0.5, abs=0.02)
    assert len(shells) >= 4 and seg["n_unreached"] == 0


def test_shells_are_graph_distances_from_the_surface():
    from napari_aet.core.alloy import nearest_neighbour_bonds, surface_shells

    # a simple-cubic chain of 7 atoms, 2.5 Å apart, the two ends on the surface
    pos = np.c_[np.arange(7) * 2.5, np.zeros(7), np.zeros(7)]
    pairs, nn, cutoff = nearest_neighbour_bonds(pos)
    assert nn == pytest.approx(2.5) and cutoff == pytest.approx(3.0) and len(pairs) == 6
    surface = np.zeros(7, bool)
    surface[[0, 6]] = True
    np.testing.assert_array_equal(surface_shells(7, pairs, surface), [0, 1, 2, 3, 2, 1, 0])
    # an atom no bond joins to the surface is -1
    pos2 = np.vstack([pos, [[100.0, 0, 0]]])
    pairs2, _, _ = nearest_neighbour_bonds(pos2)
    assert surface_shells(8, pairs2, np.r_[surface, False])[-1] == -1


def test_random_arrangement_has_no_chemical_order(random_alloy):
    particle, table = random_alloy
    _, summary = analyze_atoms(table.copy())
    order = summary["alloy"]["chemical_order"]
    for s in ("Ni", "Pt"):
        entry = order["species"][s]
        assert abs(entry["warren_cowley"]) < 0.05, (s, entry)
        assert entry["unlike_fraction"] == pytest.approx(entry["unlike_fraction_random"], abs=0.03)
        assert abs(entry["warren_cowley_random"]) < 0.01  # -1 / (N - 1)
        assert 9 < entry["mean_neighbours"] < 12  # f.c.c. bulk 12, fewer on the surface
    assert abs(order["warren_cowley_pairs"]["Ni"]["Pt"]) < 0.05
    n = len(particle.species)
    n_ni = int((particle.species == "Ni").sum())
    assert order["species"]["Ni"]["unlike_fraction_random"] == pytest.approx((n - n_ni) / (n - 1))


def _reanalysed(table, species):
    t = table.copy()
    t["species"] = species
    return analyze_atoms(t)[1]["alloy"]


def test_ordered_arrangements_give_clearly_nonzero_warren_cowley(random_alloy):
    particle, table = random_alloy
    idx = _site_indices(particle)
    # L1_2 (Pt3Ni): Ni on the cube corners (all three half-indices even), Pt on the face centres;
    # in the bulk a Ni atom has 12 Pt neighbours: P(unlike | Ni) = 1, alpha = 1 - 1 / 0.75 = -1/3
    corner = (idx % 2 == 0).all(axis=1)
    l12 = _reanalysed(table, np.where(corner, "Ni", "Pt"))
    ni = l12["chemical_order"]["species"]["Ni"]
    assert l12["composition"]["fractions"]["Ni"] == pytest.approx(0.25, abs=0.03)
    assert ni["unlike_fraction"] == pytest.approx(1.0)
    assert ni["warren_cowley"] == pytest.approx(1 - 1 / (1 - l12["composition"]["fractions"]["Ni"]))
    assert ni["warren_cowley"] < -0.25
    assert l12["chemical_order"]["warren_cowley_pairs"]["Ni"]["Ni"] == pytest.approx(1.0)  # no Ni-Ni bonds
    # layered L1_0 (alternate (001) planes): 8 of 12 bulk neighbours unlike, alpha near -1/3
    l10 = _reanalysed(table, np.where(idx[:, 2] % 2 == 0, "Ni", "Pt"))
    for s in ("Ni", "Pt"):
        assert l10["chemical_order"]["species"][s]["warren_cowley"] < -0.2
    # phase separation (a Ni half and a Pt half): like neighbours preferred, alpha > 0
    halves = _reanalysed(table, np.where(idx[:, 0] > np.median(idx[:, 0]), "Ni", "Pt"))
    assert halves["chemical_order"]["species"]["Ni"]["warren_cowley"] > 0.5
    assert "Warren-Cowley" in halves["text"]


def test_single_species_has_no_alloy_block_or_shell_column():
    cfg = reference_config(seed=3, size=2.0, n_voxels=112)
    table = particle_table(make_particle(cfg), cfg)
    df, summary = analyze_atoms(table)
    assert "alloy" not in summary and "shell" not in df
    t = table.copy()
    t["species"] = ""  # unknown species: not an alloy either
    t["shell"] = 0  # an earlier analysis's shells go
    df, summary = analyze_atoms(t)
    assert "alloy" not in summary and "shell" not in df


def test_unknown_species_and_non_atoms_are_left_out(depleted):
    particle, table, _ = depleted
    import pandas as pd

    t = table.copy()
    t.loc[:9, "species"] = ""  # ten atoms of unknown species
    extra = pd.DataFrame({"x": [200.0], "y": [0.0], "z": [0.0], "atom": [0], "species": ["C"]})
    t = pd.concat([t, extra], ignore_index=True)
    df, summary = analyze_atoms(t)
    alloy = summary["alloy"]
    assert alloy["species"] == ["Pt", "Ni"] and alloy["n_unknown_species"] == 10
    assert alloy["composition"]["n_atoms"] == len(particle.species) - 10
    assert df["shell"].iloc[-1] == -1  # the non-atom has no shell


def test_alloy_summary_and_shell_survive_the_atoms_files(depleted, tmp_path):
    from napari_aet.core.io import read_atoms, write_atoms

    _, table, summary = depleted
    write_atoms(tmp_path / "atoms.csv", table, metadata={"analysis": summary})
    back, side = read_atoms(tmp_path / "atoms.csv")
    np.testing.assert_array_equal(back["shell"].to_numpy(), table["shell"].to_numpy())
    assert side["analysis"]["alloy"]["segregation"]["shells"][0]["fractions"]["Ni"] == pytest.approx(
        summary["alloy"]["segregation"]["shells"][0]["fractions"]["Ni"])


def test_species_figure_is_written_for_an_alloy_only(depleted, tmp_path, monkeypatch):
    from PIL import Image

    from napari_aet.core import figures as fg

    _, table, summary = depleted
    paths = fg.write_figures(tmp_path / "alloy", table, summary, workers=1)
    names = {p.split("/")[-1] for p in paths}
    assert {"a_species.png", "a_species.svg", "a_particle_on_support.png"} <= names
    img = np.asarray(Image.open(tmp_path / "alloy" / "a_species.png").convert("RGB")).astype(int)

    def share(colour):
        rgb = np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)])
        return (np.abs(img - rgb).max(-1) < 60).mean()

    assert share(fg.species_colour("Ni")) > 0.01 and share(fg.species_colour("Pt")) > 0.05
    assert fg.species_colour("Ni") == fg.SPECIES_COLOURS["Ni"] != fg.species_colour("Pt")
    assert fg.species_colour("X1") == fg.species_colour("X1") in fg.SPECIES_FALLBACK  # fixed for any label
    # one species: no species figure, and asking for it says why
    single = table.assign(species="Pt")
    paths = fg.write_figures(tmp_path / "single", single, summary, names=["a_particle_on_support"], workers=1)
    assert not any("a_species" in p for p in paths)
    # the default set for one species: which figures write_figures picks is what counts here; the
    # reference figures besides (a) read no species and were rendered for this table's atoms above,
    # so only a species figure, were one picked, is rendered again (that saves ~8 s of rendering)
    picked, real_render = [], fg.render

    def species_only_render(jobs, out_dir, **kwargs):
        picked.extend(j[0] for j in jobs)
        return real_render([j for j in jobs if "species" in j[0]], out_dir, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fg, "render", species_only_render)
        paths = fg.write_figures(tmp_path / "single_all", single, summary, workers=1)
    assert {"a_particle_on_support", "bcd_facets"} <= set(picked) and "a_species" not in picked
    assert not any("a_species" in p for p in paths)
    from napari_aet.core.errors import AETInputError

    with pytest.raises(AETInputError, match="a_species"):
        fg.write_figures(tmp_path / "single", single, summary, names=["a_species"], workers=1)

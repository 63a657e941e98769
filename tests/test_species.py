"""Species through the chain (issue 24): light atoms found, species decided from the projections,
a second population reported when no species are given. Figures of merit against the
simulator's truth (the project's Gaussian atoms; abTEM and the published Pt-Ni particles are in
BENCHMARKS.md)."""

import numpy as np
import pytest

from napari_aet.core.species import assign_species, second_population, tomogram_species, z_contrast


def test_z_contrast_follows_z_to_the_1_7():
    ni, pt = z_contrast(["Ni", "Pt"])
    assert pt == 1.0
    assert ni == pytest.approx((28 / 78) ** 1.7, rel=1e-6)  # a sixth of Pt
    assert z_contrast(["light", "heavy"]) is None


def test_mixture_separates_noise_light_and_heavy_atoms_with_calibrated_confidence():
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(300, int), np.ones(200, int), np.full(500, 2)]
    centre = np.array([0.0, 0.175, 1.0])[truth]
    err = np.full(len(truth), 0.03)
    height = centre + rng.normal(0, 0.03, len(truth))
    labels, conf, fit = assign_species(height, err, [0.2, 0.9])
    assert np.mean(labels == truth) > 0.97
    assert fit["centres"][1] == pytest.approx(0.175, abs=0.01)
    assert fit["centres"][2] == pytest.approx(1.0, abs=0.01)
    # species confidence: light and heavy are 27 sigma apart, so every atom is sure
    assert np.all(conf[truth > 0] > 0.99)
    # with overlapping classes the confidence tracks how often the call is right
    height = np.r_[rng.normal(0.4, 0.1, 2000), rng.normal(0.6, 0.1, 2000)]
    truth = np.r_[np.ones(2000, int), np.full(2000, 2)]
    labels, conf, _ = assign_species(height, np.full(4000, 0.1), [0.4, 0.6], fixed_centres=True)
    sure = conf > 0.8
    assert np.mean(labels[sure] == truth[sure]) > 0.8
    assert np.mean(labels[~sure] == truth[~sure]) < np.mean(labels[sure] == truth[sure])


def test_second_population_is_found_only_when_it_is_there():
    rng = np.random.default_rng(1)
    heavy = rng.normal(1.0, 0.03, 500)
    light = rng.normal(0.18, 0.02, 150)
    assert second_population(np.r_[heavy, light], np.full(650, 0.01))["n_faint"] == pytest.approx(150, abs=3)
    assert second_population(heavy, np.full(500, 0.01)) is None
    noise = rng.normal(0.0, 0.01, 150)  # peaks the data does not want are noise, not a population
    assert second_population(np.r_[heavy, noise], np.full(650, 0.01)) is None


def test_tomogram_species_gives_faint_peaks_the_light_species():
    labels = tomogram_species([0.0005, 0.05, 0.12, 0.42, 0.38], [False, False, False, True, True], 0.41,
                              ["Ni", "Pt"])
    assert labels.tolist() == [-1, 0, 0, 1, 1]


@pytest.fixture(scope="module")
def small_alloy():
    from napari_aet.core.confidence import split_free_projections
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import reference_config, simulate

    sim = simulate(reference_config(seed=3, alloy={"Ni": 0.3}, size=2.2, n_voxels=80, dose=1e5))
    ts = sim.tilt_series
    free = split_free_projections(ts.angles, 0.1)
    rec = reconstruct(ts.data[~free], np.asarray(ts.angles)[~free], ts.pixel_size, device="cpu").volume
    return sim, free, rec


def _score(table, sim):
    from napari_aet.core.metrics import match_atoms

    atoms = table[table["atom"] == 1]
    truth, kind = sim.particle.positions, np.asarray(sim.particle.species).astype(str)
    m = match_atoms(atoms[["x", "y", "z"]].to_numpy(), truth, 1.0)
    named = atoms["species"].astype(str).to_numpy()[m.found_index]
    ni = kind[m.true_index] == "Ni"
    return m, ni.sum() / (kind == "Ni").sum(), np.mean(named == kind[m.true_index])


def test_species_given_finds_every_light_atom_and_names_it(small_alloy):
    from napari_aet.core.io import Volume
    from napari_aet.core.pipeline import trace_volume

    sim, free, rec = small_alloy
    table, meta = trace_volume(Volume(rec, sim.tilt_series.pixel_size), sim.tilt_series, species=("Ni", "Pt"), n_classes=3,
                               free=free, device="cpu")
    m, ni_recall, accuracy = _score(table, sim)
    assert m.recall >= 0.98 and m.precision >= 0.98
    assert ni_recall >= 0.95
    assert accuracy >= 0.97
    assert m.rmsd_pm < 10
    assert meta["species"]["counts"]["Ni"] == pytest.approx((np.asarray(sim.particle.species) == "Ni").sum(), abs=3)
    sure = table.loc[table["atom"] == 1, "species_confidence"]
    assert sure.between(0, 1).all() and sure.median() > 0.9


def test_without_species_a_faint_population_is_kept_and_reported(small_alloy):
    from napari_aet.core.io import Volume
    from napari_aet.core.pipeline import trace_volume

    sim, free, rec = small_alloy
    table, meta = trace_volume(Volume(rec, sim.tilt_series.pixel_size), sim.tilt_series, free=free, device="cpu")
    m, ni_recall, _ = _score(table, sim)
    assert "--species" in meta["second_population"]["hint"]
    assert ni_recall >= 0.95 and m.precision >= 0.98
    light = table.loc[table["atom"] == 1, "species"].eq("light").sum()
    assert light == pytest.approx((np.asarray(sim.particle.species) == "Ni").sum(), abs=3)


def test_a_support_film_under_the_particle_is_not_a_second_population():
    rng = np.random.default_rng(2)
    g = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    fcc = np.concatenate([g, g + [0.5, 0.5, 0], g + [0.5, 0, 0.5], g + [0, 0.5, 0.5]]) * 3.92
    film = np.c_[rng.uniform(0, 30, (300, 2)), rng.uniform(-8, -3, 300)]  # below the crystal
    err = np.full(len(fcc) + 300, 0.01)
    heavy = rng.normal(1.0, 0.03, len(fcc))
    assert second_population(np.r_[heavy, rng.normal(0.07, 0.01, 300)], err, np.r_[fcc, film]) is None
    # the same heights on a share of the crystal's own sites are an alloy's light atoms
    light = rng.random(len(fcc)) < 0.3
    mixed = np.where(light, rng.normal(0.18, 0.02, len(fcc)), heavy)
    found = second_population(mixed, err[:len(fcc)], fcc)
    assert found["n_faint"] == pytest.approx(light.sum(), rel=0.05)


def test_joint_heights_tell_light_atoms_from_empty_sites(small_alloy):
    from scipy.spatial import cKDTree

    from napari_aet.core.species import joint_heights, lattice_site_candidates

    sim, free, _ = small_alloy
    ts = sim.tilt_series
    truth, kind = sim.particle.positions, np.asarray(sim.particle.species).astype(str)
    pt = kind == "Pt"
    sites = lattice_site_candidates(truth[pt], np.ones(int(pt.sum()), bool))
    empty = sites[cKDTree(truth).query(sites)[0] > 1.2]
    assert len(empty) >= 20
    # the heavy atoms known, every Ni atom and empty site a candidate starting at half a Ni atom
    every = np.r_[truth, empty]
    light = (28 / 78) ** 1.7
    start = np.r_[np.where(pt, 1.0, 0.5 * light), np.full(len(empty), 0.5 * light)]
    height, moved = joint_heights(every, start, 5.0, ts.data[~free], np.asarray(ts.angles)[~free], ts.pixel_size,
                                  iterations=100)
    h_ni, h_empty = height[:len(truth)][~pt], height[len(truth):]
    assert np.median(h_ni) == pytest.approx(light, abs=0.03)
    assert abs(np.median(h_empty)) < 0.03
    assert np.mean(h_ni > light / 2) >= 0.98 and np.mean(h_empty < light / 2) >= 0.98
    assert np.median(height[:len(truth)][pt]) == pytest.approx(1.0, abs=0.05)
    assert np.sqrt(np.mean(np.sum((moved[:len(truth)] - truth) ** 2, 1))) < 0.1  # Å: true atoms stay put


def test_candidates_brought_together_by_the_joint_fit_leave_the_brighter_one():
    from napari_aet.core.species import _apart

    pos = np.array([[0.0, 0, 0], [0.4, 0, 0], [2.8, 0, 0], [3.5, 0, 0]])
    keep = _apart(pos, np.array([0.2, 1.0, 0.15, 0.17]), 2.0)
    assert keep.tolist() == [False, True, False, True]

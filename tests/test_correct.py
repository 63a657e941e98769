"""Hand corrections of a refined atom model (core/correct.py) against simulated ground truth."""

import numpy as np
import pytest

from napari_aet.core.errors import AETInputError


@pytest.fixture(scope="module")
def noisy_case():
    """A small Pt particle (135 atoms, 56², ±60° in 6° steps, Poisson noise) whose model is its
    truth with the simulator's own height and B-factor, two projections held out."""
    from napari_aet.core.confidence import split_free_projections
    from napari_aet.core.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(size=1.5, n_voxels=56, tilt_range=60, tilt_step=6, seed=93, dose=5e5))
    free = split_free_projections(sim.tilt_series.angles, 0.1)
    assert 1 <= free.sum() <= 3
    return sim, free


def test_refine_near_brings_a_moved_atom_back_and_r_drops(noisy_case):
    from napari_aet.core.correct import model_r_factors, refine_near

    sim, free = noisy_case
    ts, truth = sim.tilt_series, sim.particle.positions
    heights, b_factors = {0: 1.0}, {0: sim.config.b_factor}
    classes = np.zeros(len(truth), int)
    r_true = model_r_factors(truth, classes, heights, b_factors, ts.data, ts.angles, ts.pixel_size, free)
    i = int(np.argmin(np.linalg.norm(truth - truth.mean(0), axis=1)))  # an interior atom: 12 neighbours
    direction = np.array([0.3, -0.5, 0.8])
    edited = truth.copy()
    edited[i] += 0.8 * direction / np.linalg.norm(direction)
    res = refine_near(edited, classes, [i], ts.data, ts.angles, ts.pixel_size, heights, b_factors, free=free)
    assert np.linalg.norm(res.positions[i] - truth[i]) < 0.1
    assert i in res.moved and 1 < len(res.moved) < 20  # the edited atom and its neighbours only
    held = np.setdiff1d(np.arange(len(truth)), res.moved)
    np.testing.assert_array_equal(res.positions[held], edited[held])  # every other atom held
    assert np.abs(res.positions[res.moved] - truth[res.moved]).max() < 0.1  # neighbours stay put
    assert res.r_work < res.r_work_before - 0.005 and res.r_free < res.r_free_before - 0.005
    assert res.r_work == pytest.approx(r_true[0], rel=0.01) and res.r_free == pytest.approx(r_true[1], rel=0.01)
    assert set(res.summary()) >= {"r_work", "r_free", "r_work_before", "r_free_before", "n_refitted"}


def test_an_added_atom_is_fitted_into_a_missing_one(noisy_case):
    """An atom missing from the model, added by hand 0.6 Å off, lands on the truth (no R-free
    without held-out projections)."""
    from napari_aet.core.correct import refine_near

    sim, _ = noisy_case
    ts, truth = sim.tilt_series, sim.particle.positions
    k = int(np.argmax(truth[:, 2]))  # a surface atom, the topmost
    model = np.vstack([np.delete(truth, k, axis=0), truth[k] + [0.0, 0.6, 0.0]])
    res = refine_near(model, np.zeros(len(model), int), [len(model) - 1], ts.data, ts.angles, ts.pixel_size,
                      {0: 1.0}, {0: sim.config.b_factor})
    assert np.linalg.norm(res.positions[-1] - truth[k]) < 0.1
    assert res.r_free is None and res.r_free_before is None and res.r_work < res.r_work_before


def test_model_records_read_back_from_json():
    import json

    from napari_aet.core.correct import atom_classes, free_projections, model_parameters

    meta = json.loads(json.dumps({"refinement": {"heights": {0: 0.9, 1: 0.3}, "b_factors_A2": {0: 5.0, 1: 6.0}},
                                  "validation": {"free_projections": [2, 7]}}))  # keys become strings
    assert model_parameters(meta) == ({0: 0.9, 1: 0.3}, {0: 5.0, 1: 6.0})
    assert model_parameters({}) is None and model_parameters({"refinement": {"r_factor_after": 0.1}}) is None
    with pytest.raises(AETInputError, match="positive"):
        model_parameters({"refinement": {"heights": {"0": -1.0}, "b_factors_A2": {"0": 5.0}}})
    np.testing.assert_array_equal(np.flatnonzero(free_projections(meta, 10)), [2, 7])
    assert not free_projections({}, 4).any()
    with pytest.raises(AETInputError, match="tilt series has 5"):
        free_projections(meta, 5)
    # classes as the refinement numbered them; an added atom of no traced species takes the commonest
    species = np.array(["Pt", "Pd", "Pt", np.nan, "Au"], dtype=object)
    np.testing.assert_array_equal(atom_classes(species, edited=[0, 0, 0, 1, 1]), [1, 0, 1, 1, 1])
    np.testing.assert_array_equal(atom_classes(["1", "0", "1"]), [1, 0, 1])


def test_analysis_leaves_out_atoms_below_a_presence(small_sim):
    from napari_aet.core.analysis import analyze_atoms
    from napari_aet.core.correct import analyze_confident

    table = small_sim.truth_table()
    table = table[table["atom"] == 1].reset_index(drop=True)
    n = len(table)
    presence = np.full(n, 0.99)
    presence[:5] = 0.2
    table["presence"] = presence
    out, summary = analyze_confident(table, min_presence=0.5)
    assert len(out) == n and (out["atom"] == 1).all()  # every row kept, as given
    assert summary["n_atoms"] == n - 5
    assert summary["settings"]["min_presence"] == 0.5 and summary["settings"]["n_left_out_low_presence"] == 5
    assert (out["fcc"].to_numpy()[:5] == 0).all() and np.isnan(out["exx"].to_numpy(float)[:5]).all()
    everyone, summary0 = analyze_confident(table)
    plain, _ = analyze_atoms(table)
    assert summary0["n_atoms"] == n and summary0["settings"]["n_left_out_low_presence"] == 0
    np.testing.assert_array_equal(everyone["fcc"].to_numpy(), plain["fcc"].to_numpy())
    with pytest.raises(AETInputError, match="no presence column"):
        analyze_confident(table.drop(columns=["presence"]), min_presence=0.5)


def test_atoms_layers_carry_the_confidence_and_colour_by_it():
    """The confidence columns travel as a Points layer's features and back, and colour the atoms
    red (least certain) to blue; an unscored atom (added by hand) is drawn as the least certain."""
    import pandas as pd

    from napari_aet._layers import CONFIDENCE, atom_colours, atoms_layer, colour_options, points_to_table
    from napari_aet.core.confidence import CONFIDENCE_COLUMNS

    assert CONFIDENCE == CONFIDENCE_COLUMNS
    table = pd.DataFrame({"x": [0.0, 2.8, 5.6], "y": 0.0, "z": 0.0, "atom": 1, "sigma_x_pm": [1.0, 2.0, np.nan],
                          "sigma_y_pm": 1.0, "sigma_z_pm": [3.0, 4.0, 9.0], "presence": [0.9, 0.1, np.nan]})
    data, kwargs, _ = atoms_layer(table)
    assert set(CONFIDENCE) <= set(kwargs["features"]) and set(CONFIDENCE) <= set(colour_options(kwargs["features"]))
    spec = atom_colours(kwargs["features"], "presence")
    assert spec["face_colormap"] == "RdYlBu" and spec["face_contrast_limits"] == (0.0, 1.0)
    label, shown = spec["display_feature"]
    np.testing.assert_allclose(shown, [0.9, 0.1, 0.0])
    spec = atom_colours(kwargs["features"], "sigma_x_pm")
    assert spec["face_colormap"] == "RdYlBu_r" and spec["face_contrast_limits"] == (0.0, 2.0)
    np.testing.assert_allclose(spec["display_feature"][1], [1.0, 2.0, 2.0])
    shown_feats = kwargs["features"].assign(**{label: shown, spec["display_feature"][0]: spec["display_feature"][1]})
    back = points_to_table(data, {"features": shown_feats})  # display-only columns never exported
    assert list(back.columns) == list(table.columns)

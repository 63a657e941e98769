"""R-free and per-atom confidence (issue 23) against simulated ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from napari_aet.core import confidence as C
from napari_aet.core.errors import AETInputError


def test_free_projections_are_spread_reproducible_and_never_the_ends():
    tilts = np.linspace(-65, 65, 21)
    free = C.split_free_projections(tilts, 0.1)
    assert free.sum() == 2 and not free[0] and not free[-1]
    assert np.array_equal(free, C.split_free_projections(tilts, 0.1))  # seeded
    picked = np.sort(tilts[free])
    assert picked[0] < 0 < picked[1]  # one on each side of the tilt range
    assert C.split_free_projections(tilts[::-1], 0.1).sum() == 2
    assert not C.split_free_projections(tilts, 0.0).any()
    assert not C.split_free_projections(np.linspace(-60, 60, 9), 0.1).any()  # too few to spare one
    euler = np.stack([np.zeros(46), np.linspace(-60, 60, 46), np.linspace(0, 30, 46)], 1)
    assert C.split_free_projections(euler, 0.1).sum() == 5
    with pytest.raises(AETInputError, match="R-free"):
        C.split_free_projections(tilts, 0.7)


def test_r_factor_of_the_true_model_is_zero_and_grows_with_a_wrong_one(small_sim):
    ts, p = small_sim.tilt_series, small_sim.particle
    cls = np.zeros(len(p.positions), int)
    heights, bs = {0: 1.0}, {0: small_sim.config.b_factor}
    model = C.atom_model_projections(p.positions, cls, heights, bs, ts.angles, ts.data.shape[1:], ts.pixel_size)
    assert C.r_factor(model, ts.data) < 0.01
    shaken = p.positions + np.random.default_rng(0).normal(0, 0.3, p.positions.shape)
    wrong = C.atom_model_projections(shaken, cls, heights, bs, ts.angles, ts.data.shape[1:], ts.pixel_size)
    assert C.r_factor(wrong, ts.data) > 0.1


@pytest.fixture(scope="module")
def traced_noisy():
    """A noisy simulated particle through the chain as ``run`` does it: 10% of the projections
    held out, RESIRE on the rest, tracing, refinement, refit on all, confidence."""
    from napari_aet.core.io import Volume
    from napari_aet.core.pipeline import trace_volume
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import reference_config, simulate

    sim = simulate(reference_config(seed=41, dose=2e3, size=2.2, n_voxels=80, tilt_range=65, tilt_step=6.5))
    ts = sim.tilt_series
    free = C.split_free_projections(ts.angles, 0.1)
    angles = np.asarray(ts.angles)
    rec = reconstruct(ts.data[~free], angles[~free], ts.pixel_size, device="cpu").volume
    table, meta = trace_volume(Volume(rec, ts.pixel_size), ts, device="cpu", free=free, refine_iterations=100)
    return sim, table, meta


def test_run_chain_reports_r_work_and_r_free(traced_noisy):
    _, table, meta = traced_noisy
    v = meta["validation"]
    assert v["n_free_projections"] == 2 and len(v["free_projections"]) == 2
    assert 0 < v["r_work"] < 0.6 and 0 < v["r_free"] < 0.6
    assert abs(v["r_free"] - v["r_work"]) < 0.1  # a model that fits the work set explains the held-out set too
    atoms = table["atom"] == 1
    for col in C.CONFIDENCE_COLUMNS:
        assert col in table and np.isfinite(table.loc[atoms, col]).all()
    assert table["presence"].between(0, 1).all()  # every peak: is it an atom after all?
    assert table.loc[~atoms, "sigma_x_pm"].isna().all()  # a noise peak has no position to be sure of


def test_position_uncertainty_is_calibrated_on_ground_truth(traced_noisy):
    from napari_aet.core.metrics import match_atoms

    sim, table, _ = traced_noisy
    truth = sim.particle.positions[sim.particle.is_particle]
    atoms = table[table["atom"] == 1]
    pos = atoms[["x", "y", "z"]].to_numpy()
    m = match_atoms(pos, truth)
    assert m.recall > 0.98
    d = pos[m.found_index] - truth[m.true_index]
    d -= d.mean(0)  # the common shift no tilt series can see
    sigma = atoms[["sigma_x_pm", "sigma_y_pm", "sigma_z_pm"]].to_numpy()[m.found_index] / 100
    coverage = (np.abs(d) <= 1.645 * sigma).mean(0)
    assert np.all(coverage > 0.8) and np.all(coverage < 0.99), coverage  # the 90% interval, per axis
    assert np.median(sigma[:, 2]) > np.median(sigma[:, 0])  # the missing wedge blurs z most


def test_presence_tells_atoms_from_noise_peaks_and_invented_atoms(traced_noisy):
    from napari_aet.core.metrics import match_atoms

    sim, table, meta = traced_noisy
    truth = sim.particle.positions[sim.particle.is_particle]
    pos = table[["x", "y", "z"]].to_numpy()
    m = match_atoms(pos, truth)
    good = np.zeros(len(pos), bool)
    good[m.found_index] = True
    presence = table["presence"].to_numpy()
    assert (~good).sum() > 20  # the tracer's noise peaks are in the table as non-atoms
    assert presence[good].min() > presence[~good].max() or np.mean(presence[good] > 0.5) > 0.98
    assert np.mean(presence[~good] < 0.5) > 0.95
    # atoms that are not there: the held-out projections do not want them
    ts = sim.tilt_series
    ref = meta["refinement"]
    heights = {int(k): v for k, v in ref["heights"].items()}
    bs = {int(k): v for k, v in ref["b_factors_A2"].items()}
    real = pos[table["atom"].to_numpy() == 1]
    centre = real.mean(0)
    fake = centre + np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, -1], [0, -1, 0]]) * (np.ptp(real, 0).max() / 2 + 4)
    every = np.vstack([real, fake])
    in_model = np.ones(len(every), bool)
    free = np.zeros(len(ts.data), bool)
    free[meta["validation"]["free_projections"]] = True
    conf = C.atom_confidence(every, np.zeros(len(every), int), heights, bs, ts.data, ts.angles, ts.pixel_size,
                             in_model=in_model, free=free)
    assert np.all(conf.presence[-5:] < 0.05) and np.all(np.abs(conf.occupancy[-5:]) < 0.3), conf.presence[-5:]
    assert np.mean(conf.presence[:-5] > 0.5) > 0.98
    assert set(C.least_certain_order(table.assign(presence=presence))[:5]) <= set(np.flatnonzero(~good))


def test_least_certain_order_needs_the_columns():
    import pandas as pd

    with pytest.raises(AETInputError, match="presence"):
        C.least_certain_order(pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0]}))


def test_residual_tomogram_points_at_a_missing_atom(small_sim):
    ts, p = small_sim.tilt_series, small_sim.particle
    keep = np.ones(len(p.positions), bool)
    centre = np.argmin(np.linalg.norm(p.positions - p.positions.mean(0), axis=1))
    keep[centre] = False
    cls = np.zeros(keep.sum(), int)
    n = ts.data.shape[-1]
    res = C.residual_tomogram(p.positions[keep], cls, {0: 1.0}, {0: small_sim.config.b_factor}, ts.data, ts.angles,
                              ts.pixel_size, (n, n, n))
    from napari_aet.core import geometry

    peak = np.array(np.unravel_index(np.argmax(res), res.shape), float)
    peak_xyz = np.array([geometry.index_to_angstrom(peak[2 - k], n, ts.pixel_size) for k in range(3)])
    assert np.linalg.norm(peak_xyz - p.positions[centre]) < 0.8  # the strongest residual is the missing atom
    # a model with one atom too many: the residual is mostly negative, reconstructed all the same
    extra = C.residual_tomogram(p.positions, np.zeros(len(p.positions), int), {0: 1.5}, {0: small_sim.config.b_factor},
                                ts.data, ts.angles, ts.pixel_size, (n, n, n))
    assert extra.min() < -abs(extra.max())


def test_trace_with_completion_adds_the_atoms_the_tomogram_lacked(small_sim):
    """A tomogram missing six atoms the tilt series holds: completion puts them back as table
    rows (no traced intensity, a presence and uncertainties of their own)."""
    from napari_aet.core.forward import GaussianAtoms
    from napari_aet.core.io import Volume
    from napari_aet.core.metrics import match_atoms
    from napari_aet.core.pipeline import trace_volume

    p, ts, n = small_sim.particle, small_sim.tilt_series, small_sim.config.n_voxels
    rng = np.random.default_rng(3)
    gone = rng.choice(len(p.positions), 6, replace=False)
    keep = np.setdiff1d(np.arange(len(p.positions)), gone)
    vol = GaussianAtoms(small_sim.config.b_factor).density(p.positions[keep], (n, n, n), ts.pixel_size)
    table, meta = trace_volume(Volume(vol, ts.pixel_size), ts, device="cpu", complete=True, refine_iterations=60)
    atoms = table[table["atom"] == 1]
    assert meta["completion"]["n_added"] >= 5 and atoms["intensity"].isna().sum() == meta["completion"]["n_added"]
    m = match_atoms(atoms[["x", "y", "z"]].to_numpy(), p.positions)
    assert m.recall >= 0.99 and m.precision >= 0.99
    back = match_atoms(atoms[["x", "y", "z"]].to_numpy(), p.positions[gone], max_distance=0.5)
    assert back.n_matched >= 5
    added = atoms[atoms["intensity"].isna()]
    assert np.isfinite(added[list(C.CONFIDENCE_COLUMNS)].to_numpy()).all() and (added["presence"] > 0.5).all()

"""The probe's tail: fitted with the atoms, taken off the tilt series, judged against simulated truth."""

import numpy as np
import pytest
import torch

from napari_aet.core.errors import AETInputError
from napari_aet.core.io import TiltSeries, Volume
from napari_aet.core.metrics import match_atoms
from napari_aet.core.probe_tail import MIN_TAIL_FRACTION, ProbeTail, apply_probe_tail, remove_probe_tail
from napari_aet.core.refine import refine_positions
from napari_aet.core.simulate import reference_config, simulate

TRUE_TAIL = ProbeTail(0.3, 1.0)  # abTEM's 300 kV, 25 mrad probe on a Pt-Ni particle fitted 0.36 / 0.97 Å


def _with_tail(ts, tail):
    data = apply_probe_tail(torch.as_tensor(ts.data), tail.fraction, tail.sigma, ts.pixel_size).numpy()
    return TiltSeries(data, ts.angles, ts.pixel_size)


@pytest.fixture(scope="module")
def small_particle():
    # seed 61: not used while choosing the tail's start, scan or limits (seed 41)
    return simulate(reference_config(seed=61, size=2.4, n_voxels=96))


def test_removing_the_tail_undoes_applying_it():
    rng = np.random.default_rng(0)
    img = np.zeros((3, 64, 72), np.float32)
    for _ in range(40):  # atoms away from the edges, as a particle in its field
        a, v, u = rng.integers(0, 3), rng.uniform(16, 48), rng.uniform(16, 56)
        vv, uu = np.mgrid[0:64, 0:72]
        img[a] += np.exp(-((vv - v) ** 2 + (uu - u) ** 2) / 2.0)
    tailed = apply_probe_tail(torch.as_tensor(img), 0.4, 1.2, 0.357).numpy()
    assert abs(tailed.sum() - img.sum()) < 1e-3 * img.sum()  # the tail keeps every atom's intensity
    assert np.abs(tailed - img).max() > 0.1 * img.max()
    back = remove_probe_tail(tailed, ProbeTail(0.4, 1.2), 0.357)
    assert np.abs(back - img).max() < 1e-3 * img.max()
    assert np.array_equal(remove_probe_tail(img, ProbeTail(0.0, 1.0), 0.357), img)


@pytest.mark.parametrize("fraction, sigma, what", [(0.9, 1.0, "fraction"), (-0.1, 1.0, "fraction"),
                                                   (0.3, 0.0, "width"), (float("nan"), 1.0, "fraction")])
def test_impossible_tails_are_refused(fraction, sigma, what):
    with pytest.raises(AETInputError, match=what):
        ProbeTail(fraction, sigma)


def test_a_tilt_series_needs_three_axes():
    with pytest.raises(AETInputError, match="3 axes"):
        remove_probe_tail(np.zeros((8, 8)), TRUE_TAIL, 0.357)


def test_refinement_fits_the_tail_and_keeps_atoms_on_their_sites(small_particle):
    sim = small_particle
    truth = sim.particle.positions
    start = truth + np.random.default_rng(3).normal(0, 0.1, truth.shape)
    tailed = _with_tail(sim.tilt_series, TRUE_TAIL)
    cls = np.zeros(len(truth), int)
    fitted = refine_positions(start, cls, tailed.data, tailed.angles, tailed.pixel_size, iterations=100,
                              fit_probe_tail=True)
    alone = refine_positions(start, cls, tailed.data, tailed.angles, tailed.pixel_size, iterations=100)
    assert abs(fitted.probe_tail.fraction - TRUE_TAIL.fraction) < 0.03
    assert abs(fitted.probe_tail.sigma - TRUE_TAIL.sigma) < 0.1
    assert 4.0 < fitted.b_factors[0] < 6.0  # the simulated B is 5 Å²; Gaussians alone widen to fit the tail
    assert alone.b_factors[0] > 6.0
    err_fit = match_atoms(fitted.positions, truth).rmsd_pm
    err_alone = match_atoms(alone.positions, truth).rmsd_pm
    assert err_fit < 1.5 and err_alone > 1.3 * err_fit
    assert fitted.r_factor_after < alone.r_factor_after
    # on projections with no tail, the fitted one stays below what would be taken off
    plain = refine_positions(start, cls, sim.tilt_series.data, sim.tilt_series.angles, sim.tilt_series.pixel_size,
                             iterations=60, fit_probe_tail=True)
    assert plain.probe_tail.fraction < MIN_TAIL_FRACTION
    assert match_atoms(plain.positions, truth).rmsd_pm < 1.5


def test_trace_takes_the_tail_off_and_reports_r_on_the_measured_projections(small_particle):
    from napari_aet.core.confidence import split_free_projections
    from napari_aet.core.pipeline import trace_volume
    from napari_aet.core.reconstruct import reconstruct

    sim = small_particle
    tailed = _with_tail(sim.tilt_series, TRUE_TAIL)
    free = split_free_projections(tailed.angles, 0.1)
    rec = reconstruct(TiltSeries(tailed.data[~free], tailed.angles[~free], tailed.pixel_size), device="cpu")
    table, meta = trace_volume(Volume(rec.volume, rec.pixel_size), tailed, free=free, device="cpu",
                               refine_iterations=100)
    tail = meta["refinement"]["probe_tail"]
    assert tail["removed"] and abs(tail["fraction"] - TRUE_TAIL.fraction) < 0.05
    found = table.loc[table["atom"] == 1, ["x", "y", "z"]].to_numpy()
    m = match_atoms(found, sim.particle.positions)
    assert m.recall >= 0.99 and m.precision >= 0.99 and m.rmsd_pm < 5.0
    v = meta["validation"]
    # R of the measured projections: the model with its tail back, not the tail-free series
    assert v["r_work"] < 0.1 and v["r_free"] < 0.1
    assert abs(v["r_work"] - tail["r_factor_after"]) < 0.2 * tail["r_factor_after"]
    assert v["r_work"] < 0.5 * meta["refinement"]["r_factor_after"]  # Gaussians alone: 0.10, with the tail 0.03


def test_a_local_refit_sees_the_series_and_model_the_run_fitted():
    from napari_aet.core.correct import fitted_tilts, model_parameters

    rng = np.random.default_rng(1)
    img = np.zeros((2, 48, 48), np.float32)
    vv, uu = np.mgrid[0:48, 0:48]
    for v, u in rng.uniform(14, 34, (12, 2)):
        img[:] += np.exp(-((vv - v) ** 2 + (uu - u) ** 2) / 2.0)
    tailed = apply_probe_tail(torch.as_tensor(img), 0.3, 1.0, 0.357).numpy()
    tail = {"fraction": 0.3, "sigma_A": 1.0, "removed": True, "heights": {"0": 0.9}, "b_factors_A2": {"0": 5.0}}
    meta = {"refinement": {"heights": {"0": 1.0}, "b_factors_A2": {"0": 26.0}, "probe_tail": tail}}
    assert model_parameters(meta) == ({0: 0.9}, {0: 5.0})
    assert np.abs(fitted_tilts(meta, tailed, 0.357) - img).max() < 1e-3 * img.max()
    kept = {"refinement": dict(meta["refinement"], probe_tail=dict(tail, removed=False))}
    assert model_parameters(kept) == ({0: 1.0}, {0: 26.0})
    assert np.array_equal(fitted_tilts(kept, tailed, 0.357), tailed)

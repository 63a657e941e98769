import numpy as np
import pytest

from napari_aet.core.align import (
    align, apply_shifts, centre_of_mass_shifts, cross_correlation_shifts, tilt_axis_offset,
)
from napari_aet.core.simulate import SimulationConfig, reference_config, simulate


def _gauge_free(sim, res):
    """Errors after removing what no alignment can see: a translation of the whole object
    (du = Tx cos t + Tz sin t, dv = Ty) and a common offset of all tilt angles."""
    t = np.deg2rad(sim.tilt_series.angles)
    err = res.shifts - sim.shifts
    design = np.stack([np.cos(t), np.sin(t)], 1)
    coef, *_ = np.linalg.lstsq(design, err[:, 0], rcond=None)
    du = err[:, 0] - design @ coef
    dv = err[:, 1] - err[:, 1].mean()
    da = res.angles - sim.true_angles[:, 1]
    return du, dv, da - da.mean()


@pytest.mark.parametrize("seed", [31, 32])  # seeds not used while tuning (3-5)
def test_projection_matching_recovers_shifts_and_angles(seed):
    sim = simulate(reference_config(seed=seed, shift_error=3.0, angle_error=1.0))
    assert np.abs(sim.shifts).max() > 2.0 and np.abs(sim.true_angles[:, 1] - sim.tilt_series.angles).max() > 0.7
    res = align(sim.tilt_series.data, sim.tilt_series.angles, pixel_size=0.357)
    du, dv, da = _gauge_free(sim, res)
    assert np.abs(du).max() < 0.3 and np.abs(dv).max() < 0.3
    assert np.abs(da).max() < 0.3
    assert res.history[-1]["r_factor"] < res.history[0]["r_factor"]


def test_centre_of_mass_and_cross_correlation_shifts():
    sim = simulate(SimulationConfig(size=2.0, n_voxels=72, tilt_step=10, dose=None, shift_error=3.0, seed=33))
    for method in ("com", "cross-correlation"):
        res = align(sim.tilt_series.data, sim.tilt_series.angles, method=method)
        du, dv, _ = _gauge_free(sim, res)
        assert np.abs(du).max() < 0.5 and np.abs(dv).max() < 0.5, method
    # corrected data have their centre of mass on the detector centre
    fixed = apply_shifts(sim.tilt_series.data, -centre_of_mass_shifts(sim.tilt_series.data))
    assert np.abs(centre_of_mass_shifts(fixed)).max() < 0.05


def test_tilt_axis_offset_is_found():
    sim = simulate(SimulationConfig(size=2.0, n_voxels=72, tilt_step=10, dose=None, centre_offset=0, seed=34))
    shifted = apply_shifts(sim.tilt_series.data, np.tile([[2.5, 0.0]], (len(sim.tilt_series.data), 1)))
    base = tilt_axis_offset(sim.tilt_series.data, sim.tilt_series.angles)
    assert tilt_axis_offset(shifted, sim.tilt_series.angles) - base == pytest.approx(2.5, abs=0.05)


def test_apply_shifts_round_trip():
    rng = np.random.default_rng(0)
    vv, uu = np.mgrid[0:32, 0:32]
    img = np.stack([np.exp(-((uu - 14 - k) ** 2 + (vv - 17) ** 2) / 6.0) for k in range(3)]).astype(np.float32)
    s = rng.uniform(-2, 2, (3, 2))
    np.testing.assert_allclose(apply_shifts(apply_shifts(img, s), -s), img, atol=1e-5)
    assert cross_correlation_shifts(img, [-10, 0, 10]).shape == (3, 2)

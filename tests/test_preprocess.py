"""Preparing measured tilt series: tilt-axis angle, background, intensity drift, BM3D."""

import numpy as np
import pytest

from napari_aet.core import geometry
from napari_aet.core.errors import AETInputError
from napari_aet.core.preprocess import (
    denoise_bm3d,
    estimate_tilt_axis_angle,
    normalize_intensity,
    rotate_projections,
    subtract_background,
)
from napari_aet.core.simulate import SimulationConfig, add_poisson_noise, atom_weights, project_atoms, simulate

PX = 0.4


@pytest.fixture(scope="module")
def particle():
    sim = simulate(SimulationConfig(size=2.0, n_voxels=80, pixel_size=PX, tilt_range=65, tilt_step=6.5, seed=21,
                                    dose=None))
    return sim


def _series(sim, alpha, dose=2e4, seed=0):
    p = sim.particle
    e = geometry.convert_angles(sim.tilt_series.angles, "tilt-axis", alpha)
    proj = project_atoms(p.positions, atom_weights(p.species), e, (80, 80), PX)
    return add_poisson_noise(proj, dose, 0.02, np.random.default_rng(seed))


@pytest.mark.parametrize("alpha", [23.4, -61.7, 87.0])
def test_tilt_axis_angle_within_a_fifth_of_a_degree(particle, alpha):
    est = estimate_tilt_axis_angle(_series(particle, alpha))
    err = (est["tilt_axis_angle_deg"] - alpha + 90) % 180 - 90
    assert abs(err) < 0.2, est
    assert est["ambiguity_ratio"] < 0.5


def test_rotated_series_traces_like_the_unrotated_one(particle):
    """Recall after estimating and undoing a 23.4° tilt-axis rotation is within 0.5 points of
    the series recorded with the axis along v (the atoms then sit rotated by -alpha about z)."""
    from napari_aet.core.metrics import match_atoms
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.trace import trace_atoms

    alpha = 23.4
    tilts = particle.tilt_series.angles
    est = estimate_tilt_axis_angle(_series(particle, alpha))["tilt_axis_angle_deg"]
    fixed = rotate_projections(_series(particle, alpha), est)

    def recall(data, truth):
        vol = reconstruct(data, tilts, PX, iterations=60, device="cpu").volume
        return match_atoms(trace_atoms(vol, PX).atoms[["x", "y", "z"]].to_numpy(), truth).recall

    truth = particle.particle.positions
    rotated_truth = truth @ geometry.rotation_z(np.radians(-alpha)).T
    r_plain = recall(_series(particle, 0.0), truth)
    r_fixed = recall(fixed, rotated_truth)
    assert r_plain > 0.95 and r_fixed >= r_plain - 0.005, (r_plain, r_fixed)


def test_background_plane_is_removed(particle):
    clean = _series(particle, 0.0, dose=1e5)
    a, nv, nu = clean.shape
    v, u = np.mgrid[-1:1:nv * 1j, -1:1:nu * 1j]
    level = 0.2 * clean.max()
    dirty = clean + (level * (1 + 0.3 * u - 0.2 * v)).astype(np.float32)
    fixed, info = subtract_background(dirty, order=1)
    assert np.abs(fixed - clean).mean() < 0.02 * np.abs(dirty - clean).mean()
    assert info["background_order"] == 1


def test_intensity_drift_is_undone(particle):
    clean = _series(particle, 0.0, dose=1e5)
    drift = np.linspace(0.8, 1.2, len(clean)).astype(np.float32)
    fixed, info = normalize_intensity(clean * drift[:, None, None])
    totals = fixed.reshape(len(fixed), -1).sum(1)
    assert np.ptp(totals) / totals.mean() < 1e-5  # equal total intensity at every tilt
    found = np.asarray(info["intensity_factors"]) / drift
    assert np.ptp(found) / found.mean() < 0.01  # the drift recovered within Poisson noise
    with pytest.raises(AETInputError, match="drift factors"):
        normalize_intensity(clean, factors=[1.0, -1.0])


def test_bm3d_lowers_the_noise(particle):
    pytest.importorskip("bm3d")
    clean = _series(particle, 0.0, dose=1e7)[:3]
    noisy = _series(particle, 0.0, dose=3e2)[:3]
    den, info = denoise_bm3d(noisy)
    assert len(info["bm3d_sigma"]) == 3 and min(info["bm3d_sigma"]) > 0
    assert np.abs(den - clean).mean() < 0.7 * np.abs(noisy - clean).mean()

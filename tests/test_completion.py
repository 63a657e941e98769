import numpy as np
import pytest

from napari_aet.core import confidence as C
from napari_aet.core.completion import complete_atoms, propose_atoms, residual_noise
from napari_aet.core.errors import AETInputError
from napari_aet.core.refine import refine_positions
from napari_aet.core.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def refined_case():
    """A small noisy particle (2 nm, 80³ at 0.4 Å, ±60° in 8° steps: 16 projections, 2 held out)
    and its atoms refined on the working projections from the truth."""
    sim = simulate(SimulationConfig(size=2.0, n_voxels=80, pixel_size=0.4, tilt_range=60, tilt_step=8, dose=2e4,
                                    seed=23))
    ts = sim.tilt_series
    angles = np.asarray(ts.angles)
    free = C.split_free_projections(angles, 0.1)
    truth = sim.particle.positions[sim.particle.is_particle]
    ref = refine_positions(truth, np.zeros(len(truth), int), ts.data[~free], angles[~free], ts.pixel_size,
                           iterations=40, device="cpu")
    return sim, angles, free, truth, ref


def _complete(case, positions, **kw):
    sim, angles, free, _, ref = case
    ts = sim.tilt_series
    n = sim.config.n_voxels
    return complete_atoms(positions, np.zeros(len(positions), int), ref.heights, ref.b_factors, ts.data, angles,
                          ts.pixel_size, (n, n, n), free=free, refine_iterations=30, device="cpu", **kw)


def test_completion_recovers_deleted_atoms_and_adds_no_false_ones(refined_case):
    sim, angles, free, truth, ref = refined_case
    gone = np.random.default_rng(0).choice(len(truth), 10, replace=False)
    start = np.delete(ref.positions, gone, axis=0)
    res = _complete(refined_case, start, max_rounds=3)
    d = np.linalg.norm(res.positions[:, None] - truth[gone][None], axis=2).min(0)
    assert (d < 0.5).sum() >= 8
    # every final atom is a true atom within 0.5 Å, and no true atom holds two
    dist = np.linalg.norm(res.positions[:, None] - truth[None], axis=2)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 0.5 and len(np.unique(nearest)) == len(res.positions)
    assert sum(res.added) >= 8 and res.r_free[-1] < res.r_free[0]
    assert res.used_free and len(res.r_work) == len(res.added) + 1
    assert res.summary()["n_added"] == sum(res.added)


def test_completion_drops_atoms_the_held_out_projections_do_not_want(refined_case):
    sim, angles, free, truth, ref = refined_case
    rng = np.random.default_rng(1)
    # five atoms in the vacuum around the particle, 4-6 Å beyond its outermost atoms
    direction = rng.normal(size=(5, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = np.linalg.norm(truth - truth.mean(0), axis=1).max()
    false = truth.mean(0) + direction * (radius + rng.uniform(4, 6, (5, 1)))
    res = _complete(refined_case, np.concatenate([ref.positions, false]), max_rounds=2, drop=True)
    dist_false = np.linalg.norm(res.positions[:, None] - false[None], axis=2).min(0)
    assert (dist_false > 1.0).all()  # all five gone
    dist = np.linalg.norm(res.positions[:, None] - truth[None], axis=2).min(1)
    assert len(res.positions) >= len(truth) - 2 and (dist < 0.5).sum() >= len(truth) - 2
    assert sum(res.removed) >= 5


def test_propose_atoms_keeps_its_distances_and_the_noise_is_robust():
    vol = np.zeros((40, 40, 40), np.float32)
    vol[20, 20, 20] = vol[20, 20, 24] = vol[10, 30, 30] = 5.0  # 24: 1.6 Å from 20 at 0.4 Å
    vol[30, 10, 10] = 0.5  # below the threshold
    pos = np.array([[4.0, 4.0, -4.0]])  # the (10, 30, 30) peak: x = y = 4 Å, z = -4 Å
    cand = propose_atoms(vol, pos, 0.4, threshold=1.0, min_distance=2.0)
    assert cand.shape == (1, 3)
    np.testing.assert_allclose(cand[0], [0.0, 0.0, 0.0], atol=0.25)
    assert len(propose_atoms(vol, pos, 0.4, threshold=1.0, min_distance=2.0, edge_margin=7.9)) == 1
    assert len(propose_atoms(vol, np.zeros((0, 3)), 0.4, threshold=1.0, min_distance=1.0)) == 3
    noise = np.random.default_rng(0).normal(0, 2.0, (40, 40, 40)).astype(np.float32)
    noise[18:23, 18:23, 18:23] += 50  # a missed atom barely moves the robust noise
    assert abs(residual_noise(noise, np.zeros((1, 3)), 0.4, radius=4.0) / 2.0 - 1) < 0.15


def test_completion_refuses_bad_inputs(refined_case):
    sim, angles, free, truth, ref = refined_case
    ts = sim.tilt_series
    with pytest.raises(AETInputError, match="no atoms"):
        complete_atoms(np.zeros((0, 3)), [], ref.heights, ref.b_factors, ts.data, angles, 0.4, (80, 80, 80))
    with pytest.raises(AETInputError, match="classes"):
        complete_atoms(truth, np.ones(len(truth), int), ref.heights, ref.b_factors, ts.data, angles, 0.4, (80,) * 3)
    with pytest.raises(AETInputError, match="held-out"):
        complete_atoms(truth, np.zeros(len(truth), int), ref.heights, ref.b_factors, ts.data, angles, 0.4, (80,) * 3,
                       free=np.ones(len(angles), bool))

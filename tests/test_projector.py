import numpy as np
import pytest
import torch

from napari_aet.core.errors import AETInputError
from napari_aet.core.projector import Projector, resolve_device
from napari_aet.core.simulate import SimulationConfig, project_atoms, simulate

ANGLES = [-65.0, -20.0, 0.0, 33.0, 60.0]
EULER = [[0, -50, 0], [30, 20, -10], [90, 45, 15], [-40, 70, 120]]


@pytest.mark.parametrize("angles, general, path", [(ANGLES, False, "sheared"), (ANGLES, True, "sheared"),
                                                   (EULER, True, "sheared"), (ANGLES, True, "splat"),
                                                   (EULER, True, "splat")])
def test_adjoint_is_exact_in_float64(angles, general, path):
    g = torch.Generator().manual_seed(0)
    p = Projector((18, 22, 20), angles, dtype=torch.float64, force_general=general, general=path)
    assert p.single_axis == (not general)
    x = torch.rand((18, 22, 20), generator=g, dtype=torch.float64)
    y = torch.rand((len(angles), 22, 20), generator=g, dtype=torch.float64)
    lhs = float((p.forward(x) * y).sum())
    rhs = float((x * p.adjoint(y)).sum())
    assert abs(lhs - rhs) / abs(lhs) < 1e-4
    assert abs(lhs - rhs) / abs(lhs) < 1e-12  # exact to rounding, not just the bound


def test_fast_single_axis_path_equals_general_path():
    g = torch.Generator().manual_seed(1)
    x = torch.rand((16, 20, 18), generator=g, dtype=torch.float64)
    y = torch.rand((len(ANGLES), 20, 18), generator=g, dtype=torch.float64)
    fast = Projector((16, 20, 18), ANGLES, dtype=torch.float64)
    slow = Projector((16, 20, 18), ANGLES, dtype=torch.float64, force_general=True, general="splat")
    torch.testing.assert_close(fast.forward(x), slow.forward(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.adjoint(y), slow.adjoint(y), rtol=1e-10, atol=1e-10)


def test_projection_conserves_intensity_and_centroid():
    """A voxel's value lands whole on the detector, centred where the contract's geometry puts it."""
    vol = np.zeros((32, 32, 32), np.float32)
    vol[20, 9, 25] = 1.0  # z = 4, y = -7, x = 9 (voxels)
    cases = [(np.linspace(-70, 70, 15), "sheared"), (np.array([[10, 35, -20], [100, -60, 45], [5, 80, -3]]), "sheared"),
             (np.array([[10, 35, -20], [100, -60, 45]]), "splat")]
    for angles, path in cases:
        p = Projector(vol.shape, angles, general=path)
        proj = p.forward(torch.from_numpy(vol)).numpy()
        np.testing.assert_allclose(proj.sum(axis=(1, 2)), 1.0, rtol=1e-5)
        from napari_aet.core import geometry

        uv = geometry.project_points([[9.0, -7.0, 4.0]], angles)[:, 0]
        vv, uu = np.mgrid[0:32, 0:32]
        cu = (proj * uu).sum(axis=(1, 2)) - 16
        cv = (proj * vv).sum(axis=(1, 2)) - 16
        np.testing.assert_allclose(cu, uv[:, 0], atol=1e-4)
        np.testing.assert_allclose(cv, uv[:, 1], atol=1e-4)


@pytest.mark.parametrize("b_factor, tolerance", [(20.0, 0.05), (5.0, 0.15)])
def test_projection_of_simulated_volume_matches_simulated_tilt_series(b_factor, tolerance):
    """The projector and the simulator's analytic projections agree within interpolation error."""
    sim = simulate(SimulationConfig(size=2.0, n_voxels=72, dose=None, b_factor=b_factor, seed=3))
    p = Projector(sim.ideal.data.shape, sim.tilt_series.angles)
    proj = p.forward(torch.from_numpy(sim.ideal.data)).numpy()
    ts = sim.tilt_series.data
    np.testing.assert_allclose(proj.sum(axis=(1, 2)), ts.sum(axis=(1, 2)), rtol=1e-4)
    assert np.linalg.norm(proj - ts) / np.linalg.norm(ts) < tolerance
    # also through the general paths with Euler angles; shear-warp interpolates twice (a wider
    # kernel), so sharp atoms differ more from the analytic projection, not in position or total
    eul = np.array([[20, 30, -10], [0, -45, 60]])
    direct = project_atoms(sim.particle.positions, np.ones(len(sim.particle.positions)), eul, (72, 72), 0.357, b_factor)
    for path, allowed in (("splat", tolerance), ("sheared", 1.5 * tolerance)):
        proj = Projector(sim.ideal.data.shape, eul, general=path).forward(torch.from_numpy(sim.ideal.data)).numpy()
        assert np.linalg.norm(proj - direct) / np.linalg.norm(direct) < allowed, path


def test_general_path_memory_chunks_give_the_same_result():
    g = torch.Generator().manual_seed(2)
    x = torch.rand((12, 14, 16), generator=g)
    big = Projector((12, 14, 16), EULER, general="splat").forward(x)
    small = Projector((12, 14, 16), EULER, max_chunk_bytes=4096, general="splat").forward(x)
    torch.testing.assert_close(big, small)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(AETInputError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(AETInputError, match="unknown"):
        resolve_device("tpu")


def test_shape_mismatch_is_reported():
    p = Projector((8, 8, 8), ANGLES)
    with pytest.raises(AETInputError, match="shape"):
        p.forward(torch.zeros((8, 8, 9)))


@pytest.mark.parametrize("shape", [(40, 24, 36), (24, 40, 30)])
def test_sheared_path_agrees_with_the_direct_splat(shape):
    """Shear-warp and direct splatting: same totals and centroids, a few % apart on sharp features."""
    rng = np.random.default_rng(4)
    eul = np.c_[rng.uniform(-180, 180, 12), np.linspace(-80, 80, 12), rng.uniform(-180, 180, 12)]
    z, y, x = np.meshgrid(*[np.arange(s) - s // 2 for s in shape], indexing="ij")
    vol = np.zeros(shape)
    for cz, cy, cx in rng.uniform(-6, 6, (5, 3)):
        vol += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * 1.2**2))
    v = torch.from_numpy(vol)
    sheared = Projector(shape, eul, dtype=torch.float64).forward(v).numpy()
    direct = Projector(shape, eul, dtype=torch.float64, general="splat").forward(v).numpy()
    np.testing.assert_allclose(sheared.sum(axis=(1, 2)), direct.sum(axis=(1, 2)), rtol=1e-5)  # edges of the field
    vv, uu = np.mgrid[0:shape[1], 0:shape[2]]
    for img in (uu, vv):
        np.testing.assert_allclose((sheared * img).sum(axis=(1, 2)) / sheared.sum(axis=(1, 2)),
                                   (direct * img).sum(axis=(1, 2)) / direct.sum(axis=(1, 2)), atol=1e-4)
    assert np.linalg.norm(sheared - direct) / np.linalg.norm(direct) < 0.08


def test_unknown_general_path_is_refused():
    with pytest.raises(AETInputError, match="sheared or splat"):
        Projector((8, 8, 8), EULER, general="fourier")

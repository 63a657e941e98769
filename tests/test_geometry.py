import numpy as np
import pytest

from napari_aet.core import geometry as g


@pytest.mark.parametrize("t", [-65.0, -30.0, 0.0, 12.5, 47.0, 70.0])
def test_single_axis_is_euler_0_t_0(t):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-20, 20, size=(50, 3))
    uv = g.project_points(pts, [t])[0]
    tr = np.deg2rad(t)
    expected_u = pts[:, 0] * np.cos(tr) + pts[:, 2] * np.sin(tr)
    np.testing.assert_allclose(uv[:, 0], expected_u, atol=1e-12)
    np.testing.assert_allclose(uv[:, 1], pts[:, 1], atol=1e-12)
    np.testing.assert_allclose(g.euler_zyz_matrix(0, t, 0), g.euler_zyz_matrices(np.array([t]))[0])


def test_euler_matrices_are_rotations_and_zyz():
    rng = np.random.default_rng(1)
    eul = rng.uniform(-180, 180, size=(20, 3))
    rots = g.euler_zyz_matrices(eul)
    for r, (phi, theta, psi) in zip(rots, eul):
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        # Z-Y-Z: a rotation about z alone (theta = 0) adds phi and psi
    r0 = g.euler_zyz_matrix(30, 0, 15)
    np.testing.assert_allclose(r0, g.rotation_z(np.deg2rad(45)), atol=1e-12)


def test_index_angstrom_round_trip_and_centre():
    for n in (143, 144):
        assert g.index_to_angstrom(n // 2, n, 0.357) == 0.0
        idx = np.array([0.0, 10.25, n - 1])
        np.testing.assert_allclose(g.angstrom_to_index(g.index_to_angstrom(idx, n, 0.357), n, 0.357), idx)
    scale, translate = g.napari_scale_translate((144, 100, 101), 0.5)
    assert scale == (0.5, 0.5, 0.5)
    assert translate == (-36.0, -25.0, -25.0)


@pytest.mark.parametrize("t", [-60.0, -20.0, 0.0, 35.0, 65.0])
def test_atom_lands_on_contract_uv_in_simulated_projection(t):
    """One atom at a known (x, y, z) projects to (u, v) = (x cos t + z sin t, y) within 0.05 px."""
    from napari_aet.core.simulate import project_atoms

    p, n = 0.4, 64
    xyz = np.array([[3.1, -2.7, 5.3]])
    img = project_atoms(xyz, [1.0], [t], (n, n), p, b_factor=8.0)[0].astype(np.float64)
    vv, uu = np.mgrid[0:n, 0:n]
    cu = (img * uu).sum() / img.sum()
    cv = (img * vv).sum() / img.sum()
    tr = np.deg2rad(t)
    u_exp = g.angstrom_to_index(3.1 * np.cos(tr) + 5.3 * np.sin(tr), n, p)
    v_exp = g.angstrom_to_index(-2.7, n, p)
    assert abs(cu - u_exp) < 0.05 and abs(cv - v_exp) < 0.05


def test_bad_angle_shape():
    with pytest.raises(ValueError):
        g.as_euler_angles(np.zeros((4, 2)))


def test_random_rotation_is_proper():
    r = g.random_rotation(np.random.default_rng(3))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)

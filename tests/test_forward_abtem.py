"""The abTEM forward model: same geometry as the contract, Z-contrast per atom, a probe with tails."""

import numpy as np
import pytest

from napari_aet.core import geometry
from napari_aet.core.simulate import project_atoms

pytest.importorskip("abtem")


def _peak(im):
    """Sub-pixel peak (row, col): centroid of an 11 x 11 window around the maximum (wide enough
    that the sharp, pixel-integrated core does not pull it to the pixel centre)."""
    r, c = np.unravel_index(np.argmax(im), im.shape)
    win = im[r - 5:r + 6, c - 5:c + 6]
    y, x = np.mgrid[-5:6, -5:6]
    return r + (win * y).sum() / win.sum(), c + (win * x).sum() / win.sum()


def test_atoms_project_where_the_contract_says():
    from napari_aet.core.forward_abtem import abtem_projections

    pos = np.array([[2.0, -3.0, 4.0]])
    angles = np.array([-40.0, 0.0, 55.0])
    img = abtem_projections(pos, ["Pt"], angles, (48, 48), 0.357)
    for k, a in enumerate(angles):
        r = geometry.euler_zyz_matrix(*geometry.as_euler_angles(np.array([a]))[0])
        u, v = (pos @ r.T)[0, :2]
        row, col = _peak(img[k])
        assert abs(row - geometry.angstrom_to_index(v, 48, 0.357)) < 0.1
        assert abs(col - geometry.angstrom_to_index(u, 48, 0.357)) < 0.1
    # one Pt atom integrates to 1 (its tails inside the field), as in the project's simulator
    np.testing.assert_allclose(img.sum(axis=(1, 2)), 1.0, rtol=1e-3)


def test_z_contrast_and_a_probe_with_tails():
    from napari_aet.core.forward_abtem import abtem_projections

    pos = np.array([[-4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    img = abtem_projections(pos, ["Pd", "Pt"], np.array([0.0]), (48, 48), 0.357)[0]
    left, right = img[:, :24].sum(), img[:, 24:].sum()
    assert right / left == pytest.approx((78 / 46) ** 1.7, rel=0.02)
    # the same Pt atom as a Gaussian: abTEM's atom has a sharper core and longer tails
    gauss = project_atoms(pos[1:], np.ones(1), np.array([0.0]), (48, 48), 0.357)[0]
    ours = abtem_projections(pos[1:], ["Pt"], np.array([0.0]), (48, 48), 0.357)[0]
    r, c = np.unravel_index(np.argmax(gauss), gauss.shape)
    ring = np.hypot(*np.mgrid[:48, :48] - np.array([r, c])[:, None, None]) * 0.357
    tail = ring > 1.5  # Å from the centre
    assert ours[tail].sum() > 2 * gauss[tail].sum()

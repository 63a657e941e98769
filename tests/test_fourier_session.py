"""Fourier views of the missing wedge, and the Qt-free session: settings, undo, autosave."""

import numpy as np
import pandas as pd
import pytest

from napari_aet.core.errors import AETInputError
from napari_aet.core.fourier import (
    fourier_intensity, frequency_grids, missing_wedge_mask, wedge_correlation, wedge_shell_correlation,
)
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.trace import snap_to_maxima
from napari_aet.session import EditHistory, Session, load_settings, save_settings


def test_wedge_mask_geometry():
    m = missing_wedge_mask((64, 64, 64), 60.0)
    kz, ky, kx = frequency_grids(m.shape)
    assert m[kz > 0.2].mean() > m[np.abs(kx) > 0.2].mean()  # around k_z, not k_x
    assert not m[32, 32, 40] and m[40, 32, 32]  # centre 32: a k_x sample is measured, a k_z one is not
    # in the kx-kz plane the wedge spans 2 x 30° of 180°: a third of the directions
    plane = m[:, 32, :]
    kzp, kxp = kz[:, 32, :], kx[:, 32, :]
    ring = (np.hypot(kzp, kxp) > 0.2) & (np.hypot(kzp, kxp) < 0.45)
    assert plane[ring].mean() == pytest.approx(1 / 3, abs=0.03)
    assert np.array_equal(np.fft.fftshift(missing_wedge_mask(m.shape, 60.0, centred=False)), m)
    with pytest.raises(AETInputError, match="between 0 and 90"):
        missing_wedge_mask(m.shape, 95)


def test_sirt_leaves_the_wedge_empty_and_the_figures_see_it(small_sim):
    ts = small_sim.tilt_series
    sirt = reconstruct(ts, method="sirt", positivity=False, iterations=60, device="cpu").volume
    ideal = small_sim.ideal.data
    f = fourier_intensity(sirt)
    w = missing_wedge_mask(sirt.shape, 60.0)
    kz, ky, kx = frequency_grids(f.shape)
    shell = (np.sqrt(kz**2 + ky**2 + kx**2) > 0.15) & (np.sqrt(kz**2 + ky**2 + kx**2) < 0.45)
    assert f[shell & w].mean() < 0.8 * f[shell & ~w].mean()
    assert wedge_shell_correlation(ideal, ideal, 60.0, 0.4) == pytest.approx(1.0)
    assert wedge_correlation(3 * ideal, ideal, 60.0) == pytest.approx(1.0)  # scale-free
    assert wedge_shell_correlation(sirt, ideal, 60.0, 0.4) < 0.6
    with pytest.raises(AETInputError, match="NaN"):
        fourier_intensity(np.full((4, 4, 4), np.nan))


def test_settings_round_trip_and_survive_a_corrupt_file():
    save_settings("W", {"iterations": 37, "method": "sirt"})
    save_settings("V", {"x": 1})
    assert load_settings("W") == {"iterations": 37, "method": "sirt"}
    from napari_aet.session import home

    (home() / "settings.json").write_text("{not json")
    assert load_settings("W") == {}
    save_settings("W", {"a": 1})  # rewrites a usable file
    assert load_settings("W") == {"a": 1}


def test_history_undo_redo_and_session_autosave_restore(tmp_path):
    t0 = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 0.0], "z": [0.0, 0.0], "atom": [1, 1]})
    t1 = pd.concat([t0, pd.DataFrame({"x": [5.0], "y": [1.0], "z": [2.0], "atom": [1]})], ignore_index=True)
    h = EditHistory(limit=2)
    assert h.undo(t0) is None
    h.push(t0)
    back = h.undo(t1)
    assert len(back) == 2 and h.can_redo
    assert len(h.redo(back)) == 3 and not h.can_redo
    for _ in range(5):
        h.push(t0)
    assert len(h._undo) == 2  # bounded
    s = Session(tmp_path / "s")
    assert not s.has_autosave() and not s.unexported and s.restore() is None
    s.autosave(t1, {"pixel_size": 0.357}, "traced atoms")
    assert s.unexported
    table, meta, name = Session(tmp_path / "s").restore()  # a new process finds it
    assert name == "traced atoms" and meta["pixel_size"] == 0.357
    np.testing.assert_allclose(table[["x", "y", "z"]].to_numpy(), t1[["x", "y", "z"]].to_numpy())
    s.mark_exported(tmp_path / "out.csv")
    assert not s.unexported
    s.clear()
    assert not s.has_autosave()


def test_snap_to_maxima_recovers_a_displaced_atom(small_sim):
    ideal = small_sim.ideal.data
    p = small_sim.ideal.pixel_size
    from napari_aet.core import geometry

    true_xyz = small_sim.particle.positions[:5]
    vox = np.stack([geometry.angstrom_to_index(true_xyz[:, k], ideal.shape[2 - k], p) for k in (2, 1, 0)], 1)
    moved = vox + np.array([0.9, -1.2, 0.6])
    snapped = snap_to_maxima(ideal, moved)
    assert np.abs(snapped - vox).max() * p < 0.05  # Å

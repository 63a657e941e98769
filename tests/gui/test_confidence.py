"""Per-atom confidence in napari (issue 23): the atoms carry their confidence and can be coloured
by it; Correct atoms visits the least certain atoms, reconstructs the residual, and refits an
edit against the tilt series with R and R-free in the widget; Analyze leaves out atoms below a
presence (needs xvfb)."""

import numpy as np
import pytest

from .conftest import run_step

pytestmark = pytest.mark.gui

LOW = {7: 0.05, 20: 0.2, 50: 0.3}  # atoms given a low presence: the least certain, in this order


@pytest.fixture
def never_ask_on_close(monkeypatch):
    """Closing a viewer with a Correct atoms dock must not wait on a modal question."""
    yield
    from qtpy.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)


@pytest.fixture(scope="module")
def refined_case():
    """A small noisy Pt particle (135 atoms, 56², 21 projections, two held out) whose model is its
    truth with the simulator's height and B-factor, as the Trace widget would leave it: the
    confidence columns and the refinement and validation records."""
    from napari_aet.core.confidence import CONFIDENCE_COLUMNS, atom_confidence, split_free_projections
    from napari_aet.core.correct import model_r_factors
    from napari_aet.core.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(size=1.5, n_voxels=56, tilt_range=60, tilt_step=6, seed=93, dose=5e5))
    ts = sim.tilt_series
    free = split_free_projections(ts.angles, 0.1)
    table = sim.truth_table()[["x", "y", "z", "intensity", "atom", "species"]]
    classes = np.zeros(len(table), int)
    heights, b_factors = {0: 1.0}, {0: sim.config.b_factor}
    conf = atom_confidence(table[["x", "y", "z"]].to_numpy(), classes, heights, b_factors, ts.data, ts.angles,
                           ts.pixel_size, free=free)
    for name, values in conf.columns().items():
        table[name] = values
    for i, p in LOW.items():
        table.loc[i, "presence"] = p
    r_work, r_free = model_r_factors(table[["x", "y", "z"]].to_numpy(), classes, heights, b_factors, ts.data,
                                     ts.angles, ts.pixel_size, free)
    meta = {"refinement": {"r_factor_before": 0.04, "r_factor_after": r_work, "heights": heights,
                           "b_factors_A2": b_factors},
            "validation": {"r_work": r_work, "r_free": r_free, "free_projections": np.flatnonzero(free).tolist()}}
    assert set(CONFIDENCE_COLUMNS) <= set(table.columns)
    return sim, table, meta


def _open(viewer, case, folder):
    """The tilt series through napari-aet's reader, the atoms as the Trace widget adds them."""
    from napari_aet._layers import atoms_layer

    from .conftest import open_tilt_series_file

    sim, table, meta = case
    tilts = open_tilt_series_file(viewer, sim.tilt_series, folder, "tilts")
    data, kwargs, _ = atoms_layer(table, name="traced atoms", metadata=meta)
    return tilts, viewer.add_points(data, **kwargs)


def test_least_certain_atoms_are_visited_and_coloured(dock, make_napari_viewer, never_ask_on_close, qtbot,
                                                      refined_case, tmp_path):
    from napari_aet._qt.base import layer_table
    from napari_aet.core.confidence import least_certain_order

    viewer = make_napari_viewer()
    _, atoms = _open(viewer, refined_case, tmp_path)
    assert {"sigma_x_pm", "sigma_y_pm", "sigma_z_pm", "presence"} <= set(atoms.features)
    w = dock(viewer, "Correct atoms")
    assert w.layer_box.value == "traced atoms" and w.tilts_box.value == "tilts (tilt series)"
    assert "R-work" in w.r_label.text() and "R-free" in w.r_label.text()
    assert viewer.dims.ndisplay == 2
    for i in LOW:  # the lowest presence first; in 2D the slice moves to the atom
        w.next_button.click()
        world = atoms.data[i] * atoms.scale + atoms.translate
        assert atoms.selected_data == {i} and atoms.mode == "select"
        assert viewer.dims.point[0] == pytest.approx(world[0], abs=viewer.dims.range[0].step / 2 + 1e-6)  # its slice
        assert viewer.scene.camera.center[-2:] == pytest.approx(tuple(world[1:]), abs=1e-6)
        assert f"atom {i} " in w.status.text() and f"presence {LOW[i]:.2f}" in w.status.text()
    # a deleted atom is skipped: the fourth least certain goes, the fifth comes next
    order = least_certain_order(layer_table(atoms))
    fourth, fifth = atoms.data[order[3]].copy(), atoms.data[order[4]].copy()
    atoms.selected_data = {int(order[3])}
    atoms.remove_selected()
    viewer.dims.ndisplay = 3
    w.next_button.click()
    (picked,) = atoms.selected_data
    np.testing.assert_allclose(atoms.data[picked], fifth)
    assert not np.isclose(atoms.data, fourth).all(1).any()
    np.testing.assert_allclose(viewer.scene.camera.center, fifth * atoms.scale + atoms.translate, atol=1e-6)
    # Analyze offers the confidence as colourings before any analysis: presence red (low) to blue (high)
    an = dock(viewer, "Analyze")
    assert {"sigma_x_pm", "sigma_z_pm", "presence"} <= set(an.colour_by.choices)
    an.colour_by.value = "presence"
    assert atoms.face_colormap.name.startswith("RdYlBu") and tuple(atoms.face_contrast_limits) == (0.0, 1.0)
    low, high = atoms.face_color[7], atoms.face_color[int(np.argmax(atoms.features["presence"].to_numpy()))]
    assert low[0] > 0.6 > low[2] and high[2] > high[0]  # red; blue
    an.colour_by.value = "sigma_z_pm"
    assert atoms.face_colorbar.visible and atoms.face_contrast_limits[0] == 0.0
    assert "σ_z (pm)" in viewer.canvas.overlays.text.text
    # an atom added by hand has no confidence yet and is drawn as the least certain
    an.colour_by.value = "presence"
    atoms.add(atoms.data[0] + np.array([0.0, 0.0, 1.4]))
    assert np.isnan(atoms.features["presence"].iloc[-1]) and atoms.features["edited"].iloc[-1] == 1
    new = atoms.face_color[-1]
    assert new[0] > 0.6 > new[2] and new[0] <= low[0] + 1e-6  # as red as presence 0


def test_residual_and_a_refitted_edit_with_r_free(dock, make_napari_viewer, never_ask_on_close, qtbot,
                                                  refined_case, tmp_path):
    from napari_aet._layers import volume_layer

    sim, table, meta = refined_case
    viewer = make_napari_viewer()
    _, atoms = _open(viewer, refined_case, tmp_path)
    w = dock(viewer, "Correct atoms")
    k = int(np.argmax(atoms.data[:, 0]))  # delete the topmost atom: the residual shows it missing
    missing = atoms.data[k] * atoms.scale + atoms.translate
    atoms.selected_data = {k}
    atoms.remove_selected()
    run_step(qtbot, w, w.residual_button.click)
    residual = viewer.layers["traced atoms: residual"]
    assert residual.data.shape == (56, 56, 56) and residual.metadata["napari_aet"]["kind"] == "residual"
    lo, hi = residual.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0 and residual.colormap.name.startswith("RdBu")
    np.testing.assert_allclose(residual.scale, (sim.config.pixel_size,) * 3)
    peak = np.unravel_index(np.argmax(residual.data), residual.data.shape) * residual.scale + residual.translate
    assert np.linalg.norm(peak - missing) < 1.0  # the strongest red is the missing atom
    w.undo_button.click()
    # drag one interior atom 0.8 Å, refit it against the tilt series
    truth = atoms.data.copy()
    centre = truth.mean(0)
    i = int(np.argmin(np.linalg.norm(truth - centre, axis=1)))
    atoms._move({i}, truth[i])
    atoms._move({i}, truth[i] + np.array([0.0, 0.4, 0.4]))
    atoms._move({i}, truth[i] + np.array([0.0, 0.8 / np.sqrt(2), 0.8 / np.sqrt(2)]))
    atoms._drag_start = None
    assert atoms.features["edited"].iloc[i] == 1
    run_step(qtbot, w, w.refine_button.click)
    assert np.linalg.norm(atoms.data[i] - truth[i]) < 0.1
    text = w.r_label.text()
    assert "after the correction: R-work" in text and "R-free" in text
    corr = atoms.metadata["napari_aet"]["atoms_metadata"]["correction"]
    assert corr["r_work"] < corr["r_work_before"] and corr["r_free"] < corr["r_free_before"]
    assert f"{corr['r_work']:.4f}" in text and f"{corr['r_free']:.4f}" in text
    w.undo_button.click()  # the refit is one undo step
    assert np.linalg.norm(atoms.data[i] - truth[i]) > 0.7
    # without the tilt series the tomogram snap stays, and the widget says R cannot be computed
    data, kwargs, kind = volume_layer(sim.ideal, name="ideal")
    viewer.add_image(data, **kwargs)
    w.tomogram_box.value = "ideal"
    w.tilts_box.value = "none (tomogram snap only)"
    w.refine_button.click()
    assert np.linalg.norm(atoms.data[i] - truth[i]) < 0.3  # snapped to the tomogram's maximum
    assert "cannot be computed without the tilt series" in w.r_label.text()


def test_analyze_leaves_out_atoms_below_a_presence(dock, make_napari_viewer, never_ask_on_close, qtbot,
                                                   refined_case, tmp_path):
    viewer = make_napari_viewer()
    _, atoms = _open(viewer, refined_case, tmp_path)
    an = dock(viewer, "Analyze")
    assert an.min_presence.value == 0  # keeps every atom by default
    an.min_presence.value = 0.5
    run_step(qtbot, an)
    settings = atoms.metadata["napari_aet"]["analysis"]["settings"]
    assert settings["min_presence"] == 0.5 and settings["n_left_out_low_presence"] == len(LOW)
    assert f"{len(LOW)} atoms below presence 0.5 left out" in an.status.text()
    assert len(atoms.data) == len(refined_case[1]) and (atoms.features["fcc"].to_numpy()[list(LOW)] == 0).all()
    assert "presence" in an.colour_by.choices
    # Re-analyse after a correction leaves the same atoms out
    w = dock(viewer, "Correct atoms")
    run_step(qtbot, w)
    assert atoms.metadata["napari_aet"]["analysis"]["settings"]["n_left_out_low_presence"] == len(LOW)

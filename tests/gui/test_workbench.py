"""The workbench dock widgets end to end on small simulated cases (needs xvfb)."""

import numpy as np
import pytest

from .conftest import STEP_TIMEOUT_MS  # a bound for hangs only, never for speed

pytestmark = pytest.mark.gui

PX = 0.357


@pytest.fixture(scope="module")
def small_case():
    """A small Pt particle (56³) with its tilt series, RESIRE tomogram and ideal tomogram."""
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(size=1.5, n_voxels=56, tilt_range=60, tilt_step=6, seed=93))
    rec = reconstruct(sim.tilt_series.data, sim.tilt_series.angles, PX, device="cpu").volume
    return sim, rec


def _add(viewer, layer_data):
    data, kwargs, kind = layer_data
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def _sample_atoms(viewer):
    """The built-in sample's ideal tomogram and true atoms (1,359 atoms)."""
    _, ideal, truth = viewer.open_sample("napari-aet", "pt_nanoparticle")
    return ideal, truth


def test_load_widget_reads_the_file_and_its_angles(dock, make_napari_viewer, qtbot, tmp_path, small_case):
    from napari_aet.core.io import write_tilt_series

    sim, _ = small_case
    write_tilt_series(tmp_path / "tilts.mrc", sim.tilt_series, write_angles_file=True)
    viewer = make_napari_viewer()
    w = dock(viewer, "Load tilt series")
    w.path.value = str(tmp_path / "broken.mrc")
    (tmp_path / "broken.mrc").write_bytes(b"")
    w.run_button.click()
    qtbot.waitUntil(lambda: w.status.text().startswith("error"), timeout=STEP_TIMEOUT_MS)
    assert "broken.mrc" in w.status.text() and len(viewer.layers) == 0
    w.path.value = str(tmp_path / "tilts.mrc")
    w.run_button.click()
    qtbot.waitUntil(lambda: "tilts" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    layer = viewer.layers["tilts"]
    np.testing.assert_allclose(layer.scale[1:], (PX, PX), rtol=1e-5)
    np.testing.assert_allclose(layer.metadata["napari_aet"]["angles"], sim.tilt_series.angles, atol=1e-4)
    assert "projections" in w.status.text() and "0.357 Å/px" in w.status.text()  # 4 significant digits
    # the path is remembered for the next session
    assert str(dock(make_napari_viewer(), "Load tilt series").path.value) == str(tmp_path / "tilts.mrc")
    # a RESIRE/GENFIRE MATLAB stack [x, y, projection] with Z-Y-X angles reads as the same series
    import scipy.io

    t = np.asarray(sim.tilt_series.angles)
    scipy.io.savemat(tmp_path / "resire.mat", {"projections": sim.tilt_series.data.transpose(2, 1, 0)})
    np.savetxt(tmp_path / "resire_angles.txt", np.c_[np.zeros(len(t)), -t, np.zeros(len(t))])
    w.path.value = str(tmp_path / "resire.mat")
    w.angles.value = str(tmp_path / "resire_angles.txt")
    w.pixel_size.value = PX
    w.layout_box.value = "[x, y, projection] (RESIRE/GENFIRE MATLAB)"
    w.convention.value = "zyx"
    w.run_button.click()
    qtbot.waitUntil(lambda: "resire" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    np.testing.assert_array_equal(viewer.layers["resire"].data, sim.tilt_series.data)


def test_align_widget_recovers_shifts(dock, open_tilts, make_napari_viewer, qtbot, tmp_path):
    from napari_aet.core.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(size=1.5, n_voxels=56, tilt_range=60, tilt_step=10, seed=94, shift_error=2.0))
    viewer = make_napari_viewer()
    raw = open_tilts(viewer, sim.tilt_series, tmp_path, "raw").name
    w = dock(viewer, "Align")
    w.method.value = "projection-matching"
    w.rounds.value = 3
    w.refine_angles.value = False
    w.device.value = "cpu"
    w.run_button.click()
    qtbot.waitUntil(lambda: f"{raw} (aligned)" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    got = np.asarray(viewer.layers[f"{raw} (aligned)"].metadata["napari_aet"]["alignment"]["shifts_px"])
    err = (got - got.mean(0)) - (sim.shifts - sim.shifts.mean(0))  # the common shift is unobservable
    assert np.abs(sim.shifts).max() > 1.5 and np.abs(err).max() < 0.3
    # and the aligned series must reconstruct better than the raw one
    from napari_aet.core.metrics import match_atoms
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.trace import trace_atoms

    def recall(data):
        vol = reconstruct(np.asarray(data), sim.tilt_series.angles, PX, iterations=60, device="cpu").volume
        return match_atoms(trace_atoms(vol, PX).atoms[["x", "y", "z"]].to_numpy(), sim.particle.positions).recall

    assert recall(viewer.layers[f"{raw} (aligned)"].data) >= max(0.95, recall(viewer.layers[raw].data))


def test_enhance_widget_adds_enhanced_tomogram_and_fourier_views(dock, make_napari_viewer, qtbot, small_case):
    from napari_aet._layers import volume_layer
    from napari_aet.core.io import Volume
    from napari_aet.core.metrics import normalized_error

    sim, rec = small_case
    viewer = make_napari_viewer()
    from napari_aet._layers import tilt_series_layer

    _add(viewer, tilt_series_layer(sim.tilt_series, name="tilts"))
    data, kwargs, kind = volume_layer(Volume(rec, PX), name="tomogram (resire)")
    kwargs["metadata"]["napari_aet"].update(tilt_range=60.0, tilt_series="tilts")
    _add(viewer, (data, kwargs, kind))
    w = dock(viewer, "Enhance (U-Net)")
    w.device.value = "cpu"
    w.tile.value = 48  # two tiles a side: eight steps of progress
    messages = []
    w.relay.progressed.connect(lambda done, total, message: messages.append(message))
    w.run_button.click()
    qtbot.waitUntil(lambda: "tomogram (resire) enhanced" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    out = viewer.layers["tomogram (resire) enhanced"]
    src = viewer.layers["tomogram (resire)"]
    np.testing.assert_allclose(out.scale, src.scale)
    np.testing.assert_allclose(out.translate, src.translate)
    assert normalized_error(out.data, sim.ideal.data) < 0.9 * normalized_error(rec, sim.ideal.data)
    # Fourier intensity before and after, the wedge marked: in their own viewer (1/Å), none in
    # the main one (Å)
    from napari_aet._qt.side import find_side_viewer

    fourier = find_side_viewer(w, "fourier")
    four = fourier.layers["tomogram (resire) |F|² (log)"]
    wedge = fourier.layers["missing wedge (±60°)"]
    assert four.data.shape == rec.shape and wedge.data.shape == rec.shape
    np.testing.assert_allclose(four.scale, 1 / (56 * PX), rtol=1e-6)
    assert "tomogram (resire) enhanced |F|² (log)" in fourier.layers
    assert not any("|F|" in layer.name or "wedge" in layer.name for layer in viewer.layers)
    assert [str(u) for u in fourier.layers.extent.units] == ["1 / angstrom"] * 3
    # progress tile by tile, and the data-consistency check the command line prints
    tiles = [m for m in messages if m.startswith("enhancing: tile")]
    assert tiles[0] == "enhancing: tile 1 of 8 done" and tiles[-1] == "enhancing: tile 8 of 8 done"
    assert any(m.startswith("checking the enhanced tomogram") for m in messages)
    assert "re-projection R against tilts" in w.status.text() and "tolerance" in w.status.text()
    assert out.metadata["napari_aet"]["consistency"]["network_accepted"] in (True, False)
    # the enhanced tomogram is never offered as input by default
    assert w.layer_box.value == "tomogram (resire)"


def test_fourier_view_marks_the_wedge_where_sirt_has_no_data(dock, open_tilts, make_napari_viewer, qtbot, small_case,
                                                             tmp_path):
    """SIRT (no positivity) leaves the wedge empty: the marked region must be the dark one."""
    from napari_aet.core.fourier import frequency_grids

    sim, _ = small_case
    viewer = make_napari_viewer()
    open_tilts(viewer, sim.tilt_series, tmp_path, "tilts")
    w = dock(viewer, "Reconstruct")
    w.method.value = "sirt"
    w.show_fourier.value = True
    w.device.value = "cpu"
    w.run_button.click()
    from napari_aet._qt.side import find_side_viewer

    qtbot.waitUntil(lambda: "tomogram (sirt)" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    fourier = find_side_viewer(w, "fourier")
    four = fourier.layers["tomogram (sirt) |F|² (log)"].data
    wedge = fourier.layers["missing wedge (±60°)"].data == 1
    kz, ky, kx = frequency_grids(four.shape)
    shell = (np.sqrt(kz**2 + ky**2 + kx**2) > 0.15) & (np.sqrt(kz**2 + ky**2 + kx**2) < 0.45)
    assert four[shell & wedge].mean() < 0.8 * four[shell & ~wedge].mean()
    # the wedge drawn as lines in the k_x-k_z plane, the plane the Fourier viewer shows: every
    # point just inside the lines' wedge is dark, just outside is measured
    lines = fourier.layers["wedge edges (±60°)"]
    assert lines.shape_type == ["line", "line"] and fourier.dims.order[:1] == (1,)
    four_layer = fourier.layers["tomogram (sirt) |F|² (log)"]
    _, (kz1, _, kx1) = lines.data[0]
    slope = abs(kz1 / kx1)
    assert slope == pytest.approx(np.tan(np.deg2rad(60.0)), rel=1e-6)
    k = np.linspace(0.3, 0.7, 5) * abs(kx1)
    inside = np.stack([slope * k * 1.3, 0 * k, k], 1)  # steeper than the edge: the wedge
    outside = np.stack([slope * k * 0.7, 0 * k, k], 1)

    def idx(points):  # world (1/Å) -> voxel indices of the Fourier volume
        return tuple(np.round((points - four_layer.translate) / four_layer.scale).astype(int).T)

    assert wedge[idx(inside)].all() and not wedge[idx(outside)].any()
    assert four[idx(inside)].mean() < four[idx(outside)].mean()
    # the main viewer keeps only Å layers: no unit warning, the scale bar in Å
    assert [str(u) for u in viewer.layers.extent.units] == ["angstrom"] * 3
    assert viewer.layers["tomogram (sirt)"].metadata["napari_aet"]["tilt_range"] == pytest.approx(60.0)


def test_analyze_widget_colours_atoms_and_shows_layer_displacements(dock, make_napari_viewer, qtbot):
    from napari_aet._layers import FACET_COLOURS, FCC_COLOURS
    from napari_aet._qt.base import layer_table
    from napari.utils.colormaps.standardize_color import transform_color

    viewer = make_napari_viewer()
    _, truth = _sample_atoms(viewer)
    true_fcc = truth.features["fcc"].to_numpy().copy()
    w = dock(viewer, "Analyze")
    assert w.layer_box.value == truth.name
    w.run_button.click()
    qtbot.waitUntil(lambda: "displacement" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    feats = truth.features
    assert (feats["fcc"].to_numpy() == true_fcc).mean() >= 0.99
    blue, black = transform_color(FCC_COLOURS[1])[0], transform_color(FCC_COLOURS[0])[0]
    fcc = feats["fcc"].to_numpy() == 1
    np.testing.assert_allclose(truth.face_color[fcc], np.tile(blue, (fcc.sum(), 1)), atol=1e-6)
    if (~fcc).any():
        np.testing.assert_allclose(truth.face_color[~fcc], np.tile(black, ((~fcc).sum(), 1)), atol=1e-6)
    # facets: {100} red, {111} blue
    w.colour_by.value = "facet"
    f100 = (feats["facet"] == "100").to_numpy()
    assert f100.any()
    np.testing.assert_allclose(truth.face_color[f100][0], transform_color(FACET_COLOURS["100"])[0], atol=1e-6)
    # layers: neighbouring layers get different colours, atoms of one layer the same
    w.colour_by.value = "layer"
    lay = feats["layer"].to_numpy()
    k = int(np.nanmedian(lay.astype(float)))
    same = truth.face_color[lay == k]
    assert np.allclose(same, same[0]) and not np.allclose(truth.face_color[lay == k + 1][0], same[0])
    assert not truth.face_colorbar.visible
    # a strain component: diverging map in %, round limits symmetric about zero, colour bar
    # shown and labelled with the component and its unit
    w.colour_by.value = "exy"
    lo, hi = truth.face_contrast_limits
    assert lo == -hi and hi > 0 and truth.face_colorbar.visible
    assert truth.face_colormap.name == "RdBu_r"
    np.testing.assert_allclose(truth.features["ε_xy (%)"], 100 * feats["exy"])
    assert float(f"{hi:.0e}") == pytest.approx(hi)  # one significant digit: ticks at round values
    assert hi >= np.nanpercentile(np.abs(100 * feats["exy"]), 99)
    label = viewer.canvas.overlays.text
    assert label.visible and label.text.endswith("ε_xy (%)")
    assert "ε_xy (%)" not in layer_table(truth)  # display only: never exported
    # per-layer displacement arrows: the slider picks the layer; the scale is chosen from the
    # data (the median arrow about half the nearest-neighbour distance)
    vec = viewer.layers["displacement"]
    factor = w.exaggeration_value()
    assert w.exaggeration.value == 0 and f"× {factor:g}, auto" in w.layer_label.value
    nn = truth.metadata["napari_aet"]["analysis"]["lattice"]["lattice_constant"] / np.sqrt(2)
    for index in (w.layer_slider.min + 1, w.layer_slider.max - 1):
        w.layer_slider.value = index
        sel = (feats["layer"] == index).to_numpy() & np.isfinite(feats["ux"].to_numpy())
        assert len(vec.data) == sel.sum() > 0
        assert set(vec.features["layer"]) == {index}
        lengths = np.linalg.norm(vec.data[:, 1], axis=1)
        np.testing.assert_allclose(lengths, vec.features["magnitude"] * factor, rtol=1e-6)
        np.testing.assert_allclose(viewer.layers["displacement slice"].data, vec.data[:, 0])  # the slice in 3D
    median = np.nanmedian(np.linalg.norm(feats[["ux", "uy", "uz"]].to_numpy(float), axis=1)) * factor
    assert 0.25 * nn < median < 1.0 * nn
    assert "on f.c.c. sites" in w.status.text()


def test_facet_and_strain_layers_and_one_layer_face_on(dock, make_napari_viewer, qtbot):
    """Facets and each strain component as their own layers; a layer's displacements face-on in
    2D (own viewer, in-plane Å), the 3D view turned to look down the layers."""
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_aet._layers import FACET_COLOURS, layer_frame
    from napari_aet._qt.side import find_side_viewer

    viewer = make_napari_viewer()
    _, truth = _sample_atoms(viewer)
    viewer.dims.ndisplay = 3
    w = dock(viewer, "Analyze")
    w.run_button.click()
    qtbot.waitUntil(lambda: "displacement" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    feats = truth.features
    facets = viewer.layers[f"{truth.name}: facets"]
    on_facet = (feats["facet"].fillna("").astype(str) != "").to_numpy()
    assert not facets.visible and len(facets.data) == on_facet.sum() > 0
    np.testing.assert_allclose(facets.data, truth.data[on_facet])
    is111 = (facets.features["facet"] == "111").to_numpy()
    np.testing.assert_allclose(facets.face_color[is111], np.tile(transform_color(FACET_COLOURS["111"])[0],
                                                                  (is111.sum(), 1)), atol=1e-6)
    for comp, label in (("exx", "ε_xx (%)"), ("eyy", "ε_yy (%)"), ("ezz", "ε_zz (%)"), ("exy", "ε_xy (%)"),
                        ("exz", "ε_xz (%)"), ("eyz", "ε_yz (%)")):
        layer = viewer.layers[f"{truth.name}: {label}"]
        finite = np.isfinite(feats[comp].to_numpy(float))
        np.testing.assert_allclose(layer.features[label], 100 * feats[comp].to_numpy(float)[finite])
        lo, hi = layer.face_contrast_limits
        assert lo == -hi > -np.inf and layer.face_colormap.name == "RdBu_r" and not layer.visible
        hot, cold = np.argmax(layer.features[label]), np.argmin(layer.features[label])
        assert layer.face_color[hot][0] > layer.face_color[hot][2]  # positive red, negative blue
        assert layer.face_color[cold][2] > layer.face_color[cold][0]
    # the 3D camera looks along the layers' normal
    lattice = truth.metadata["napari_aet"]["analysis"]["lattice"]
    frame = layer_frame(lattice, "001")
    np.testing.assert_allclose(viewer.scene.camera.view_direction, -frame[2], atol=1e-4)
    # one layer face-on in 2D: the slice's atoms in the layer's own in-plane axes (Å)
    w.face_on_button.native.click()
    side = find_side_viewer(w, "layer")
    k = w.layer_slider.value
    atoms = side.layers[f"layer {k} atoms"]
    slice_pts = viewer.layers["displacement slice"].data
    np.testing.assert_allclose(atoms.data, slice_pts @ frame[:2].T, atol=1e-9)
    assert side.dims.ndisplay == 2 and [str(u) for u in side.layers.extent.units] == ["angstrom"] * 2
    (arrows,) = [layer for layer in side.layers if layer.name.startswith(f"layer {k} in-plane")]
    inplane = np.linalg.norm(arrows.data[:, 1], axis=1) / w.exaggeration_value()
    np.testing.assert_allclose(inplane**2 + arrows.features["u_normal"] ** 2, arrows.features["magnitude"] ** 2,
                               atol=1e-9)
    w.layer_slider.value = k + 1  # the face-on view follows the slider
    assert f"layer {k + 1} atoms" in side.layers and f"layer {k} atoms" not in side.layers


def test_a_session_keeps_one_unit_and_the_scale_bar_in_angstrom(dock, make_napari_viewer, qtbot, monkeypatch):
    """Sample (tilt series, tomogram, atoms), analysis (arrows, slice, facet and strain layers):
    every layer the project adds is in Å, so napari never warns about inconsistent units and
    its scale bar keeps the Å unit."""
    import napari._vispy.canvas as vispy_canvas

    warned = []
    monkeypatch.setattr(vispy_canvas, "show_warning", lambda message, *a, **k: warned.append(message))
    viewer = make_napari_viewer(show=True)
    _sample_atoms(viewer)
    viewer.canvas.overlays.scale_bar.visible = True
    w = dock(viewer, "Analyze")
    w.run_button.click()
    qtbot.waitUntil(lambda: "displacement" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    viewer.dims.ndisplay = 3
    qtbot.wait(200)  # napari checks the units when it draws
    assert len(viewer.layers) >= 12
    assert all([str(u) for u in layer.units] == ["angstrom"] * layer.ndim for layer in viewer.layers)
    assert [str(u) for u in viewer.layers.units] == ["angstrom"] * 3
    assert not [m for m in warned if "Inconsistent units" in str(m)]


@pytest.fixture
def never_ask_on_close(monkeypatch):
    """Whatever a test leaves behind, closing its viewers must not wait on a modal question."""
    yield
    from qtpy.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)


def test_manual_edits_undo_autosave_and_restore(dock, make_napari_viewer, never_ask_on_close, qtbot, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_aet.core.io import read_atoms

    viewer = make_napari_viewer()
    ideal, truth = _sample_atoms(viewer)
    n = len(truth.data)
    w = dock(viewer, "Correct atoms")
    w.tomogram_box.value = ideal.name
    assert w.layer_box.value == truth.name and not w.undo_button.isEnabled()
    # drag one atom 0.64 Å within its slice (two drag events: one undo step), then refine it
    # back onto the intensity maximum
    true_pos = truth.data[10].copy()
    truth._move({10}, true_pos)
    truth._move({10}, true_pos + np.array([0.0, -0.3, 0.2]))
    truth._move({10}, true_pos + np.array([0.0, -0.5, 0.4]))
    truth._drag_start = None
    assert np.linalg.norm(truth.data[10] - true_pos) > 0.5
    assert truth.features["edited"].iloc[10] == 1
    saved, _ = read_atoms(w.store.atoms_path)
    np.testing.assert_allclose(saved[["z", "y", "x"]].to_numpy()[10], truth.data[10], atol=1e-9)
    w.refine_button.click()
    assert np.linalg.norm(truth.data[10] - true_pos) < 0.05
    w.undo_button.click()  # undoes the refinement
    w.undo_button.click()  # undoes the whole drag
    np.testing.assert_allclose(truth.data[10], true_pos)
    w.redo_button.click()
    w.redo_button.click()
    assert np.linalg.norm(truth.data[10] - true_pos) < 0.05
    # add an atom, delete another; each is one undoable step, each autosaved
    truth.add(np.array([[0.0, 0.0, 30.0]]))
    assert len(truth.data) == n + 1 and truth.features["edited"].iloc[-1] == 1
    truth.selected_data = {0}
    truth.remove_selected()
    assert len(read_atoms(w.store.atoms_path)[0]) == n
    w.undo_button.click()
    assert len(truth.data) == n + 1
    w.undo_button.click()
    assert len(truth.data) == n
    w.redo_button.click()
    assert len(truth.data) == n + 1
    assert len(read_atoms(w.store.atoms_path)[0]) == n + 1
    edited = truth.data.copy()
    # closing with unexported edits asks; "No" keeps the window open
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(1) or QMessageBox.StandardButton.No)
    viewer.window._qt_window.show()
    viewer.window._qt_window.close()
    assert asked and viewer.window._qt_window.isVisible()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    viewer.close()
    # a new viewer restores the edits from the session folder
    viewer2 = make_napari_viewer()
    w2 = dock(viewer2, "Correct atoms")
    assert w2.restore_button.isEnabled() and "autosaved" in w2.status.text()
    w2.restore_button.click()
    restored = viewer2.layers[truth.name]
    np.testing.assert_allclose(restored.data, edited, atol=1e-9)
    assert restored.features["edited"].sum() >= 2
    w2.store.mark_exported("test")  # lets the fixture close the viewer without asking


def test_adding_an_atom_on_the_tomogram_plane_in_3d(dock, make_napari_viewer, never_ask_on_close):
    from types import SimpleNamespace


    viewer = make_napari_viewer()
    ideal, truth = _sample_atoms(viewer)
    viewer.dims.ndisplay = 3
    w = dock(viewer, "Correct atoms")
    w.tomogram_box.value = ideal.name
    w.add_on_plane.value = True
    assert ideal.depiction == "plane" and truth.mode == "pan_zoom"
    ideal.plane.position = (80.0, 72.0, 72.0)  # data (voxel) coordinates; normal along z
    plane_z = 80.0 * ideal.scale[0] + ideal.translate[0]
    n = len(truth.data)
    event = SimpleNamespace(position=(40.0, 3.0, -2.0), view_direction=(-1.0, 0.2, 0.1), dims_displayed=[0, 1, 2],
                            handled=False, type="mouse_press", modifiers=())
    for callback in truth.mouse_drag_callbacks:
        if getattr(callback, "func", None) is not None:
            callback(truth, event)
    assert len(truth.data) == n + 1 and event.handled
    z, y, x = truth.data[-1]
    assert z == pytest.approx(plane_z)
    t = (plane_z - 40.0) / -1.0
    assert (y, x) == pytest.approx((3.0 + 0.2 * t, -2.0 + 0.1 * t))
    assert truth.features["edited"].iloc[-1] == 1 and w.store.unexported
    w.add_on_plane.value = False
    assert ideal.depiction == "volume"


def test_figures_rendering_maps_and_export(dock, make_napari_viewer, never_ask_on_close, qtbot, tmp_path, monkeypatch):
    from PIL import Image
    from qtpy.QtWidgets import QMessageBox


    viewer = make_napari_viewer(show=True)  # an unshown canvas renders nothing
    _, truth = _sample_atoms(viewer)
    viewer.layers["Pt tilt series (simulated)"].visible = False
    viewer.dims.ndisplay = 3
    a = dock(viewer, "Analyze")
    a.run_button.click()
    qtbot.waitUntil(lambda: "displacement" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    f = dock(viewer, "Figures & export")
    f.folder.value = str(tmp_path / "figs")
    f.width.value = 640
    f.height.value = 480
    f.background.value = "white"
    f.run_button.click()
    assert (tmp_path / "figs" / "rendering.png").exists(), f.status.text()
    img = np.asarray(Image.open(tmp_path / "figs" / "rendering.png"))
    assert img.shape[:2] == (480, 640)
    rgb = img[..., :3].astype(float)
    assert rgb.std() > 5  # not blank
    assert (rgb.min(-1) > 250).mean() > 0.3  # a white background around the particle
    assert (rgb.max(-1) < 150).mean() > 0.005  # dark (blue/black) atoms drawn
    assert viewer.canvas.background_color_override is None  # the viewer is left as it was
    assert f.status.text().endswith("scale bar in Å")  # every layer in Å: the bar keeps its unit
    f.component.value = "ezz"
    f.vector_format.value = "pdf"
    f.maps_button.native.click()
    for ext in ("png", "pdf"):
        assert (tmp_path / "figs" / f"layers_ezz.{ext}").stat().st_size > 1000, f.status.text()
    # an edit makes closing ask; exporting the atoms clears it
    # the correction's session lives where NAPARI_AET_HOME pointed when it opened; move the
    # default elsewhere, so that marking a fresh Session() as exported would not count
    monkeypatch.setenv("NAPARI_AET_HOME", str(tmp_path / "own-home"))
    c = dock(viewer, "Correct atoms")
    monkeypatch.setenv("NAPARI_AET_HOME", str(tmp_path / "elsewhere"))
    truth.add(np.array([[0.0, 0.0, 30.0]]))
    assert c.store.unexported
    f.atoms_button.native.click()
    assert (tmp_path / "figs" / "Pt_atoms_(ground_truth).csv").exists(), f.status.text()
    assert not c.store.unexported
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: pytest.fail("asked although exported"))
    viewer.close()


def test_movie_is_rendered_step_by_step_with_progress_and_cancel(dock, make_napari_viewer, qtbot, tmp_path):
    """The movie never blocks the GUI thread: frames come one per event-loop turn, the progress
    bar counts them, Cancel stops it and leaves no file."""
    pytest.importorskip("imageio_ffmpeg")
    viewer = make_napari_viewer()
    _sample_atoms(viewer)
    f = dock(viewer, "Figures & export")
    f.folder.value = str(tmp_path / "figs")
    messages = []
    start = tuple(viewer.scene.camera.angles)
    f.save_movie(frames=6, fps=6)
    f._recorder.progressed.connect(lambda done, total, message: messages.append((done, total, message)))
    assert f.cancel_button.isEnabled() and not f.movie_button.enabled
    assert not (tmp_path / "figs" / "rotation.mp4").exists()  # returned at once: nothing rendered yet
    qtbot.waitUntil(lambda: f.status.text().startswith("saved"), timeout=STEP_TIMEOUT_MS)
    assert [m[0] for m in messages] == [1, 2, 3, 4, 5, 6] and messages[-1][2] == "movie: frame 6 of 6"
    assert f.bar.value() == 6 and f.bar.maximum() == 6
    assert (tmp_path / "figs" / "rotation.mp4").stat().st_size > 1000
    assert tuple(viewer.scene.camera.angles) == pytest.approx(start)
    assert f.movie_button.enabled and not f.cancel_button.isEnabled()
    # cancel after the first frame: no file, the view restored
    (tmp_path / "figs" / "rotation.mp4").unlink()
    f.save_movie(frames=50, fps=6)
    f._recorder.progressed.connect(lambda done, total, message: done == 1 and f.cancel_button.click())
    qtbot.waitUntil(lambda: "cancelled" in f.status.text(), timeout=STEP_TIMEOUT_MS)
    assert not any((tmp_path / "figs").glob("*rotation.mp4"))
    assert tuple(viewer.scene.camera.angles) == pytest.approx(start)


def test_settings_are_remembered(dock, make_napari_viewer):

    viewer = make_napari_viewer()
    w = dock(viewer, "Reconstruct")
    w.iterations.value = 37
    w.method.value = "sirt"
    w.run_button.click()  # no tilt series: says so, but remembers the settings
    assert "no tilt series" in w.status.text()
    w2 = dock(make_napari_viewer(), "Reconstruct")
    assert w2.iterations.value == 37 and w2.method.value == "sirt"


def test_reanalyse_flags_an_added_interstitial(dock, make_napari_viewer, never_ask_on_close, qtbot):
    """An atom added by hand between lattice sites comes out 'not f.c.c.' after Re-analyse; the
    others keep their assignment; the step is undoable."""

    viewer = make_napari_viewer()
    _, truth = _sample_atoms(viewer)
    n = len(truth.data)
    w = dock(viewer, "Correct atoms")
    # an octahedral interstitial: half a lattice vector from an interior atom along a cube axis
    feats = truth.features
    inner = np.flatnonzero((feats["surface"] == 0).to_numpy())
    centre = truth.data[inner].mean(0)
    i = inner[np.argmin(np.linalg.norm(truth.data[inner] - centre, axis=1))]
    rot = np.asarray(truth.metadata["napari_aet"]["atoms_metadata"]["crystal_rotation"])  # crystal -> sample (x, y, z)
    a = float(truth.metadata["napari_aet"]["atoms_metadata"]["lattice_constant"])
    step_xyz = rot @ np.array([a / 2, 0.0, 0.0])
    fcc_truth = feats["fcc"].to_numpy().copy()  # the sample's own off-site atoms are not on f.c.c. sites
    assert 0 < (fcc_truth == 0).sum() < 0.05 * n
    truth.add(truth.data[i] + step_xyz[::-1])
    w.run_button.click()
    qtbot.waitUntil(lambda: "re-analysed" in w.status.text(), timeout=STEP_TIMEOUT_MS)
    fcc = truth.features["fcc"].to_numpy()
    assert len(fcc) == n + 1 and fcc[-1] == 0
    assert (fcc[:n] == fcc_truth).mean() >= 0.99
    w.undo_button.click()  # back to before the analysis: the added atom still there
    assert len(truth.data) == n + 1


def test_reanalyse_refreshes_the_facet_and_strain_layers(dock, make_napari_viewer, never_ask_on_close, qtbot):
    """The layers Analyze made (facets, each strain component) follow a re-analysis after a
    correction, keeping what the user showed or hid."""
    from .conftest import run_step

    viewer = make_napari_viewer()
    _, truth = _sample_atoms(viewer)
    an = dock(viewer, "Analyze")
    assert an.layer_box.value == truth.name  # the only atoms there are
    run_step(qtbot, an)
    facets, exx = viewer.layers[f"{truth.name}: facets"], viewer.layers[f"{truth.name}: ε_xx (%)"]
    exx.visible = True
    n_facets = len(facets.data)
    w = dock(viewer, "Correct atoms")
    assert w.layer_box.value == truth.name
    surface = np.flatnonzero(truth.features["facet"].fillna("").astype(str).to_numpy() != "")
    truth.selected_data = set(surface[:20].tolist())  # remove 20 surface atoms by hand
    truth.remove_selected()
    run_step(qtbot, w)
    facets, exx = viewer.layers[f"{truth.name}: facets"], viewer.layers[f"{truth.name}: ε_xx (%)"]
    assert len(facets.data) != n_facets and exx.visible and not facets.visible
    assert len(exx.data) == np.isfinite(truth.features["exx"].to_numpy(float)).sum()

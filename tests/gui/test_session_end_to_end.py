"""One whole session in one real napari window, the way a microscopist works: the sample from
File > Open Sample, every step docked from Plugins > napari AET and driven through its form
(set the inputs, press the button, wait for the worker, read the layers), manual correction
with undo, autosave and restore after closing, figures and export, and a clean close.

Screenshots of the window after each step go to ``$NAPARI_AET_SCREENSHOTS`` when it is set
(``docs/screenshots`` is made this way: ``NAPARI_AET_SCREENSHOTS=docs/screenshots bash
scripts/test.sh tests/gui/test_session_end_to_end.py``), otherwise to a temporary folder, and
are checked for size and content either way.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_step

pytestmark = pytest.mark.gui


def _dock(viewer, name):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-aet", name)
    assert type(widget.viewer).__name__ == "PublicOnlyProxy"  # what napari hands a plugin
    return widget


def _shot(viewer, folder: Path, name: str, qtbot):
    from PIL import Image

    qtbot.wait(50)
    img = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    assert img.shape[0] > 300 and img.shape[1] > 500 and img[..., :3].std() > 5, name  # a real, non-blank window
    Image.fromarray(img).save(folder / f"{name}.png")


def test_whole_session_through_napari(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_aet.core import io
    from napari_aet.core.metrics import match_atoms

    shots = Path(os.environ.get("NAPARI_AET_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("NAPARI_AET_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1920, 1080)  # the screen a person has
    tilts, ideal, truth = viewer.open_sample("napari-aet", "pt_nanoparticle")
    ideal.visible = truth.visible = False
    _shot(viewer, shots, "01_sample", qtbot)

    align = _dock(viewer, "Align")
    align.layer_box.value = tilts.name
    align.method.value = "com"
    align.refine_angles.value = False
    align.device.value = "cpu"
    run_step(qtbot, align)
    assert f"{tilts.name} (aligned)" in viewer.layers
    aligned = viewer.layers[f"{tilts.name} (aligned)"]
    _shot(viewer, shots, "02_align", qtbot)

    rec = _dock(viewer, "Reconstruct")
    assert rec.layer_box.value == aligned.name  # the step's input follows the previous step's output
    rec.iterations.value = 60
    rec.show_fourier.value = False  # the Fourier window has its own test (test_workbench)
    rec.device.value = "cpu"
    run_step(qtbot, rec)
    assert "tomogram (resire)" in viewer.layers
    tomo = viewer.layers["tomogram (resire)"]
    np.testing.assert_allclose(tomo.scale, ideal.scale, rtol=1e-6)  # Å, the sample's voxel size
    aligned.visible = False
    _shot(viewer, shots, "03_reconstruct", qtbot)

    enh = _dock(viewer, "Enhance (U-Net)")
    assert enh.layer_box.value == tomo.name
    enh.device.value = "cpu"
    run_step(qtbot, enh)
    assert f"{tomo.name} enhanced" in viewer.layers
    enhanced = viewer.layers[f"{tomo.name} enhanced"]
    tomo.visible = False
    _shot(viewer, shots, "04_enhance", qtbot)

    tr = _dock(viewer, "Trace atoms")
    assert tr.layer_box.value == enhanced.name  # not the sample's ideal (ground-truth) tomogram
    assert tr.refine_against.value == aligned.name  # refined against the aligned series by default, as run does
    tr.device.value = "cpu"
    run_step(qtbot, tr)
    assert "traced atoms" in viewer.layers
    atoms = viewer.layers["traced atoms"]
    refinement = atoms.metadata["napari_aet"]["atoms_metadata"]["refinement"]
    assert refinement["r_factor_after"] < refinement["r_factor_before"]
    is_atom = atoms.features["atom"].to_numpy() == 1
    m = match_atoms(atoms.data[is_atom][:, ::-1], truth.data[:, ::-1])
    assert m.recall > 0.97 and m.precision > 0.97, (m.recall, m.precision)
    _shot(viewer, shots, "05_trace", qtbot)

    an = _dock(viewer, "Analyze")
    assert an.layer_box.value == atoms.name  # not the sample's ground-truth atoms
    run_step(qtbot, an)
    assert "displacement" in viewer.layers and "fcc" in viewer.layers["traced atoms"].features
    atoms = viewer.layers["traced atoms"]
    assert atoms.features["fcc"].mean() > 0.9
    viewer.dims.ndisplay = 3
    enhanced.visible = False
    _shot(viewer, shots, "06_analyze", qtbot)

    # manual correction: add, move, delete, undo; every edit autosaved
    corr = _dock(viewer, "Correct atoms")
    assert corr.layer_box.value == atoms.name
    n0 = len(atoms.data)
    atoms.add(np.array([[0.0, 0.0, 40.0]]))
    assert len(atoms.data) == n0 + 1 and corr.store.unexported
    moved = atoms.data.copy()
    moved[0] += 0.5
    atoms.data = moved
    atoms.selected_data = {1}
    atoms.remove_selected()
    assert len(atoms.data) == n0
    corr.undo()
    assert len(atoms.data) == n0 + 1
    saved, _ = io.read_atoms(corr.store.atoms_path)
    assert len(saved) == n0 + 1  # the autosave follows every edit, undo included
    _shot(viewer, shots, "07_correct", qtbot)

    fig = _dock(viewer, "Figures & export")
    fig.folder.value = str(tmp_path / "figs")
    fig.width.value = 800
    fig.height.value = 600
    assert fig.layer_box.value == atoms.name
    fig.run_button.click()
    assert (tmp_path / "figs" / "rendering.png").exists(), fig.status.text()
    fig.component.value = "exx"
    fig.maps_button.native.click()
    assert (tmp_path / "figs" / "layers_exx.png").exists(), fig.status.text()
    # the reference work's figures, one click, rendered in a worker thread as 'run' renders them
    fig.paper_figure.value = "all"
    run_step(qtbot, fig, fig.paper_button.native.click)
    assert (tmp_path / "figs" / "fourier_3d.png").exists(), fig.status.text()
    from PIL import Image

    from napari_aet.core.figures import FCC_COLOURS, REFERENCE_FIGURES

    for key in REFERENCE_FIGURES:
        with Image.open(tmp_path / "figs" / f"{key}.png") as im:
            rgb = np.asarray(im.convert("RGB")).astype(int)
        assert rgb.shape[1] > 900 and rgb.std() > 20, key  # 300 dpi, not blank
    with Image.open(tmp_path / "figs" / "a_particle_on_support.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    blue = np.array([int(FCC_COLOURS[1][i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.linalg.norm(rgb - blue, axis=-1) < 60).mean() > 0.05  # atoms on f.c.c. sites in the reference's blue
    fig.atoms_button.native.click()
    exported = tmp_path / "figs" / "traced_atoms.csv"
    table, _ = io.read_atoms(exported)
    assert len(table) == n0 + 1 and not corr.store.unexported
    _shot(viewer, shots, "08_figures", qtbot)

    # close (no prompt: exported), then a new window restores the autosaved session
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: pytest.fail("asked although exported"))
    viewer.close()
    viewer2 = make_napari_viewer()
    corr2 = _dock(viewer2, "Correct atoms")
    corr2.restore()
    restored = [l for l in viewer2.layers if l.name.startswith("traced atoms")]
    assert restored and len(restored[0].data) == n0 + 1
    corr2.store.mark_exported("test")

"""The workbench as a whole: all eight docks fit a 1080-px screen (tabbed, forms scrolling), and
each step's inputs default to what the previous step made, never to ground truth while
anything else exists (needs xvfb)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

WIDGETS = ["Load tilt series", "Align", "Reconstruct", "Enhance (U-Net)", "Trace atoms", "Analyze",
           "Correct atoms", "Figures & export"]


@pytest.fixture
def never_ask_on_close(monkeypatch):
    """Closing a viewer with a Correct atoms dock must not wait on a modal question."""
    yield
    from qtpy.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)


def test_all_docks_fit_a_1080_px_screen_as_tabs(dock, make_napari_viewer, never_ask_on_close, qtbot):
    from qtpy.QtWidgets import QDockWidget

    viewer = make_napari_viewer(show=True)
    widgets = [dock(viewer, name) for name in WIDGETS]
    window = widgets[0].window()  # the Qt main window, through Qt's parent chain
    window.resize(1920, 1080)
    qtbot.wait(50)  # the docks tab together once napari has placed them
    assert window.minimumSizeHint().height() <= 1000 and window.minimumHeight() <= 1000
    assert window.height() <= 1080
    docks = [w.parentWidget() for w in widgets]
    assert all(isinstance(d, QDockWidget) for d in docks)
    assert set(window.tabifiedDockWidgets(docks[0])) == set(docks[1:])
    assert all(w.minimumSizeHint().height() <= 300 for w in widgets)
    # the tallest form scrolls inside its dock rather than stretching the window
    load = widgets[0]
    assert load.scroll.widget().minimumSizeHint().height() > load.scroll.minimumSizeHint().height()
    h, w = viewer.screenshot(canvas_only=True, flash=False).shape[:2]
    assert h >= 700 and w >= 700  # the canvas keeps a usable size (was an 880-px-wide strip)


def _aligned(tilts):
    """The sample's tilt series as Align adds it (its own layer, the alignment recorded)."""
    from napari_aet._layers import tilt_series_layer
    from napari_aet.core.io import TiltSeries

    meta = tilts.metadata["napari_aet"]
    ts = TiltSeries(np.asarray(tilts.data), np.asarray(meta["angles"]), meta["pixel_size"])
    data, kwargs, kind = tilt_series_layer(ts, name=f"{tilts.name} (aligned)")
    kwargs["metadata"]["napari_aet"]["alignment"] = {"method": "projection-matching"}
    return data, kwargs, kind


def _tomogram(ideal, name, enhanced=False):
    """A tomogram layer as Reconstruct (or Enhance) adds it."""
    from napari_aet._layers import volume_layer
    from napari_aet.core.io import Volume

    data, kwargs, kind = volume_layer(Volume(np.asarray(ideal.data), 0.357), name=name)
    if enhanced:
        kwargs["metadata"]["napari_aet"]["enhanced"] = True
    return data, kwargs, kind


def test_inputs_follow_each_step_and_avoid_ground_truth(dock, make_napari_viewer, never_ask_on_close):
    from napari_aet._layers import atoms_layer
    from napari_aet._qt.base import layer_table
    from napari_aet._qt.trace import NO_REFINEMENT

    viewer = make_napari_viewer()
    tilts, ideal, truth = viewer.open_sample("napari-aet", "pt_nanoparticle")
    w = {name: dock(viewer, name) for name in WIDGETS[1:]}
    align, rec, enh, trace = w["Align"], w["Reconstruct"], w["Enhance (U-Net)"], w["Trace atoms"]
    atom_inputs = [w["Analyze"].layer_box, w["Correct atoms"].layer_box, w["Figures & export"].layer_box]
    # only the sample: ground truth is all there is to trace and analyse
    assert trace.layer_box.value == ideal.name and trace.refine_against.value == tilts.name
    assert [box.value for box in atom_inputs] == [truth.name] * 3
    assert w["Correct atoms"].tomogram_box.value == ideal.name

    align.add_layer(_aligned(tilts))  # Align's output
    aligned = f"{tilts.name} (aligned)"
    assert rec.layer_box.value == aligned
    assert list(trace.refine_against.choices) == [aligned, tilts.name, NO_REFINEMENT]
    assert trace.refine_against.value == aligned
    assert align.layer_box.value == tilts.name  # never re-align the aligned series by default

    rec.add_layer(_tomogram(ideal, "tomogram (resire)"))
    assert trace.layer_box.value == "tomogram (resire)" and enh.layer_box.value == "tomogram (resire)"
    assert list(trace.layer_box.choices) == ["tomogram (resire)", ideal.name]  # ground truth last
    assert w["Correct atoms"].tomogram_box.value == "tomogram (resire)"
    enh.add_layer(_tomogram(ideal, "tomogram (resire) enhanced", enhanced=True))
    assert trace.layer_box.value == "tomogram (resire) enhanced"
    assert enh.layer_box.value == "tomogram (resire)"  # Enhance's own output is never its input

    table = layer_table(truth)
    trace.add_layer(atoms_layer(table.iloc[:500], name="traced atoms", metadata={"refinement": None}))
    assert [box.value for box in atom_inputs] == ["traced atoms"] * 3
    assert [box.choices[-1] for box in atom_inputs] == [truth.name] * 3

    # a choice the user makes stays while unrelated layers come and go
    w["Analyze"].layer_box.value = truth.name
    rec.add_layer(_tomogram(ideal, "tomogram (sirt)"))
    assert w["Analyze"].layer_box.value == truth.name
    assert trace.layer_box.value == "tomogram (sirt)"  # the newest reconstruction
    # removing the traced atoms falls back to what is left
    viewer.layers.remove("traced atoms")
    assert w["Figures & export"].layer_box.value == truth.name


def test_a_ground_truth_input_is_said_in_the_status(dock, make_napari_viewer):
    """Right after opening the sample the only tomogram and atoms are its ground truth: the
    widgets take them (nothing else exists) and say so; a real result takes over silently."""
    import numpy as np

    from napari_aet._layers import volume_layer
    from napari_aet.core.io import Volume

    viewer = make_napari_viewer()
    viewer.open_sample("napari-aet", "pt_nanoparticle")
    tr, an = dock(viewer, "Trace atoms"), dock(viewer, "Analyze")
    assert "ground truth" in tr.status.text() and "ground truth" in an.status.text()
    data, kwargs, _ = volume_layer(Volume(np.zeros((8, 8, 8), np.float32), 0.357), name="tomogram (resire)")
    viewer.add_image(data, **kwargs)
    assert tr.layer_box.value == "tomogram (resire)" and "ground truth" not in tr.status.text()
    assert "ground truth" in an.status.text()  # still only the true atoms there

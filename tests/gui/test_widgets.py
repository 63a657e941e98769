"""The Reconstruct dock widget: thread worker, progress, cancel, layer in Å (needs xvfb)."""

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from .conftest import STEP_TIMEOUT_MS  # a bound for hangs only, never for speed

pytestmark = pytest.mark.gui


def _small_tilt_layer(viewer, folder):
    """A small simulated tilt series, opened from its file through napari-aet's reader."""
    from napari_aet.core.simulate import SimulationConfig, simulate

    from .conftest import open_tilt_series_file

    sim = simulate(SimulationConfig(size=1.5, n_voxels=56, tilt_step=10, seed=91))
    open_tilt_series_file(viewer, sim.tilt_series, folder, "tilts")
    return sim


def test_reconstruct_in_a_worker_adds_a_tomogram_in_angstrom(dock, make_napari_viewer, qtbot, tmp_path):
    from napari_aet.core.metrics import match_atoms
    from napari_aet.core.trace import local_maxima

    viewer = make_napari_viewer()
    sim = _small_tilt_layer(viewer, tmp_path)
    w = dock(viewer, "Reconstruct")
    assert w.layer_box.value == "tilts (tilt series)"
    w.iterations.value = 100
    w.device.value = "cpu"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    w.run_button.click()
    pbar = w.napari_progress
    seen = []
    timer.timeout.connect(lambda: pbar.n and seen.append(pbar.n))
    qtbot.waitUntil(lambda: any(l.name.startswith("tomogram") for l in viewer.layers), timeout=STEP_TIMEOUT_MS)
    qtbot.waitUntil(lambda: w.napari_progress is None, timeout=STEP_TIMEOUT_MS)  # napari's progress closed at the end
    assert seen and max(seen) <= 100 and pbar.total == 100
    timer.stop()
    assert len(ticks) > 3  # the event loop kept running during the reconstruction
    layer = viewer.layers["tomogram (resire)"]
    np.testing.assert_allclose(layer.scale, (0.357,) * 3)
    np.testing.assert_allclose(layer.translate, (-28 * 0.357,) * 3)
    xyz, _ = local_maxima(layer.data, 0.357)
    assert match_atoms(xyz, sim.particle.positions).recall >= 0.95
    assert w.bar.value() == 100 and "R =" in w.status.text()


def test_cancel_leaves_the_viewer_usable(dock, make_napari_viewer, qtbot, tmp_path):

    viewer = make_napari_viewer()
    _small_tilt_layer(viewer, tmp_path)
    w = dock(viewer, "Reconstruct")
    w.iterations.value = 5000
    w.device.value = "cpu"
    w.run_button.click()
    qtbot.waitUntil(lambda: w.bar.value() >= 2, timeout=STEP_TIMEOUT_MS)
    w.cancel_button.click()
    qtbot.waitUntil(lambda: w.run_button.isEnabled(), timeout=STEP_TIMEOUT_MS)
    assert w.status.text() == "cancelled"
    assert not any(l.name.startswith("tomogram") for l in viewer.layers)
    viewer.add_points(np.zeros((1, 3)))  # still usable
    assert len(viewer.layers) == 2


def test_trace_widget_on_the_ideal_tomogram(dock, make_napari_viewer, qtbot):
    from napari_aet.core.metrics import match_atoms

    viewer = make_napari_viewer()
    tilts, ideal, truth = viewer.open_sample("napari-aet", "pt_nanoparticle")
    w = dock(viewer, "Trace atoms")
    assert w.layer_box.value == "Pt ideal tomogram"
    w.run_button.click()
    qtbot.waitUntil(lambda: "traced atoms" in [l.name for l in viewer.layers], timeout=STEP_TIMEOUT_MS)
    pts = viewer.layers["traced atoms"]
    m = match_atoms(pts.data[:, ::-1], truth.data[:, ::-1])
    assert m.recall >= 0.998 and m.precision >= 0.998
    assert "intensity" in pts.features and "atoms" in w.status.text()

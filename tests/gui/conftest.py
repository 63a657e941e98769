"""GUI tests open widgets the way a user does: from Plugins > napari AET, which hands the
widget napari's viewer proxy, not the viewer itself."""

import pytest

# A bound for hangs only, never for speed: a step must not fail because a loaded 2-core machine
# is slow (speed belongs in benchmarks/). Tests wait on the worker's own end, not on a clock.
STEP_TIMEOUT_MS = 30 * 60 * 1000


def run_step(qtbot, widget, start=None) -> None:
    """Press ``widget``'s Run (or call ``start``) and wait until its worker has finished (the
    widget re-enables Run in the worker's ``finished`` slot, after the result is handled);
    fail with the widget's status line when the step reported an error."""
    (start or widget.run_button.click)()
    qtbot.waitUntil(widget.run_button.isEnabled, timeout=STEP_TIMEOUT_MS)
    assert not widget.status.text().startswith("error"), widget.status.text()


def dock_widget(viewer, name: str):
    """Dock the plugin's widget ``name`` through napari's plugin machinery and return it."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-aet", name)
    assert type(widget.viewer).__name__ == "PublicOnlyProxy"  # what napari hands a plugin
    return widget


@pytest.fixture
def dock():
    return dock_widget


def open_tilt_series_file(viewer, ts, folder, name: str):
    """Write ``ts`` as ``folder/name.mrc`` with its angles beside it and open it as a user
    does (File > Open, napari-aet's reader); return the layer."""
    from napari_aet.core.io import write_tilt_series

    path = folder / f"{name}.mrc"
    write_tilt_series(path, ts, write_angles_file=True)
    (layer,) = viewer.open(path, plugin="napari-aet")
    return layer


@pytest.fixture
def open_tilts():
    return open_tilt_series_file

"""Every dock widget opened the way *Plugins > napari AET* opens it.

napari hands a plugin widget a ``PublicOnlyProxy`` of the viewer, not the viewer itself; a
widget that reaches through it for Qt objects works when a test builds it directly and fails
from the menu. These tests go through napari's own plugin machinery.
"""

import pytest

from .conftest import STEP_TIMEOUT_MS  # a bound for hangs only, never for speed

pytestmark = pytest.mark.gui

WIDGETS = ["Load tilt series", "Align", "Reconstruct", "Enhance (U-Net)", "Trace atoms", "Analyze",
           "Correct atoms", "Figures & export"]


def test_manifest_lists_exactly_these_widgets():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    names = [w.display_name for w in pm.get_manifest("napari-aet").contributions.widgets]
    assert names == WIDGETS


@pytest.mark.parametrize("name", WIDGETS)
def test_widget_docks_from_the_plugin_menu(make_napari_viewer, qtbot, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-aet", name)
    assert widget is not None and dock.widget() is not None
    assert widget.window() is viewer.window._qt_window  # docked in the real main window
    # the widget was given napari's proxy, not the viewer: it must still work through it
    assert type(widget.viewer).__name__ == "PublicOnlyProxy"
    qtbot.wait(10)


def test_all_widgets_dock_together_and_close_cleanly(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-aet", "pt_nanoparticle")
    widgets = [viewer.window.add_plugin_dock_widget("napari-aet", n)[1] for n in WIDGETS]
    correction = widgets[WIDGETS.index("Correct atoms")]
    # the close guard sits on the real main window (found through Qt, not through the proxy)
    from napari_aet._qt.correction import _CloseGuard

    qtbot.waitUntil(lambda: correction.window().findChild(_CloseGuard) is not None, timeout=STEP_TIMEOUT_MS)
    assert len(correction.window().findChildren(_CloseGuard)) == 1
    viewer.close()


def test_errors_reach_napari_notifications(make_napari_viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-aet", "Load tilt series")
    (tmp_path / "empty.mrc").write_bytes(b"")
    w.path.value = str(tmp_path / "empty.mrc")
    before = len(notification_manager.records)
    w.run_button.click()
    qtbot.waitUntil(lambda: w.status.text().startswith("error"), timeout=STEP_TIMEOUT_MS)
    new = [str(n.message) for n in notification_manager.records[before:]]
    assert any("empty.mrc" in m and "empty" in m for m in new), new

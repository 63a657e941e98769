"""Side viewers: a second napari window beside the main one for views whose world is not the
sample's Å frame (the Fourier intensity in 1/Å, one atomic layer face-on in its own 2D
plane). Keeping them out of the main viewer keeps its layers in one unit (Å) and its scale
bar in Å; each has its own axes, units and camera. One side viewer per main window and
purpose; it closes with the main window.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject

_VIEWERS: dict = {}  # (id of the main window, key) -> napari.Viewer


class _CloseWith(QObject):
    """Closes the side viewers of a main window when it closes: napari's programmatic close
    (``viewer.close()``) closes the main QtViewer; a user's close hides the main window."""

    def __init__(self, owner, window_id: int):
        super().__init__(owner)  # Qt owns the filter, no Python reference to the window
        self.window_id = window_id

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        kind = event.type()
        if kind == QEvent.Type.Close or (kind == QEvent.Type.Hide and not obj.isVisible()):
            close_side_viewers(self.window_id)
        return False


class _Forget(QObject):
    """Drops a side viewer from the registry when the user closes its window."""

    def __init__(self, owner, key: tuple):
        super().__init__(owner)
        self.key = key

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.Close:
            _VIEWERS.pop(self.key, None)
        return False


def close_side_viewers(window_id: int) -> None:
    """Close every side viewer opened from the main window ``window_id``."""
    for key in [k for k in _VIEWERS if k[0] == window_id]:
        viewer = _VIEWERS.pop(key)
        try:
            viewer.close()
        except (AttributeError, RuntimeError):  # already gone with its window
            pass


def _main_window(widget):
    """The napari main window a docked widget lives in (Qt's parent chain: plugins get a proxy
    of the viewer, not its window), or None when the widget is not docked."""
    from qtpy.QtWidgets import QMainWindow

    win = widget.window()
    return win if isinstance(win, QMainWindow) and win is not widget else None


_NEXT_ID = [0]


def _window_id(widget) -> int:
    """A number for the main window (or the undocked widget) that no later window can share:
    ``id()`` is reused once a window is garbage-collected, and a new main window must never
    find the side viewers of a closed one (their GL context is gone)."""
    owner = _main_window(widget) or widget
    value = owner.property("napari_aet_window_id")
    if value is None:
        _NEXT_ID[0] += 1
        value = _NEXT_ID[0]
        owner.setProperty("napari_aet_window_id", value)
    return int(value)


def _alive(viewer) -> bool:
    try:
        viewer.window._qt_window.isVisible()  # raises once Qt deleted the window
        return True
    except (AttributeError, RuntimeError):
        return False


def find_side_viewer(widget, key: str):
    """The side viewer ``key`` of ``widget``'s main window, or None when none is open."""
    entry = (_window_id(widget), key)
    viewer = _VIEWERS.get(entry)
    if viewer is not None and not _alive(viewer):
        _VIEWERS.pop(entry, None)
        return None
    return viewer


def side_viewer(widget, key: str, title: str):
    """The side viewer ``key`` of the main window ``widget`` is docked in, made on first use
    (shown when the widget is, 2D, titled ``title``); closed with the main window."""
    import napari
    from napari.qt import QtViewer

    main = _main_window(widget)
    window_id = _window_id(widget)
    entry = (window_id, key)
    viewer = find_side_viewer(widget, key)
    if viewer is not None:
        return viewer
    if not any(k[0] == window_id for k in _VIEWERS):
        watched = [main, *main.findChildren(QtViewer)] if main is not None else [widget]
        for obj in watched:
            obj.installEventFilter(_CloseWith(obj, window_id))
    viewer = napari.Viewer(title=title, show=widget.isVisible())
    qt_window = viewer.window._qt_window  # our own viewer's window: forget it when the user closes it
    qt_window.installEventFilter(_Forget(qt_window, entry))
    _VIEWERS[entry] = viewer
    return viewer


def show_layers(viewer, layer_data: list, keep: tuple = ()) -> list:
    """Replace ``viewer``'s layers by ``layer_data`` ((data, kwargs, type) tuples), keeping
    layers named in ``keep``; fit the camera to them. Returns the new layers."""
    for layer in list(viewer.layers):
        if layer.name not in keep:
            viewer.layers.remove(layer)
    added = []
    for data, kwargs, kind in layer_data:
        if kwargs.get("name") in viewer.layers:
            viewer.layers.remove(kwargs["name"])
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    viewer.reset_view()
    return added


FOURIER_TITLE = "napari-aet: Fourier space (1/Å)"


def show_fourier(widget, layer_data: list):
    """Add Fourier-space layers (:func:`napari_aet._layers.fourier_layers`, 1/Å) to the main
    window's Fourier viewer, replacing layers of the same name, showing the k_x-k_z plane
    (k_y = 0) where the missing wedge lies, zoomed to fit. Returns that viewer."""
    viewer = side_viewer(widget, "fourier", FOURIER_TITLE)
    for data, kwargs, kind in layer_data:
        if kwargs.get("name") in viewer.layers:
            viewer.layers.remove(kwargs["name"])
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.dims.ndisplay = 2
    viewer.dims.order = (1, 0, 2)  # slice k_y, show k_z down and k_x across
    viewer.dims.set_point(1, 0.0)
    viewer.reset_view()
    return viewer

"""Manual correction of traced atoms.

Add, delete and move atoms with the Points layer's own tools (in 2D slices of the tomogram,
or in 3D where napari places new points on the slicing plane); every change is recorded for
undo/redo (buttons, or Ctrl+Z / Ctrl+Shift+Z on the layer) and autosaved at once to the
session folder, so a crash or a closed window loses nothing ("Restore last session" brings
the edits back). "Refine edited atoms" snaps the edited atoms to the local intensity maximum
of the tomogram with a sub-voxel fit; "Re-analyse" updates lattice, facets and strain.
Closing napari while edits have not been exported asks first.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QMainWindow, QMessageBox, QPushButton

from .. import session
from .base import WorkerWidget, aet_meta, call_weakly, flag, layer_table, recolour


class _CloseGuard(QObject):
    """Asks before the napari window closes while the session holds unexported edits."""

    def __init__(self, window, store: "session.Session"):
        super().__init__(window)  # no Python reference to the window: Qt owns this filter
        self.store = store

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close and obj is self.parent() and self.store.unexported:
            answer = QMessageBox.question(
                obj, "napari-aet",
                "Atoms were edited since the last export (they are autosaved in "
                f"{self.store.folder}). Close anyway?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return True
        return False


def ray_plane_point(position, direction, plane_point, plane_normal):
    """Where the view ray (``position`` + t ``direction``, world coordinates) meets a plane;
    None when the ray runs parallel to it."""
    p, d = np.asarray(position, float), np.asarray(direction, float)
    n = np.asarray(plane_normal, float)
    denom = float(d @ n)
    if abs(denom) < 1e-9:
        return None
    return p + d * float((np.asarray(plane_point, float) - p) @ n) / denom


def _plane_click(widget_ref, layer, event):
    """Mouse-drag callback: in 3D, a click adds an atom where the view ray meets the tomogram's
    plane (napari's own add mode would put it at an arbitrary depth along the ray)."""
    widget = widget_ref()
    if widget is None or not widget.add_on_plane.value or event.view_direction is None:
        return
    tomo = widget.tomogram_layer()
    if tomo is None or len(event.dims_displayed) != 3:
        return
    scale, translate = np.asarray(tomo.scale)[-3:], np.asarray(tomo.translate)[-3:]
    point = np.asarray(tomo.plane.position) * scale + translate
    normal = np.asarray(tomo.plane.normal) / scale
    hit = ray_plane_point(np.asarray(event.position)[-3:], np.asarray(event.view_direction)[-3:], point,
                          normal / np.linalg.norm(normal))
    if hit is not None:
        layer.add(layer.world_to_data(hit))
        event.handled = True


class CorrectionWidget(WorkerWidget):
    """Edit atoms by hand with undo, autosave and restore; refine edits; re-analyse."""

    run_label = "Re-analyse"
    layer_kinds = ("atoms",)
    has_device = False

    def __init__(self, napari_viewer, session_folder=None):
        self.store = session.Session(session_folder)
        self.history = session.EditHistory()
        self._layer = None
        self._snapshot = None
        self._restoring = False
        self._last_change = None
        super().__init__(napari_viewer)
        self.layer_box.changed.connect(self._attach)
        self._attach()
        self._install_close_guard()
        # napari docks the widget after building it: look for the window again once it has
        QTimer.singleShot(0, functools.partial(call_weakly, weakref.ref(self), "_install_close_guard"))
        if self.store.has_autosave():
            st = self.store.state()
            self.status.setText(f"an autosaved session holds {st.get('n_atoms', '?')} atoms "
                                f"({st.get('saved_at', '')}): 'Restore last session' brings it back")

    def _install_close_guard(self) -> None:
        """Put the close guard on the main window this widget is docked in.

        The window is found through Qt's own parent chain: napari hands plugins a proxy of the
        viewer, and a proxied window cannot parent a Qt object. Called again whenever the widget
        is shown or re-parented, since it has no window until napari docks it.
        """
        window = self.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None and window.findChild(_CloseGuard) is None:  # one guard per window
            # napari has no public close hook; the Qt window's close event is the one place
            window.installEventFilter(_CloseGuard(window, self.store))

    def event(self, event):  # noqa: D102 (Qt's name)
        if event.type() in (QEvent.Type.ParentChange, QEvent.Type.Show):
            self._install_close_guard()
        return super().event(event)

    def build_form(self, form):
        self.layer_box.label = "atoms"
        self.tomogram_box = self.layer_choice("tomogram", ("tomogram", "ideal_tomogram"))
        form.extend([self.layer_box, self.tomogram_box])

    def build_extra(self, layout):
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.refine_button = QPushButton("Refine edited atoms")
        self.restore_button = QPushButton("Restore last session")
        self.add_on_plane = flag("3D: click adds an atom on the tomogram's plane")
        self.add_on_plane.changed.connect(self._plane_mode)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.refine_button.clicked.connect(self.refine_edited)
        self.restore_button.clicked.connect(self.restore)
        for b in (self.undo_button, self.redo_button):
            row1.addWidget(b)
        for b in (self.refine_button, self.restore_button):
            row2.addWidget(b)
        layout.addWidget(self.add_on_plane.native)
        layout.addLayout(row1)
        layout.addLayout(row2)
        self._update_buttons()

    def _refresh_layers(self, *args, **kwargs):
        super()._refresh_layers(*args, **kwargs)
        if hasattr(self, "tomogram_box"):
            if self._layer is not None and self._layer not in self.viewer.layers:
                self._detach()
            if self._layer is None:
                self._attach()

    def _update_buttons(self):
        if hasattr(self, "undo_button"):
            self.undo_button.setEnabled(self.history.can_undo)
            self.redo_button.setEnabled(self.history.can_redo)
            self.restore_button.setEnabled(self.store.has_autosave())

    def tomogram_layer(self):
        name = self.tomogram_box.value
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _plane_mode(self, on: bool):
        """Show the tomogram as a movable plane and let clicks on it add atoms (3D)."""
        tomo, layer = self.tomogram_layer(), self._layer
        if on and (tomo is None or layer is None):
            self.status.setText("choose the atoms layer and the tomogram first")
            self.add_on_plane.value = False
            return
        if tomo is not None:
            tomo.depiction = "plane" if on else "volume"
        if on:
            layer.mode = "pan_zoom"  # the plane callback adds; napari's add mode would add a second point
            self.viewer.layers.selection.active = layer
            self.status.setText("3D: shift-drag the plane (napari) to move it; click to add an atom on it")

    # ------------------------------------------------------------------ edits
    def _detach(self):
        if self._layer is not None:
            try:
                self._layer.events.data.disconnect(self._on_data)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._layer, self._snapshot = None, None

    def _attach(self, *_):
        layer = self.selected_layer()
        if layer is self._layer:
            return
        self._detach()
        if layer is None:
            return
        self._layer = layer
        # the layer names the session that autosaves its edits, so an export elsewhere
        # (Figures & export) clears this session's close prompt, not another one's
        layer.metadata.setdefault("napari_aet", {})["session_folder"] = str(self.store.folder)
        self.history = session.EditHistory()
        self._snapshot = layer_table(layer)
        layer.events.data.connect(self._on_data)
        layer.mouse_drag_callbacks[:] = [c for c in layer.mouse_drag_callbacks
                                         if getattr(c, "func", None) is not _plane_click]
        layer.mouse_drag_callbacks.append(functools.partial(_plane_click, weakref.ref(self)))
        ref = weakref.ref(self)
        layer.bind_key("Control-z", functools.partial(call_weakly, ref, "undo"), overwrite=True)
        layer.bind_key("Control-Shift-z", functools.partial(call_weakly, ref, "redo"), overwrite=True)
        if "edited" not in layer.features:
            feats = layer.features.copy()
            feats["edited"] = 0
            layer.features = feats
        layer.feature_defaults["edited"] = 1
        if "atom" in layer.features:
            layer.feature_defaults["atom"] = 1
        self._update_buttons()

    def _on_data(self, event):
        action = str(getattr(event, "action", ""))
        if self._restoring or not action.endswith(("added", "removed", "changed")):
            return
        layer = self._layer
        if action.endswith(("added", "changed")):
            n = len(layer.data)
            idx = sorted({int(i) % n for i in getattr(event, "data_indices", ()) if -n <= int(i) < n})  # add() gives -1, -2...
            if idx and "edited" in layer.features:
                feats = layer.features.copy()
                feats.loc[idx, "edited"] = 1
                if action.endswith("added") and "atom" in feats:
                    feats.loc[idx, "atom"] = 1
                layer.features = feats
        import time

        key = (action, tuple(getattr(event, "data_indices", ())))
        if not (action.endswith("changed") and self._last_change and self._last_change[0] == key
                and time.monotonic() - self._last_change[1] < 2.0):
            self.history.push(self._snapshot)  # one drag of the same atoms is one undo step
        self._last_change = (key, time.monotonic())
        self._commit(f"{action.rsplit('.', 1)[-1]}: {len(layer.data)} atoms")

    def _commit(self, message: str):
        """Autosave the layer's current atoms and remember them as the state before the next edit."""
        layer = self._layer
        self._snapshot = layer_table(layer)
        meta = dict(aet_meta(layer).get("atoms_metadata") or {})
        self.store.autosave(self._snapshot, meta, layer.name)
        self._update_buttons()
        self.status.setText(f"{message} (autosaved)")

    def _show(self, table):
        """Put a table into the layer without recording it as a new edit."""
        layer = self._layer
        self._restoring = True
        try:
            layer.selected_data = set()
            world = table[["z", "y", "x"]].to_numpy(float)
            layer.data = np.array((world - np.asarray(layer.translate)) / np.asarray(layer.scale))
            layer.features = table.drop(columns=["x", "y", "z"]).reset_index(drop=True)
            by = aet_meta(layer).get("colour_by")
            if by and by in layer.features:
                recolour(layer, by)
        finally:
            self._restoring = False

    def undo(self):
        self._step(self.history.undo, "undone")

    def redo(self):
        self._step(self.history.redo, "redone")

    def _step(self, take, message: str):
        """Show the table ``take`` (history.undo or .redo) hands back for the current one."""
        if self._layer is None:
            return
        table = take(layer_table(self._layer))
        if table is not None:
            self._show(table)
            self._commit(message)

    def restore(self):
        """Bring back the autosaved atoms as a layer (replacing one of the same name)."""
        from .._layers import atoms_layer

        got = self.store.restore()
        if got is None:
            self.status.setText("no autosaved session")
            return
        table, meta, name = got
        data, kwargs, kind = atoms_layer(table, name=name, metadata=meta)
        self.add_layer((data, kwargs, kind))
        self.layer_box.value = name
        self._attach()
        self.status.setText(f"restored {len(table)} atoms from {self.store.atoms_path}")

    def refine_edited(self):
        """Snap the edited (or, if any, the selected) atoms to the tomogram's local maxima."""
        from ..core.trace import snap_to_maxima

        layer = self._layer
        tomo = next((l for l in self.viewer.layers if l.name == self.tomogram_box.value), None)
        if layer is None or tomo is None:
            self.status.setText("choose an atoms layer and the tomogram to refine against")
            return
        idx = sorted(layer.selected_data) or list(np.flatnonzero(layer.features.get("edited", 0) == 1))
        if not idx:
            self.status.setText("no edited or selected atoms to refine")
            return
        before = layer_table(layer)
        world = before[["z", "y", "x"]].to_numpy(float)[idx]
        vox = (world - np.asarray(tomo.translate)) / np.asarray(tomo.scale)
        new_world = snap_to_maxima(np.asarray(tomo.data), vox) * np.asarray(tomo.scale) + np.asarray(tomo.translate)
        table = before.copy()
        table.loc[idx, ["z", "y", "x"]] = new_world
        self.history.push(before)
        self._show(table)
        moved = np.linalg.norm(new_world - world, axis=1)
        self._commit(f"refined {len(idx)} atoms (moved {moved.mean():.2f} Å on average)")

    # ------------------------------------------------------------- re-analyse
    def _refresh_analysis_views(self, layer, table) -> None:
        """The facet and strain layers Analyze made of this atoms layer follow the re-analysis
        (kept as the user left them: shown or hidden)."""
        from .._layers import analysis_layers

        prefix = f"{layer.name}: "
        existing = {l.name: l.visible for l in self.viewer.layers
                    if l.name.startswith(prefix) and aet_meta(l).get("kind") == "analysis_view"}
        if not existing:
            return
        size = float(np.mean(layer.size)) if len(layer.size) else 1.2
        for data, kwargs, kind in analysis_layers(table, layer.name, size=size):
            kwargs["visible"] = existing.get(kwargs["name"], False)
            self.add_layer((data, kwargs, kind))

    def start(self):
        from ..core.analysis import analyze_atoms

        if self._layer is None or len(self._layer.data) < 4:
            self.status.setText("no atoms layer with atoms to analyse")
            return
        table = layer_table(self._layer)
        self.launch(analyze_atoms, table.drop(columns=["edited"], errors="ignore"))

    def on_result(self, result):
        table, summary = result
        layer = self._layer
        before = layer_table(layer)
        table["edited"] = before["edited"].to_numpy() if "edited" in before else 0
        self.history.push(before)
        self._show(table)
        if not aet_meta(layer).get("colour_by"):
            recolour(layer, "fcc")
        aet_meta(layer)["analysis"] = {k: v for k, v in summary.items() if k != "grid"}
        self._refresh_analysis_views(layer, table)
        self._commit(f"re-analysed: a = {summary['lattice']['lattice_constant']:.4f} Å, "
                     f"{summary['share_assigned']:.1%} on f.c.c. sites")

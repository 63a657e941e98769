"""Manual correction of traced atoms.

Add, delete and move atoms with the Points layer's own tools (in 2D slices of the tomogram,
or in 3D where napari places new points on the slicing plane); every change is recorded for
undo/redo (buttons, or Ctrl+Z / Ctrl+Shift+Z on the layer) and autosaved at once to the
session folder, so a crash or a closed window loses nothing ("Restore last session" brings
the edits back). "Refine edited atoms" snaps the edited atoms to the local intensity maximum
of the tomogram with a sub-voxel fit and, with the tilt series, refits them and their
neighbours against it (every other atom held) and shows the model's R-work and R-free;
"Next least certain" visits the atoms from the least certain (presence, then position
uncertainty); "Residual" reconstructs where the tilt series disagrees with the atom model;
"Re-analyse" updates lattice, facets and strain. Closing napari while edits have not been
exported asks first.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton

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


NO_TILT_SERIES = "none (tomogram snap only)"


def _refine_task(positions, classes, edited, tilts, angles, pixel_size, model, free, device, atoms_meta=None,
                 progress=None, cancel=None):
    """Local re-refinement (:func:`napari_aet.core.correct.refine_near`) in a worker thread,
    against the series the model was fitted to (:func:`~napari_aet.core.correct.fitted_tilts`
    of ``atoms_meta``); without a refinement record (``model`` None) the per-class heights and
    B-factors are fitted first, positions held. Returns (LocalRefinement, whether the heights
    were fitted here)."""
    from ..core.correct import fitted_tilts, refine_near
    from ..core.projector import resolve_device
    from ..core.refine import refine_positions

    device = resolve_device(device)
    tilts = fitted_tilts(atoms_meta, tilts, pixel_size)
    fitted = model is None
    if fitted:
        ref = refine_positions(positions, classes, tilts, angles, pixel_size, iterations=0, device=device)
        model = (ref.heights, ref.b_factors)
    result = refine_near(positions, classes, edited, tilts, angles, pixel_size, *model, free=free, device=device,
                         progress=progress, cancel=cancel)
    return result, fitted


def _residual_task(positions, classes, tilts, angles, pixel_size, model, volume_shape, device, atoms_meta=None,
                   progress=None, cancel=None):
    """:func:`napari_aet.core.confidence.residual_tomogram` in a worker thread, of the series the
    model was fitted to (as :func:`_refine_task`; heights and B-factors fitted first when the
    atoms carry no refinement record)."""
    from ..core.confidence import residual_tomogram
    from ..core.correct import fitted_tilts
    from ..core.projector import resolve_device
    from ..core.refine import refine_positions

    device = resolve_device(device)
    tilts = fitted_tilts(atoms_meta, tilts, pixel_size)
    if model is None:
        ref = refine_positions(positions, classes, tilts, angles, pixel_size, iterations=0, device=device)
        model = (ref.heights, ref.b_factors)
    return residual_tomogram(positions, classes, *model, tilts, angles, pixel_size, volume_shape, device=device,
                             progress=progress, cancel=cancel)


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
        self._visited: list = []  # positions "Next least certain" has shown (deleted atoms drop out)
        self._handler = None  # what the running worker's result goes to (None: Re-analyse)
        self._pending = None
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
        self.tilts_box = self.layer_choice("tilt series", ("tilt_series",), after=(NO_TILT_SERIES,),
                                           tooltip="the aligned tilt series the atoms were refined against: "
                                                   "edits are refitted to it, R and R-free measured on it")
        form.extend([self.layer_box, self.tomogram_box, self.tilts_box])

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
        self.refine_button.clicked.connect(functools.partial(self._try, self.refine_edited))
        self.restore_button.clicked.connect(self.restore)
        for b in (self.undo_button, self.redo_button):
            row1.addWidget(b)
        for b in (self.refine_button, self.restore_button):
            row2.addWidget(b)
        row3 = QHBoxLayout()
        self.next_button = QPushButton("Next least certain")
        self.next_button.setToolTip("select the next atom from the least certain (lowest presence, then the "
                                    "largest position uncertainty) and centre the view on it")
        self.residual_button = QPushButton("Residual")
        self.residual_button.setToolTip("reconstruct where the tilt series disagrees with the atom model")
        self.next_button.clicked.connect(self.next_least_certain)
        self.residual_button.clicked.connect(functools.partial(self._try, self.compute_residual))
        row3.addWidget(self.next_button)
        row3.addWidget(self.residual_button)
        self.r_label = QLabel("")
        self.r_label.setWordWrap(True)
        layout.addWidget(self.add_on_plane.native)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addLayout(row3)
        layout.addWidget(self.r_label)
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
            idle = self.worker is None or self.run_button.isEnabled()
            self.refine_button.setEnabled(idle)
            self.residual_button.setEnabled(idle)

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
        self._snapshot = layer_table(layer)  # with the 'edited' column: undoing the first edit keeps it
        self._visited = []
        self.r_label.setText(_r_text(aet_meta(layer).get("atoms_metadata") or {}))
        self._update_buttons()

    def _on_data(self, event):
        from .._layers import CONFIDENCE

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
                if action.endswith("added"):  # no confidence yet (napari copied a neighbour's)
                    feats.loc[idx, [c for c in CONFIDENCE if c in feats]] = np.nan
                layer.features = feats
                if action.endswith("added") and aet_meta(layer).get("colour_by") in CONFIDENCE:
                    recolour(layer, aet_meta(layer)["colour_by"])
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
        """Snap the edited (or, if any, the selected) atoms to the tomogram's local maxima, then,
        with the tilt series, refit them and their neighbours against it in a worker (R-work
        and R-free of the corrected model in the widget)."""
        layer = self._layer
        tomo, tilts = self.tomogram_layer(), self._tilt_inputs()
        if layer is None or tomo is None and tilts is None:
            self.status.setText("choose an atoms layer and the tomogram or the tilt series to refine against")
            return
        idx = sorted(layer.selected_data) or list(np.flatnonzero(layer.features.get("edited", 0) == 1))
        if not idx:
            self.status.setText("no edited or selected atoms to refine")
            return
        if tomo is not None:
            self._snap(idx, tomo)
        if tilts is None:
            self.r_label.setText("R and R-free cannot be computed without the tilt series: choose the one the atoms "
                                 "were refined against in 'tilt series' (the edits were snapped to the tomogram)")
            return
        table = layer_table(layer)
        rows, classes, model, free = self._model(table, len(tilts[0]))
        edited = np.flatnonzero(np.isin(rows, idx))
        if not edited.size:
            self.status.setText("the edited atoms are all non-atom peaks: nothing to refit")
            return
        self._pending = (table, rows, self.tilts_box.value)
        self.status.setText(f"refitting {len(edited)} edited atoms and their neighbours against the tilt series...")
        self._run("Refine edited atoms", self._on_refined, _refine_task, table[["x", "y", "z"]].to_numpy(float)[rows],
                  classes, edited, *tilts, model, free, "auto", aet_meta(layer).get("atoms_metadata"))

    def _snap(self, idx, tomo) -> None:
        """The atoms ``idx`` onto the tomogram's local intensity maxima (one undo step)."""
        from ..core.trace import snap_to_maxima

        layer = self._layer
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

    def _on_refined(self, result) -> None:
        """Put the refitted positions in the layer (one undo step) and their R in the widget."""
        res, fitted = result
        layer = self._layer
        table, rows, tilts_name = self._pending
        now = layer_table(layer)
        xyz = ["x", "y", "z"]
        if len(now) != len(table) or not np.allclose(now[xyz].to_numpy(float), table[xyz].to_numpy(float)):
            self.status.setText("the atoms changed during the refinement: press 'Refine edited atoms' again")
            return
        new = now.copy()
        new.loc[rows[res.moved], xyz] = res.positions[res.moved]
        self.history.push(now)
        self._show(new)
        record = res.summary() | {"tilt_series": tilts_name, "heights_fitted_here": bool(fitted)}
        aet_meta(layer).setdefault("atoms_metadata", {})["correction"] = record
        self.r_label.setText(_r_text(aet_meta(layer)["atoms_metadata"]))
        self._commit(f"refitted {len(res.moved)} atoms (the edited ones and their neighbours) against the tilt series")

    def _tilt_inputs(self):
        """(projections, angles, pixel size) of the chosen tilt series; None when none is chosen."""
        from ..core.errors import AETInputError

        name = self.tilts_box.value
        if not name or name == NO_TILT_SERIES or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        meta = aet_meta(layer)
        if not meta.get("angles") or not meta.get("pixel_size"):
            raise AETInputError(f"{name} has no tilt angles or pixel size: load it with its angles and pixel size")
        return np.asarray(layer.data, np.float32), np.asarray(meta["angles"], float), float(meta["pixel_size"])

    def _model(self, table, n_projections: int) -> tuple:
        """The atom model of a table: its rows (``atom`` 1), classes as the refinement numbered
        them, the refined (heights, B-factors) or None, and the held-out projections."""
        from ..core.correct import atom_classes, free_projections, model_parameters

        rows = np.flatnonzero(table["atom"].to_numpy() == 1) if "atom" in table else np.arange(len(table))
        edited = table["edited"].to_numpy()[rows] == 1 if "edited" in table else None
        species = table["species"].to_numpy()[rows] if "species" in table else np.zeros(len(rows))
        classes = atom_classes(species, edited)
        meta = aet_meta(self._layer).get("atoms_metadata") or {}
        model = model_parameters(meta)
        if model is not None and not set(classes.tolist()) <= set(model[0]):
            model = None  # classes the record does not know: fit them all again
        return rows, classes, model, free_projections(meta, n_projections)

    # ------------------------------------------------------------- confidence
    def next_least_certain(self):
        """Select the next atom from the least certain (cycling; deleted atoms drop out), centre
        the view on it and show its confidence in the status line."""
        from ..core.confidence import least_certain_order
        from ..core.errors import AETInputError

        layer = self._layer
        if layer is None or not len(layer.data):
            self.status.setText("no atoms layer with atoms")
            return
        table = layer_table(layer)
        try:
            order = least_certain_order(table)
        except AETInputError as exc:
            self.status.setText(str(exc))
            return
        xyz = table[["x", "y", "z"]].to_numpy(float)
        seen = np.asarray(self._visited).reshape(-1, 3)
        fresh = [int(i) for i in order if not (len(seen) and np.linalg.norm(seen - xyz[i], axis=1).min() < 1e-3)]
        if not fresh:  # every atom shown: round again
            self._visited, fresh = [], [int(i) for i in order]
        pick = fresh[0]
        self._visited.append(xyz[pick])
        self.focus_atom(pick)
        row = table.iloc[pick]
        sig = "/".join(f"{float(row[c]):.1f}" for c in ("sigma_x_pm", "sigma_y_pm", "sigma_z_pm"))
        rank = len(order) - len(fresh) + 1
        self.status.setText(f"atom {pick} ({rank} of {len(order)}, least certain first): presence "
                            f"{float(row['presence']):.2f}, σ x/y/z {sig} pm")

    def focus_atom(self, index: int) -> None:
        """Select atom ``index`` of the atoms layer and centre the camera on it (in 2D, the slice
        moves to it too)."""
        layer = self._layer
        world = np.asarray(layer.data_to_world(layer.data[index]), float)
        dims = self.viewer.dims
        axes = list(range(dims.ndim - len(world), dims.ndim))  # the layer's axes among the viewer's
        point = dict(zip(axes, world))
        for axis in dims.not_displayed:
            if axis in point:
                dims.set_point(axis, point[axis])
        self.viewer.scene.camera.center = tuple(point.get(axis, 0.0) for axis in dims.displayed)
        self.viewer.layers.selection.active = layer
        if not self.add_on_plane.value:
            layer.mode = "select"  # the user can drag it at once
        layer.selected_data = {int(index)}

    def compute_residual(self):
        """Reconstruct the tilt series minus the atom model's projections in a worker."""
        layer, tilts = self._layer, self._tilt_inputs()
        if layer is None or tilts is None:
            self.status.setText("the residual needs the atoms and the tilt series they were refined against: "
                                "choose both")
            return
        table = layer_table(layer)
        rows, classes, model, _ = self._model(table, len(tilts[0]))
        if not rows.size:
            self.status.setText("no atoms in the layer")
            return
        self._pending = (layer.name, tilts[2])
        self.status.setText("reconstructing the residual...")
        self._run("Residual", self._on_residual, _residual_task, table[["x", "y", "z"]].to_numpy(float)[rows],
                  classes, *tilts, model, self._volume_shape(tilts), "auto",
                  aet_meta(layer).get("atoms_metadata"))

    def _volume_shape(self, tilts) -> tuple:
        """The tomogram's shape when it is the tilt series' (same voxel size and detector), else
        a cube as wide as the detector."""
        data, _, px = tilts
        nv, nu = data.shape[1:]
        tomo = self.tomogram_layer()
        if tomo is not None and tomo.data.ndim == 3 and tuple(tomo.data.shape[1:]) == (nv, nu) and np.isclose(
                float(aet_meta(tomo).get("pixel_size") or 0.0), px, rtol=1e-3):
            return tuple(int(v) for v in tomo.data.shape)
        return (nu, nv, nu)

    def _on_residual(self, volume) -> None:
        from .._layers import volume_layer
        from ..core.io import Volume

        name, px = self._pending
        lim = float(np.abs(volume).max()) or 1.0
        self.add_layer(volume_layer(Volume(volume, px), name=f"{name}: residual", kind="residual",
                                    colormap="RdBu_r", contrast_limits=(-lim, lim), rendering="mip"))
        self.status.setText("residual: red where the data holds density the model lacks (a missed atom), blue where "
                            "the model has density the data lacks (a false atom)")

    # -------------------------------------------------------------- workers
    def _try(self, action) -> None:
        """A button's action; bad input is reported, as Run's is."""
        try:
            action()
        except Exception as exc:
            self._report(exc)

    def _run(self, label: str, handler, func, *args) -> None:
        """Start ``func`` in the worker; its result goes to ``handler``, progress and errors are
        named ``label``."""
        self._handler, self.run_label = handler, label
        self.refine_button.setEnabled(False)
        self.residual_button.setEnabled(False)
        try:
            self.launch(func, *args)
        except Exception:
            self._on_finished()
            raise

    def _on_finished(self):
        super()._on_finished()
        self.__dict__.pop("run_label", None)  # back to the class's "Re-analyse"
        self._handler = None
        self._update_buttons()

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
        from ..core.correct import analyze_confident

        if self._layer is None or len(self._layer.data) < 4:
            self.status.setText("no atoms layer with atoms to analyse")
            return
        table = layer_table(self._layer)
        settings = (aet_meta(self._layer).get("analysis") or {}).get("settings") or {}
        self._handler = None
        self.launch(analyze_confident, table.drop(columns=["edited"], errors="ignore"),
                    min_presence=float(settings.get("min_presence") or 0.0))  # as Analyze left them out

    def on_result(self, result):
        (self._handler or self._on_analysed)(result)

    def _on_analysed(self, result):
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


def _r_text(meta: dict) -> str:
    """The atom model's R-work and R-free against the tilt series, for the widget: after the
    last correction, else the refinement's; empty when neither was measured."""
    def r(value) -> str:
        return "-" if value is None else f"{float(value):.4f}"

    corr = meta.get("correction") or {}
    if corr.get("r_work") is not None:
        return (f"after the correction: R-work {r(corr['r_work'])} (was {r(corr.get('r_work_before'))}), R-free "
                f"{r(corr.get('r_free'))} (was {r(corr.get('r_free_before'))}); {corr.get('n_refitted', '?')} atoms "
                "refitted")
    val = meta.get("validation") or {}
    if val.get("r_work") is not None:
        return f"the refinement's R-work {r(val['r_work'])}, R-free {r(val.get('r_free'))}"
    return ""

"""Dock widgets for the steps: each gathers inputs, runs the core in a thread worker (the GUI
stays responsive), shows progress, can be cancelled between steps, adds its layers in Å, and
remembers its settings between runs (``napari_aet.session``).

Load tilt series · Align · Reconstruct · Enhance (U-Net) · Trace atoms · Analyze; manual
correction and figures live in :mod:`napari_aet._qt.correction` and :mod:`napari_aet._qt.figures`.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QSlider, QSpinBox, QVBoxLayout, QWidget,
)

from .. import session
from .._layers import volume_layer
from ..core.io import Volume


_log = logging.getLogger(__name__)


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


def aet_meta(layer) -> dict:
    return (layer.metadata.get("napari_aet") or {}) if layer is not None else {}


def _value(w):
    if isinstance(w, QComboBox):
        return w.currentText()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, QLineEdit):
        return w.text()
    return w.value()


def _set_value(w, v) -> None:
    try:
        if isinstance(w, QComboBox):
            if w.findText(str(v)) >= 0:
                w.setCurrentText(str(v))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(v))
        elif isinstance(w, QLineEdit):
            w.setText(str(v))
        elif isinstance(w, QSpinBox):
            w.setValue(int(v))
        else:
            w.setValue(float(v))
    except (TypeError, ValueError):
        pass  # a stale or hand-edited settings file must not break the widget


def _path_row(line: QLineEdit, caption: str, save: bool = False, filters: str = "") -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("…")
    button.setMaximumWidth(30)

    def browse():
        pick = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = pick(box, caption, line.text(), filters)
        if path:
            line.setText(path)

    button.clicked.connect(browse)
    row.addWidget(line)
    row.addWidget(button)
    return box


class WorkerWidget(QWidget):
    """Base of the step widgets: a form, Run/Cancel, a progress bar, a status line, and a
    core function run in a napari thread worker with a progress callback and a cancel flag.

    Subclasses list their remembered inputs in ``self.settings`` (name -> Qt input widget).
    """

    run_label = "Run"
    layer_kinds: tuple = ()
    has_device = True

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._cancel = None
        self.worker = None
        self.napari_progress = None
        self.settings: dict = {}
        self.layer_box = QComboBox()
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.run_button = QPushButton(self.run_label)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        self.build_form(form)
        if self.has_device:
            form.addRow("device", self.device)
            self.settings["device"] = self.device
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.main_layout = QVBoxLayout(self)
        self.main_layout.addLayout(form)
        self.main_layout.addLayout(buttons)
        self.main_layout.addWidget(self.bar)
        self.main_layout.addWidget(self.status)
        self.build_extra(self.main_layout)
        self.main_layout.addStretch()
        self.relay = _Relay()
        self.relay.progressed.connect(self._on_progress)
        self.run_button.clicked.connect(self._start)
        self.layer_box.setToolTip("input layer")
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self.restore_settings()

    # -- subclass hooks
    def build_form(self, form):
        """Add the step's input rows to ``form``."""

    def build_extra(self, layout):
        """Add rows below the progress bar (optional)."""

    def start(self):
        raise NotImplementedError

    def on_result(self, result):
        raise NotImplementedError

    # -- settings
    @property
    def settings_section(self) -> str:
        return type(self).__name__

    def restore_settings(self) -> None:
        for name, value in session.load_settings(self.settings_section).items():
            if name in self.settings:
                _set_value(self.settings[name], value)

    def save_settings(self) -> None:
        session.save_settings(self.settings_section, {k: _value(w) for k, w in self.settings.items()})

    # -- layers
    def layers_of_kind(self, kinds):
        return [l for l in self.viewer.layers if aet_meta(l).get("kind") in kinds]

    def _refresh_layers(self, *_):
        current = self.layer_box.currentText()
        self.layer_box.clear()
        self.layer_box.addItems([l.name for l in self.layers_of_kind(self.layer_kinds)])
        if current:
            self.layer_box.setCurrentText(current)

    def selected_layer(self):
        name = self.layer_box.currentText()
        return next((l for l in self.layers_of_kind(self.layer_kinds) if l.name == name), None)

    def add_layer(self, layer_data) -> None:
        """Add (data, kwargs, type) to the viewer, replacing a layer of the same name."""
        data, kwargs, kind = layer_data
        name = kwargs.get("name")
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    # -- running
    def _start(self):
        self.save_settings()
        try:
            self.start()
        except Exception as exc:  # bad input caught before the worker: say why, keep the viewer usable
            self._report(exc)

    def launch(self, func, *args, **kwargs):
        """Run ``func(*args, progress=..., cancel=..., **kwargs)`` in a worker thread."""
        from napari.qt.threading import create_worker

        self._cancel = threading.Event()
        relay = self.relay
        kwargs.update(cancel=self._cancel, progress=lambda d, t, m: relay.progressed.emit(d, t, m))
        self.worker = create_worker(func, *args, **kwargs, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        from napari.utils import progress

        self.napari_progress = progress(total=0, desc=self.run_label)  # napari's activity dock and status bar
        self.worker.start()

    def _on_returned(self, result):
        try:
            self.on_result(result)
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        """One line for the user; the traceback to the log unless it is a known input error."""
        from ..core.errors import AETInputError

        if not isinstance(exc, AETInputError):
            _log.error("napari-aet %s failed", self.run_label, exc_info=exc)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.status.setText(f"error: {line}")
        from napari.utils.notifications import show_error

        show_error(f"{self.run_label}: {line}")  # napari's notification area, where users look

    def _on_progress(self, done: int, total: int, message: str):
        self.bar.setMaximum(total)
        self.bar.setValue(done)
        self.status.setText(message)
        pbar = self.napari_progress
        if pbar is not None:
            pbar.total = total
            pbar.n = done
            pbar.set_description(f"{self.run_label}: {message}"[:80])
            pbar.refresh()

    def cancel(self):
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling after this iteration...")

    def _on_error(self, exc):
        from ..core.errors import Cancelled

        if isinstance(exc, Cancelled):
            self.status.setText("cancelled")
        else:
            self._report(exc)

    def _on_finished(self):
        pbar = self.napari_progress
        if pbar is not None:
            pbar.close()
            self.napari_progress = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


# ----------------------------------------------------------------------------- load


# stack layouts offered by the Load widget: (stack axis, transpose each projection)
STACK_LAYOUTS = {
    "[projection, y, x] (MRC, TIFF, NPY)": (0, False),
    "[y, x, projection] (projections last)": (2, False),
    "[x, y, projection] (RESIRE/GENFIRE MATLAB)": (2, True),
}


def _read_tilt_series_task(path, angles, pixel_size, angle_units, convention="zyz", tilt_axis_angle=0.0,
                           background=None, normalize=False, denoise=None, tilt_axis=None, layout=None,
                           progress=None, cancel=None):
    from ..core.io import read_tilt_series
    from ..core.preprocess import prepare

    if progress:
        progress(0, 2, "reading...")
    stack_axis, transpose = STACK_LAYOUTS.get(layout, (0, False))
    ts = read_tilt_series(path, angles=angles or None, pixel_size=pixel_size or None, angle_units=angle_units,
                          angle_convention=convention, tilt_axis_angle=tilt_axis_angle, stack_axis=stack_axis,
                          transpose_projections=transpose)
    if progress:
        progress(1, 2, "preparing...")
    if background or normalize or denoise or tilt_axis is not None:
        ts, _ = prepare(ts, background=background, normalize=normalize, denoise=denoise, tilt_axis=tilt_axis)
    if progress:
        progress(2, 2, "read")
    return ts


class LoadWidget(WorkerWidget):
    """Open a tilt series (MRC/TIFF/NPY/MAT) with its angles and pixel size; the projections
    appear as an image stack (the slider previews each projection)."""

    run_label = "Load"
    has_device = False

    def build_form(self, form):
        self.path = QLineEdit()
        self.angles = QLineEdit()
        self.angles.setPlaceholderText("beside the file when empty")
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0.0, 100.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSpecialValueText("from header")
        self.pixel_size.setSuffix(" Å")
        self.angle_units = QComboBox()
        self.angle_units.addItems(["deg", "rad"])
        self.layout_box = QComboBox()
        self.layout_box.addItems(list(STACK_LAYOUTS))
        self.convention = QComboBox()
        self.convention.addItems(["zyz", "zyx", "tilt-axis"])
        self.tilt_axis_angle = QDoubleSpinBox()
        self.tilt_axis_angle.setRange(-180.0, 180.0)
        self.tilt_axis_angle.setDecimals(2)
        self.tilt_axis_angle.setSuffix(" °")
        self.background = QComboBox()
        self.background.addItems(["none", "constant", "plane", "quadratic"])
        self.normalize = QCheckBox("equal total intensity across tilts")
        self.denoise = QComboBox()
        self.denoise.addItems(["none", "bm3d"])
        self.find_axis = QCheckBox("find the tilt axis and rotate it onto v")
        form.addRow("tilt series", _path_row(self.path, "Tilt series",
                                             filters="*.mrc *.st *.ali *.tif *.tiff *.npy *.mat *.emd *.dm3 *.dm4 *.h5"))
        form.addRow("angles", _path_row(self.angles, "Tilt angles"))
        form.addRow("pixel size", self.pixel_size)
        form.addRow("stack layout", self.layout_box)
        form.addRow("angle units", self.angle_units)
        form.addRow("angle convention", self.convention)
        form.addRow("tilt-axis angle", self.tilt_axis_angle)
        form.addRow("background", self.background)
        form.addRow("normalise", self.normalize)
        form.addRow("denoise", self.denoise)
        form.addRow("tilt axis", self.find_axis)
        self.settings.update(path=self.path, angles=self.angles, pixel_size=self.pixel_size, angle_units=self.angle_units,
                             layout=self.layout_box, convention=self.convention, tilt_axis_angle=self.tilt_axis_angle,
                             background=self.background,
                             normalize=self.normalize, denoise=self.denoise, find_axis=self.find_axis)

    def start(self):
        if not self.path.text().strip():
            self.status.setText("choose a tilt-series file first")
            return
        none = lambda box: None if box.currentText() == "none" else box.currentText()  # noqa: E731
        self.launch(_read_tilt_series_task, self.path.text().strip(), self.angles.text().strip(),
                    self.pixel_size.value(), self.angle_units.currentText(), self.convention.currentText(),
                    self.tilt_axis_angle.value(), none(self.background), self.normalize.isChecked(), none(self.denoise),
                    "auto" if self.find_axis.isChecked() else None, self.layout_box.currentText())

    def on_result(self, ts):
        from pathlib import Path

        from .._layers import tilt_series_layer

        self.add_layer(tilt_series_layer(ts, name=Path(str(ts.source or "tilt series")).stem))
        a = np.asarray(ts.angles)
        tilt = a if a.ndim == 1 else a[:, 1]
        axis = (ts.metadata or {}).get("preprocessing", {}).get("tilt_axis")
        extra = f"; tilt axis {axis['tilt_axis_angle_deg']:+.2f}° rotated onto v" if axis else ""
        self.status.setText(f"{ts.n_projections} projections of {ts.data.shape[1]}×{ts.data.shape[2]} px, "
                            f"{ts.pixel_size} Å/px, tilts {tilt.min():.1f}° to {tilt.max():.1f}° "
                            f"(angles: {(ts.metadata or {}).get('angles_source')}){extra}")


# ---------------------------------------------------------------------------- align


def _align_task(tilts, angles, method, rounds, refine_angles, pixel_size, device, progress=None, cancel=None):
    from ..core.align import align, apply_shifts

    res = align(tilts, angles, method=method, rounds=rounds, refine_angles=refine_angles, pixel_size=pixel_size,
                device=device, progress=progress, cancel=cancel)
    return res, apply_shifts(tilts, -res.shifts)  # shifts are what was applied; undo them


class AlignWidget(WorkerWidget):
    """Align a tilt series (centre of mass, cross-correlation or projection matching with
    angle refinement); adds the aligned tilt series with the refined angles."""

    run_label = "Align"
    layer_kinds = ("tilt_series",)

    def build_form(self, form):
        self.method = QComboBox()
        self.method.addItems(["projection-matching", "cross-correlation", "com"])
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 50)
        self.rounds.setValue(6)
        self.refine_angles = QCheckBox("refine tilt angles")
        self.refine_angles.setChecked(True)
        form.addRow("tilt series", self.layer_box)
        form.addRow("method", self.method)
        form.addRow("rounds", self.rounds)
        form.addRow("", self.refine_angles)
        self.settings.update(method=self.method, rounds=self.rounds, refine_angles=self.refine_angles)

    def start(self):
        layer = self.selected_layer()
        meta = aet_meta(layer)
        if layer is None or not meta.get("angles") or not meta.get("pixel_size"):
            self.status.setText("no tilt series with angles and a pixel size: load one first")
            return
        self._source = layer
        self.status.setText("aligning...")
        self.launch(_align_task, np.asarray(layer.data, np.float32), np.asarray(meta["angles"]), self.method.currentText(),
                    self.rounds.value(), self.refine_angles.isChecked(), float(meta["pixel_size"]),
                    self.device.currentText())

    def on_result(self, result):
        from .._layers import tilt_series_layer
        from ..core.io import TiltSeries

        res, aligned = result
        meta = aet_meta(self._source)
        ts = TiltSeries(aligned, np.asarray(res.angles), meta["pixel_size"], meta.get("source"))
        data, kwargs, kind = tilt_series_layer(ts, name=f"{self._source.name} (aligned)")
        kwargs["metadata"]["napari_aet"]["alignment"] = res.summary()
        self.add_layer((data, kwargs, kind))
        s = np.abs(np.asarray(res.shifts))
        self.status.setText(f"aligned: largest shift {s.max():.2f} px, tilt-axis offset {res.tilt_axis_offset:.2f} px")


# ---------------------------------------------------------------------- reconstruct


def _tilt_range(angles) -> Optional[float]:
    """The largest |tilt| of a single-axis series (None for Euler angles)."""
    a = np.asarray(angles, float)
    return float(np.abs(a).max()) if a.ndim == 1 else None


def _reconstruct_task(tilts, angles, pixel_size, method, iterations, device, fourier, progress=None, cancel=None):
    from .._layers import fourier_views
    from ..core.reconstruct import reconstruct

    res = reconstruct(tilts, angles, pixel_size, method=method, iterations=iterations, device=device,
                      progress=progress, cancel=cancel)
    tilt_range = _tilt_range(angles)
    return res, tilt_range, fourier_views(res.volume, tilt_range) if fourier else None


class ReconstructWidget(WorkerWidget):
    """Reconstruct a tomogram (RESIRE, SIRT or GENFIRE-style) from a tilt-series layer."""

    run_label = "Reconstruct"
    layer_kinds = ("tilt_series",)

    def build_form(self, form):
        self.method = QComboBox()
        self.method.addItems(["resire", "sirt", "genfire"])
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 10000)
        self.iterations.setValue(100)
        self.show_fourier = QCheckBox("show Fourier intensity and missing wedge")
        form.addRow("tilt series", self.layer_box)
        form.addRow("method", self.method)
        form.addRow("iterations", self.iterations)
        form.addRow("", self.show_fourier)
        self.settings.update(method=self.method, iterations=self.iterations, show_fourier=self.show_fourier)

    def start(self):
        layer = self.selected_layer()
        if layer is None:
            self.status.setText("no tilt series layer: open one (File > Open) or the sample first")
            return
        meta = aet_meta(layer)
        if not meta.get("angles") or not meta.get("pixel_size"):
            self.status.setText("this tilt series has no angles or pixel size; open it with its angles file and a header pixel size")
            return
        self._angles = np.asarray(meta["angles"], float)
        self.status.setText("reconstructing...")
        self.launch(_reconstruct_task, np.asarray(layer.data), self._angles, float(meta["pixel_size"]),
                    self.method.currentText(), self.iterations.value(), self.device.currentText(),
                    self.show_fourier.isChecked())

    def on_result(self, output):
        from .._layers import fourier_layers

        result, tilt_range, views = output
        name = f"tomogram ({result.method})"
        data, kwargs, kind = volume_layer(Volume(result.volume, result.pixel_size), name=name)
        kwargs["metadata"]["napari_aet"]["tilt_range"] = tilt_range
        self.add_layer((data, kwargs, kind))
        if views is not None:
            for ld in fourier_layers(Volume(result.volume, result.pixel_size), tilt_range, name, views):
                self.add_layer(ld)
        self.status.setText(f"{result.method}: {result.iterations} iterations in {result.seconds:.1f} s, "
                            f"R = {result.r_factors[-1]:.4f}")


# -------------------------------------------------------------------------- enhance


def _enhance_task(volume, pixel_size, weights, flip_average, device, tilt_range=None, fourier=False,
                  trust=False, progress=None, cancel=None):
    from .._layers import fourier_views
    from ..core.enhance import check_intensity_range, enhance_volume, load_weights

    model, meta = load_weights(weights or None, device=device, trust=trust)
    out = enhance_volume(volume, model, pixel_size, meta.get("training_pixel_size"), flip_average=flip_average,
                         device=device, progress=progress, cancel=cancel)
    views = (fourier_views(volume, tilt_range), fourier_views(out, None)) if fourier else None
    return out, check_intensity_range(volume, meta), views


class EnhanceWidget(WorkerWidget):
    """Recover the missing wedge with the U-Net (shipped weights unless others are chosen);
    adds the enhanced tomogram and, optionally, the Fourier intensity before and after."""

    run_label = "Enhance"
    layer_kinds = ("tomogram",)

    def build_form(self, form):
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("shipped weights (resources/unet_pt.pt)")
        self.flip_average = QCheckBox("average over flips (slower, smoother)")
        self.show_fourier = QCheckBox("show Fourier intensity before and after")
        self.trust_weights = QCheckBox("accept weights without a checksum file")
        self.show_fourier.setChecked(True)
        form.addRow("tomogram", self.layer_box)
        form.addRow("weights", _path_row(self.weights, "U-Net weights", filters="*.pt"))
        form.addRow("", self.flip_average)
        form.addRow("", self.show_fourier)
        form.addRow("", self.trust_weights)  # deliberately not remembered: a per-file decision
        self.settings.update(weights=self.weights, flip_average=self.flip_average, show_fourier=self.show_fourier)

    def _refresh_layers(self, *_):
        super()._refresh_layers()
        # never offer an enhanced tomogram as input by default
        raw = [l.name for l in self.layers_of_kind(self.layer_kinds) if not aet_meta(l).get("enhanced")]
        if raw and aet_meta(self.selected_layer()).get("enhanced"):
            self.layer_box.setCurrentText(raw[-1])

    def start(self):
        layer = self.selected_layer()
        px = aet_meta(layer).get("pixel_size")
        if layer is None or not px:
            self.status.setText("no tomogram with a voxel size: reconstruct or open one first")
            return
        self._source = layer
        self.status.setText("enhancing...")
        self.launch(_enhance_task, np.asarray(layer.data, np.float32), float(px), self.weights.text().strip(),
                    self.flip_average.isChecked(), self.device.currentText(), aet_meta(layer).get("tilt_range"),
                    self.show_fourier.isChecked(), self.trust_weights.isChecked())

    def on_result(self, result):
        from .._layers import fourier_layers

        out, warning, views = result
        meta = aet_meta(self._source)
        vol = Volume(out, meta["pixel_size"])
        name = f"{self._source.name} enhanced"
        data, kwargs, kind = volume_layer(vol, name=name)
        kwargs["metadata"]["napari_aet"].update(enhanced=True, tilt_range=meta.get("tilt_range"))
        self.add_layer((data, kwargs, kind))
        if views is not None:
            before = Volume(np.asarray(self._source.data, np.float32), meta["pixel_size"])
            for ld in (fourier_layers(before, meta.get("tilt_range"), self._source.name, views[0])
                       + fourier_layers(vol, None, name, views[1])):
                self.add_layer(ld)
        self.status.setText(warning or "enhanced")


# ---------------------------------------------------------------------------- trace


class TraceWidget(WorkerWidget):
    """Trace atoms in a tomogram layer; atoms become a Points layer with their features."""

    run_label = "Trace atoms"
    layer_kinds = ("tomogram", "ideal_tomogram")

    def build_form(self, form):
        self.min_distance = QDoubleSpinBox()
        self.min_distance.setRange(0.5, 10.0)
        self.min_distance.setSingleStep(0.1)
        self.min_distance.setValue(2.0)
        self.min_distance.setSuffix(" Å")
        form.addRow("tomogram", self.layer_box)
        form.addRow("min. distance", self.min_distance)
        self.settings.update(min_distance=self.min_distance)

    def start(self):
        from ..core.trace import trace_atoms

        layer = self.selected_layer()
        px = aet_meta(layer).get("pixel_size")
        if layer is None or not px:
            self.status.setText("no tomogram layer with a voxel size: reconstruct or open one first")
            return
        self.status.setText("tracing...")
        self._source = layer.name
        self.launch(trace_atoms, np.asarray(layer.data), float(px), min_distance=self.min_distance.value())

    def on_result(self, result):
        from .._layers import atoms_layer

        atoms = result.atoms
        data, kwargs, kind = atoms_layer(atoms, name="traced atoms", metadata=result.metadata)
        kwargs["metadata"]["napari_aet"]["tomogram"] = self._source
        self.add_layer((data, kwargs, kind))
        self.status.setText(f"{len(atoms)} atoms, {result.metadata['n_peaks'] - len(atoms)} non-atom peaks")


# -------------------------------------------------------------------------- analyze


def layer_table(layer):
    """The atoms table (sample-frame Å) of a Points layer."""
    from .._layers import points_to_table

    return points_to_table(layer.data, {"scale": layer.scale, "translate": layer.translate,
                                        "features": layer.features})


def recolour(layer, by: str) -> None:
    """Colour a Points layer's atoms by a feature (see :func:`napari_aet._layers.atom_colours`)."""
    from .._layers import atom_colours

    spec = atom_colours(layer.features, by)
    if isinstance(spec["face_color"], str):
        layer.face_color = spec["face_color"]
        layer.face_colormap = spec["face_colormap"]
        layer.face_contrast_limits = spec["face_contrast_limits"]
        layer.face_colorbar.visible = True
    else:
        layer.face_colorbar.visible = False
        layer.face_color = spec["face_color"]
    aet_meta(layer)["colour_by"] = by


class AnalyzeWidget(WorkerWidget):
    """Fit the f.c.c. lattice, find surface atoms and facets, compute displacements and strain;
    colour the atoms by assignment, facet, layer or any strain/displacement component, and show
    one layer's displacements as arrows (the slider picks the layer)."""

    run_label = "Analyze"
    layer_kinds = ("atoms",)
    has_device = False

    def build_form(self, form):
        self.lattice_constant = QDoubleSpinBox()
        self.lattice_constant.setRange(0.0, 10.0)
        self.lattice_constant.setDecimals(4)
        self.lattice_constant.setSpecialValueText("fit")
        self.lattice_constant.setSuffix(" Å")
        self.layer_axis = QComboBox()
        self.layer_axis.addItems(["001", "010", "100", "111"])
        form.addRow("atoms", self.layer_box)
        form.addRow("lattice constant", self.lattice_constant)
        form.addRow("layers along", self.layer_axis)
        self.settings.update(lattice_constant=self.lattice_constant, layer_axis=self.layer_axis)

    def build_extra(self, layout):
        form = QFormLayout()
        self.colour_by = QComboBox()
        self.colour_by.currentTextChanged.connect(self._recolour)
        self.layer_slider = QSlider(Qt.Orientation.Horizontal)
        self.layer_slider.setEnabled(False)
        self.layer_slider.valueChanged.connect(self._show_layer)
        self.layer_label = QLabel("")
        self.exaggeration = QDoubleSpinBox()
        self.exaggeration.setRange(1.0, 500.0)
        self.exaggeration.setValue(20.0)
        self.exaggeration.setPrefix("× ")
        self.exaggeration.valueChanged.connect(lambda *_: self._show_layer(self.layer_slider.value()))
        form.addRow("colour atoms by", self.colour_by)
        form.addRow("displacement layer", self.layer_slider)
        form.addRow("", self.layer_label)
        form.addRow("arrow length", self.exaggeration)
        self.settings.update(exaggeration=self.exaggeration)
        layout.addLayout(form)
        self._analysed = None

    def start(self):
        from ..core.analysis import analyze_atoms

        layer = self.selected_layer()
        if layer is None or len(layer.data) < 4:
            self.status.setText("no atoms layer with atoms: trace atoms first")
            return
        self._target = layer
        self.status.setText("analysing...")
        self.launch(analyze_atoms, layer_table(layer), lattice_constant=self.lattice_constant.value() or None,
                    layer_axis=self.layer_axis.currentText())

    def on_result(self, result):
        from .._layers import colour_options

        table, summary = result
        layer = self._target
        feats = table.drop(columns=["x", "y", "z"]).reset_index(drop=True)
        layer.features = feats
        meta = aet_meta(layer)
        meta["analysis"] = {k: v for k, v in summary.items() if k != "grid"}
        self._analysed = (layer, table, summary["lattice"])
        previous = self.colour_by.currentText()
        self.colour_by.blockSignals(True)
        self.colour_by.clear()
        self.colour_by.addItems(colour_options(feats))
        self.colour_by.blockSignals(False)
        self.colour_by.setCurrentText(previous if previous in colour_options(feats) else "fcc")
        self._recolour(self.colour_by.currentText())
        layers = sorted(int(v) for v in table["layer"].dropna().unique())
        self.layer_slider.setRange(min(layers), max(layers))
        self.layer_slider.setEnabled(True)
        self.layer_slider.setValue(layers[len(layers) // 2])
        self._show_layer(self.layer_slider.value())
        lat = summary["lattice"]
        self.status.setText(f"a = {lat['lattice_constant']:.4f} Å, {summary['share_assigned']:.1%} on "
                            f"f.c.c. sites, {len(layers)} layers")

    def _recolour(self, by: str):
        if self._analysed and by:
            recolour(self._analysed[0], by)

    def _show_layer(self, index: int):
        from .._layers import displacement_vectors

        if not self._analysed:
            return
        layer, table, lattice = self._analysed
        data, feats = displacement_vectors(table, lattice, int(index), self.exaggeration.value())
        name = "displacement"
        kwargs = dict(name=name, features=feats, edge_width=0.25, edge_color="magnitude", edge_colormap="viridis",
                      vector_style="arrow", units=("angstrom",) * 3,
                      metadata={"napari_aet": {"kind": "displacement", "layer": int(index)}})
        if name in self.viewer.layers:
            v = self.viewer.layers[name]
            v.data = data if len(data) else np.zeros((0, 2, 3))
            v.features = feats
            if len(data):
                v.edge_color = "magnitude"
            aet_meta(v)["layer"] = int(index)
        else:
            self.viewer.add_vectors(data if len(data) else np.zeros((0, 2, 3)), **kwargs)
        mean = float(feats["magnitude"].mean()) if len(feats) else float("nan")
        self.layer_label.setText(f"layer {index}: {len(data)} atoms, mean |u| = {100 * mean:.1f} pm "
                                 f"(arrows × {self.exaggeration.value():g})")

"""Dock widgets for the steps: each gathers inputs, runs the core in a thread worker (the GUI
stays responsive), shows progress, can be cancelled between steps, and adds its layers in Å.

* Reconstruct: :func:`napari_aet.core.reconstruct.reconstruct` on a tilt-series layer.
* Trace: :func:`napari_aet.core.trace.trace_atoms` on a tomogram layer.
"""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from .._layers import volume_layer
from ..core.io import Volume


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


class WorkerWidget(QWidget):
    """Base of the step widgets: a form, Run/Cancel, a progress bar, a status line, and a
    core function run in a napari thread worker with a progress callback and a cancel flag."""

    run_label = "Run"
    layer_kinds: tuple = ()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._cancel = None
        self.worker = None
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
        form.addRow("device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addStretch()
        self.relay = _Relay()
        self.relay.progressed.connect(self._on_progress)
        self.run_button.clicked.connect(self.start)
        self.layer_box.setToolTip("input layer")
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def build_form(self, form):
        """Add the step's input rows to ``form`` (each subclass defines its own)."""

    def layers_of_kind(self, kinds):
        return [l for l in self.viewer.layers if (l.metadata.get("napari_aet") or {}).get("kind") in kinds]

    def _refresh_layers(self, *_):
        current = self.layer_box.currentText()
        self.layer_box.clear()
        self.layer_box.addItems([l.name for l in self.layers_of_kind(self.layer_kinds)])
        if current:
            self.layer_box.setCurrentText(current)

    def selected_layer(self):
        name = self.layer_box.currentText()
        return next((l for l in self.layers_of_kind(self.layer_kinds) if l.name == name), None)

    def launch(self, func, *args, **kwargs):
        """Run ``func(*args, progress=..., cancel=..., **kwargs)`` in a worker thread."""
        from napari.qt.threading import create_worker

        self._cancel = threading.Event()
        relay = self.relay
        kwargs.update(cancel=self._cancel, progress=lambda d, t, m: relay.progressed.emit(d, t, m))
        self.worker = create_worker(func, *args, **kwargs, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self.on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()

    def _on_progress(self, done: int, total: int, message: str):
        self.bar.setMaximum(total)
        self.bar.setValue(done)
        self.status.setText(message)

    def cancel(self):
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling after this iteration...")

    def _on_error(self, exc):
        from ..core.errors import Cancelled

        self.status.setText("cancelled" if isinstance(exc, Cancelled) else f"error: {str(exc).splitlines()[0]}")

    def _on_finished(self):
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


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
        form.addRow("tilt series", self.layer_box)
        form.addRow("method", self.method)
        form.addRow("iterations", self.iterations)

    def start(self):
        from ..core.reconstruct import reconstruct

        layer = self.selected_layer()
        if layer is None:
            self.status.setText("no tilt series layer: open one (File > Open) or the sample first")
            return
        meta = layer.metadata["napari_aet"]
        if not meta.get("angles") or not meta.get("pixel_size"):
            self.status.setText("this tilt series has no angles or pixel size; open it with its angles file and a header pixel size")
            return
        self.status.setText("reconstructing...")
        self.launch(reconstruct, np.asarray(layer.data), np.asarray(meta["angles"]), float(meta["pixel_size"]),
                    method=self.method.currentText(), iterations=self.iterations.value(), device=self.device.currentText())

    def on_result(self, result):
        data, kwargs, _ = volume_layer(Volume(result.volume, result.pixel_size), name=f"tomogram ({result.method})")
        self.viewer.add_image(data, **kwargs)
        self.status.setText(f"{result.method}: {result.iterations} iterations in {result.seconds:.1f} s, "
                            f"R = {result.r_factors[-1]:.4f}")


class TraceWidget(WorkerWidget):
    """Trace atoms in a tomogram layer; atoms become a Points layer with their features."""

    run_label = "Trace atoms"
    layer_kinds = ("tomogram", "ideal_tomogram")

    def build_form(self, form):
        from qtpy.QtWidgets import QDoubleSpinBox

        self.min_distance = QDoubleSpinBox()
        self.min_distance.setRange(0.5, 10.0)
        self.min_distance.setSingleStep(0.1)
        self.min_distance.setValue(2.0)
        self.min_distance.setSuffix(" Å")
        form.addRow("tomogram", self.layer_box)
        form.addRow("min. distance", self.min_distance)

    def start(self):
        from ..core.trace import trace_atoms

        layer = self.selected_layer()
        px = (layer.metadata.get("napari_aet") or {}).get("pixel_size") if layer is not None else None
        if layer is None or not px:
            self.status.setText("no tomogram layer with a voxel size: reconstruct or open one first")
            return
        self.status.setText("tracing...")
        self.launch(trace_atoms, np.asarray(layer.data), float(px), min_distance=self.min_distance.value())

    def on_result(self, result):
        from .._layers import atoms_layer

        atoms = result.atoms
        data, kwargs, _ = atoms_layer(atoms, name="traced atoms", metadata=result.metadata)
        self.viewer.add_points(data, **kwargs)
        self.status.setText(f"{len(atoms)} atoms, {result.metadata['n_peaks'] - len(atoms)} non-atom peaks")

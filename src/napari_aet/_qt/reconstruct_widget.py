"""Dock widget: reconstruct a tomogram from a tilt-series layer in a thread worker.

Thin over :func:`napari_aet.core.reconstruct.reconstruct`: it gathers the inputs, runs the
core in a background thread (the GUI stays responsive), shows progress with the R-factor,
can be cancelled between iterations, and adds the tomogram as an Image layer in Å.
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


class ReconstructWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._cancel = None
        self.worker = None
        self.layer_box = QComboBox()
        self.method = QComboBox()
        self.method.addItems(["resire", "sirt", "genfire"])
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 10000)
        self.iterations.setValue(100)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.run_button = QPushButton("Reconstruct")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("tilt series", self.layer_box)
        form.addRow("method", self.method)
        form.addRow("iterations", self.iterations)
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
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def _tilt_layers(self):
        return [l for l in self.viewer.layers
                if (l.metadata.get("napari_aet") or {}).get("kind") == "tilt_series"]

    def _refresh_layers(self, *_):
        current = self.layer_box.currentText()
        self.layer_box.clear()
        self.layer_box.addItems([l.name for l in self._tilt_layers()])
        if current:
            self.layer_box.setCurrentText(current)

    def _on_progress(self, done: int, total: int, message: str):
        self.bar.setMaximum(total)
        self.bar.setValue(done)
        self.status.setText(message)

    def start(self):
        from napari.qt.threading import create_worker

        from ..core.reconstruct import reconstruct

        name = self.layer_box.currentText()
        layer = next((l for l in self._tilt_layers() if l.name == name), None)
        if layer is None:
            self.status.setText("no tilt series layer: open one (File > Open) or the sample first")
            return
        meta = layer.metadata["napari_aet"]
        if not meta.get("angles") or not meta.get("pixel_size"):
            self.status.setText("this tilt series has no angles or pixel size; open it with its angles file and a header pixel size")
            return
        data, angles, px = np.asarray(layer.data), np.asarray(meta["angles"]), float(meta["pixel_size"])
        self._cancel = threading.Event()
        relay, cancel = self.relay, self._cancel
        kwargs = dict(method=self.method.currentText(), iterations=self.iterations.value(),
                      device=self.device.currentText(), cancel=cancel,
                      progress=lambda d, t, m: relay.progressed.emit(d, t, m))
        self.worker = create_worker(reconstruct, data, angles, px, **kwargs, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("reconstructing...")
        self.worker.start()

    def cancel(self):
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling after this iteration...")

    def _on_result(self, result):
        data, kwargs, _ = volume_layer(Volume(result.volume, result.pixel_size),
                                       name=f"tomogram ({result.method})")
        self.viewer.add_image(data, **kwargs)
        self.status.setText(f"{result.method}: {result.iterations} iterations in {result.seconds:.1f} s, "
                            f"R = {result.r_factors[-1]:.4f}")

    def _on_error(self, exc):
        from ..core.errors import Cancelled

        self.status.setText("cancelled" if isinstance(exc, Cancelled) else f"error: {str(exc).splitlines()[0]}")

    def _on_finished(self):
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

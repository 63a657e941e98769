"""Load tilt series: a microscope or array file with its angles and pixel size, preprocessed on request."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit

from .base import WorkerWidget, _path_row


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

"""Load tilt series: a microscope or array file with its angles and pixel size, preprocessed on request."""

from __future__ import annotations

import numpy as np

from .base import WorkerWidget, choice, flag, number, path_field, path_text


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
        self.path = path_field("tilt series", filter="*.mrc *.st *.ali *.tif *.tiff *.npy *.mat *.emd *.dm3 *.dm4 *.h5")
        self.angles = path_field("angles", placeholder="beside the file when empty")
        self.pixel_size = number("pixel size", 0.0, 100.0, 0.0, decimals=4, suffix=" Å", special="from header")
        self.layout_box = choice("stack layout", list(STACK_LAYOUTS))
        self.angle_units = choice("angle units", ["deg", "rad"])
        self.convention = choice("angle convention", ["zyz", "zyx", "tilt-axis"])
        self.tilt_axis_angle = number("tilt-axis angle", -180.0, 180.0, 0.0, decimals=2, suffix=" °")
        self.background = choice("background", ["none", "constant", "plane", "quadratic"])
        self.normalize = flag("equal total intensity across tilts")
        self.normalize.label = "normalise"
        self.denoise = choice("denoise", ["none", "bm3d"])
        self.find_axis = flag("find the tilt axis and rotate it onto v")
        self.find_axis.label = "tilt axis"
        form.extend([self.path, self.angles, self.pixel_size, self.layout_box, self.angle_units, self.convention,
                     self.tilt_axis_angle, self.background, self.normalize, self.denoise, self.find_axis])
        self.settings.update(path=self.path, angles=self.angles, pixel_size=self.pixel_size, angle_units=self.angle_units,
                             layout=self.layout_box, convention=self.convention, tilt_axis_angle=self.tilt_axis_angle,
                             background=self.background,
                             normalize=self.normalize, denoise=self.denoise, find_axis=self.find_axis)

    def start(self):
        if not path_text(self.path):
            self.status.setText("choose a tilt-series file first")
            return
        none = lambda box: None if box.value == "none" else box.value  # noqa: E731
        self.launch(_read_tilt_series_task, path_text(self.path), path_text(self.angles),
                    self.pixel_size.value, self.angle_units.value, self.convention.value,
                    self.tilt_axis_angle.value, none(self.background), self.normalize.value, none(self.denoise),
                    "auto" if self.find_axis.value else None, self.layout_box.value)

    def on_result(self, ts):
        from pathlib import Path

        from .._layers import tilt_series_layer

        self.add_layer(tilt_series_layer(ts, name=Path(str(ts.source or "tilt series")).stem))
        a = np.asarray(ts.angles)
        tilt = a if a.ndim == 1 else a[:, 1]
        axis = (ts.metadata or {}).get("preprocessing", {}).get("tilt_axis")
        extra = f"; tilt axis {axis['tilt_axis_angle_deg']:+.2f}° rotated onto v" if axis else ""
        self.status.setText(f"{ts.n_projections} projections of {ts.data.shape[1]}×{ts.data.shape[2]} px, "
                            f"{f'{ts.pixel_size:.4g} Å/px' if ts.pixel_size else 'pixel size unknown'}, tilts {tilt.min():.1f}° to {tilt.max():.1f}° "
                            f"(angles: {(ts.metadata or {}).get('angles_source')}){extra}")

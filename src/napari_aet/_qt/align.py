"""Align: shifts (and optionally angles) of the tilt series by centre of mass or projection matching."""

from __future__ import annotations

import numpy as np

from .base import WorkerWidget, aet_meta, choice, flag, integer


def _align_task(tilts, angles, method, rounds, refine_angles, pixel_size, device, progress=None, cancel=None):
    from ..core.align import align
    from ..core.io import TiltSeries

    res = align(tilts, angles, method=method, rounds=rounds, refine_angles=refine_angles, pixel_size=pixel_size,
                device=device, progress=progress, cancel=cancel)
    return res, res.apply(TiltSeries(tilts, angles, pixel_size))


class AlignWidget(WorkerWidget):
    """Align a tilt series (centre of mass, cross-correlation or projection matching with
    angle refinement); adds the aligned tilt series with the refined angles."""

    run_label = "Align"
    layer_kinds = ("tilt_series",)

    def build_form(self, form):
        self.layer_box.label = "tilt series"
        self.method = choice("method", ["projection-matching", "cross-correlation", "com"])
        self.rounds = integer("rounds", 1, 50, 6)
        self.refine_angles = flag("refine tilt angles", True)
        form.extend([self.layer_box, self.method, self.rounds, self.refine_angles])
        self.settings.update(method=self.method, rounds=self.rounds, refine_angles=self.refine_angles)

    def layer_rank(self, layer) -> int:
        return 1 if aet_meta(layer).get("alignment") else 0  # the series as loaded before an aligned one

    def start(self):
        layer = self.selected_layer()
        meta = aet_meta(layer)
        if layer is None or not meta.get("angles") or not meta.get("pixel_size"):
            self.status.setText("no tilt series with angles and a pixel size: load one first")
            return
        self._source = layer
        self.status.setText("aligning...")
        self.launch(_align_task, np.asarray(layer.data, np.float32), np.asarray(meta["angles"]), self.method.value,
                    self.rounds.value, self.refine_angles.value, float(meta["pixel_size"]), self.device.value)

    def on_result(self, result):
        from .._layers import tilt_series_layer

        res, ts = result
        ts.source = aet_meta(self._source).get("source")
        data, kwargs, kind = tilt_series_layer(ts, name=f"{self._source.name} (aligned)")
        kwargs["metadata"]["napari_aet"]["alignment"] = res.summary()
        self.add_layer((data, kwargs, kind))
        s = np.abs(np.asarray(res.shifts))
        self.status.setText(f"aligned: largest shift {s.max():.2f} px, tilt-axis offset {res.tilt_axis_offset:.2f} px")

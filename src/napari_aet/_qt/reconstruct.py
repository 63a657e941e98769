"""Reconstruct: RESIRE, SIRT or the GENFIRE-style method, with the Fourier view of the missing wedge."""

from __future__ import annotations


import numpy as np

from .._layers import volume_layer
from ..core import geometry
from ..core.io import Volume
from .base import WorkerWidget, aet_meta, choice, flag, integer
from .side import show_fourier


def _reconstruct_task(tilts, angles, pixel_size, method, iterations, device, fourier, progress=None, cancel=None):
    from .._layers import fourier_views
    from ..core.reconstruct import reconstruct

    res = reconstruct(tilts, angles, pixel_size, method=method, iterations=iterations, device=device,
                      progress=progress, cancel=cancel)
    tilt_range = geometry.tilt_range(angles)
    return res, tilt_range, fourier_views(res.volume, tilt_range) if fourier else None


class ReconstructWidget(WorkerWidget):
    """Reconstruct a tomogram (RESIRE, SIRT or GENFIRE-style) from a tilt-series layer."""

    run_label = "Reconstruct"
    layer_kinds = ("tilt_series",)

    def build_form(self, form):
        self.layer_box.label = "tilt series"
        self.method = choice("method", ["resire", "sirt", "genfire"])
        self.iterations = integer("iterations", 1, 10000, 100)
        self.show_fourier = flag("show Fourier intensity and missing wedge (own viewer, 1/Å)")
        form.extend([self.layer_box, self.method, self.iterations, self.show_fourier])
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
        self._source_name = layer.name  # the tilt series Enhance checks the network's tomogram against
        self.status.setText("reconstructing...")
        self.launch(_reconstruct_task, np.asarray(layer.data), self._angles, float(meta["pixel_size"]),
                    self.method.value, self.iterations.value, self.device.value, self.show_fourier.value)

    def on_result(self, output):
        from .._layers import fourier_layers

        result, tilt_range, views = output
        name = f"tomogram ({result.method})"
        data, kwargs, kind = volume_layer(Volume(result.volume, result.pixel_size), name=name)
        kwargs["metadata"]["napari_aet"].update(tilt_range=tilt_range, tilt_series=self._source_name)
        self.add_layer((data, kwargs, kind))
        if views is not None:  # in their own viewer: 1/Å, never mixed with the Å layers here
            show_fourier(self, fourier_layers(Volume(result.volume, result.pixel_size), tilt_range, name, views))
        self.status.setText(f"{result.method}: {result.iterations} iterations in {result.seconds:.1f} s, "
                            f"R = {result.r_factors[-1]:.4f}")

"""Reconstruct: RESIRE, SIRT or the GENFIRE-style method, with the Fourier view of the missing wedge."""

from __future__ import annotations


import numpy as np

from .._layers import volume_layer
from ..core import geometry
from ..core.io import Volume
from .base import WorkerWidget, aet_meta, choice, flag, integer, number
from .side import show_fourier


def _reconstruct_task(tilts, angles, pixel_size, method, iterations, device, fourier, hold_out=0.0, progress=None,
                      cancel=None):
    from .._layers import fourier_views
    from ..core.confidence import split_free_projections
    from ..core.reconstruct import reconstruct

    free = split_free_projections(angles, hold_out)  # as run: R-free needs projections the tomogram never saw
    res = reconstruct(tilts[~free], angles[~free], pixel_size, method=method, iterations=iterations, device=device,
                      progress=progress, cancel=cancel)
    tilt_range = geometry.tilt_range(angles)
    return res, tilt_range, fourier_views(res.volume, tilt_range) if fourier else None, np.flatnonzero(free).tolist()


class ReconstructWidget(WorkerWidget):
    """Reconstruct a tomogram (RESIRE, SIRT or GENFIRE-style) from a tilt-series layer."""

    run_label = "Reconstruct"
    layer_kinds = ("tilt_series",)

    def build_form(self, form):
        self.layer_box.label = "tilt series"
        self.method = choice("method", ["resire", "sirt", "genfire"])
        self.iterations = integer("iterations", 1, 10000, 100)
        self.show_fourier = flag("show Fourier intensity and missing wedge (own viewer, 1/Å)")
        self.hold_out = number("hold out for R-free", 0.0, 0.5, 0.1, decimals=2)
        self.hold_out.tooltip = ("share of projections left out of the tomogram (as run does): Enhance judges the "
                                 "network and Trace measures the atoms' R-free on them; 0: none")
        form.extend([self.layer_box, self.method, self.iterations, self.show_fourier, self.hold_out])
        self.settings.update(method=self.method, iterations=self.iterations, show_fourier=self.show_fourier,
                             hold_out=self.hold_out)

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
                    self.method.value, self.iterations.value, self.device.value, self.show_fourier.value,
                    self.hold_out.value)

    def on_result(self, output):
        from .._layers import fourier_layers

        result, tilt_range, views, free = output
        name = f"tomogram ({result.method})"
        data, kwargs, kind = volume_layer(Volume(result.volume, result.pixel_size), name=name)
        kwargs["metadata"]["napari_aet"].update(tilt_range=tilt_range, tilt_series=self._source_name,
                                                free_projections=free)
        self.add_layer((data, kwargs, kind))
        if views is not None:  # in their own viewer: 1/Å, never mixed with the Å layers here
            show_fourier(self, fourier_layers(Volume(result.volume, result.pixel_size), tilt_range, name, views))
        held = f" ({len(free)} projections held out for R-free)" if free else ""
        self.status.setText(f"{result.method}: {result.iterations} iterations in {result.seconds:.1f} s, "
                            f"R = {result.r_factors[-1]:.4f}{held}")

"""Enhance (U-Net): missing-wedge recovery, with Fourier views before and after."""

from __future__ import annotations

import numpy as np

from .._layers import volume_layer
from ..core.io import Volume
from .base import WorkerWidget, aet_meta, flag, path_field, path_text


def _enhance_task(volume, pixel_size, weights, flip_average, device, tilt_range=None, fourier=False,
                  trust=False, progress=None, cancel=None):
    from .._layers import fourier_views
    from ..core.enhance import enhance_tomogram

    out, info = enhance_tomogram(volume, pixel_size, weights or None, device=device, trust=trust,
                                 flip_average=flip_average, progress=progress, cancel=cancel)
    views = (fourier_views(volume, tilt_range), fourier_views(out, None)) if fourier else None
    return out, info["warning"], views


class EnhanceWidget(WorkerWidget):
    """Recover the missing wedge with the U-Net (shipped weights unless others are chosen);
    adds the enhanced tomogram and, optionally, the Fourier intensity before and after."""

    run_label = "Enhance"
    layer_kinds = ("tomogram",)

    def build_form(self, form):
        self.layer_box.label = "tomogram"
        self.weights = path_field("weights", filter="*.pt", placeholder="shipped weights (resources/unet_pt.pt)")
        self.flip_average = flag("average over flips (slower, smoother)")
        self.show_fourier = flag("show Fourier intensity before and after", True)
        self.trust_weights = flag("accept weights without a checksum file")  # not remembered: a per-file decision
        form.extend([self.layer_box, self.weights, self.flip_average, self.show_fourier, self.trust_weights])
        self.settings.update(weights=self.weights, flip_average=self.flip_average, show_fourier=self.show_fourier)

    def layer_rank(self, layer) -> int:
        return 1 if aet_meta(layer).get("enhanced") else 0  # never an enhanced tomogram by default

    def start(self):
        layer = self.selected_layer()
        px = aet_meta(layer).get("pixel_size")
        if layer is None or not px:
            self.status.setText("no tomogram with a voxel size: reconstruct or open one first")
            return
        self._source = layer
        self.status.setText("enhancing...")
        self.launch(_enhance_task, np.asarray(layer.data, np.float32), float(px), path_text(self.weights),
                    self.flip_average.value, self.device.value, aet_meta(layer).get("tilt_range"),
                    self.show_fourier.value, self.trust_weights.value)

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

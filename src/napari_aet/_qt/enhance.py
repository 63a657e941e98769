"""Enhance (U-Net): missing-wedge recovery, with Fourier views before and after."""

from __future__ import annotations

import numpy as np

from .._layers import volume_layer
from ..core.io import Volume
from .base import WorkerWidget, aet_meta, flag, integer, path_field, path_text
from .side import show_fourier


def _tile_progress(progress):
    """Core's per-tile steps as 'tile k of n' messages."""
    if progress is None:
        return None
    return lambda done, total, _message: progress(done, total, f"enhancing: tile {done} of {total} done")


def _enhance_task(volume, pixel_size, weights, flip_average, device, tilt_range=None, fourier=False,
                  trust=False, measured=None, tile=None, progress=None, cancel=None):
    """Enhance (``tile``: voxels per tile edge, None: as large as memory allows), then
    (``measured``: (tilts, angles)) check the result against the tilt series as
    ``napari-aet enhance`` does; the Fourier views when asked."""
    from .._layers import fourier_views
    from ..core.enhance import data_consistency, enhance_tomogram, load_weights
    from ..core.projector import resolve_device

    say = progress or (lambda *_: None)
    say(0, 0, "loading the network...")
    dev = resolve_device(device)
    network = load_weights(weights or None, device=dev, trust=trust)
    say(0, 0, "enhancing...")
    out, info = enhance_tomogram(volume, pixel_size, network=network, device=dev, flip_average=flip_average,
                                 tile=tile, progress=_tile_progress(progress), cancel=cancel)
    check = None
    if measured is not None:
        say(0, 0, "checking the enhanced tomogram against the tilt series (re-projection R)...")
        check = data_consistency(volume, out, measured[0], measured[1], device=dev, pixel_size=pixel_size,
                                 training_pixel_size=network[1].get("training_pixel_size"))
    if fourier:
        say(0, 0, "Fourier views...")
    views = (fourier_views(volume, tilt_range), fourier_views(out, None)) if fourier else None
    return out, info["warning"], views, check


def consistency_text(check, tilts_name: str = "") -> str:
    """What ``napari-aet enhance`` prints about the data-consistency check, in one line."""
    if check is None:
        return ("no tilt series to check the network's output against (reconstruct in this session, "
                "or open the tilt series the tomogram came from)")
    if check["network_accepted"]:
        return (f"re-projection R against {tilts_name or 'the tilt series'}: {check['r_factor_reconstruction']:.4f} "
                f"-> {check['r_factor_enhanced']:.4f} (within the +{check['tolerance']:g} tolerance); noise/signal "
                f"{check['noise_ratio']:.3f} (validated up to {check['noise_limit']:g})")
    return f"note: {check['reason']}; trace the plain tomogram instead"


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
        self.tile = integer("tile edge (voxels)", 0, 512, 0,
                            tooltip="auto: the whole tomogram when memory allows (fastest); smaller tiles bound "
                            "memory and show progress tile by tile, at the cost of their overlap")
        self.tile.native.setSpecialValueText("auto")
        form.extend([self.layer_box, self.weights, self.flip_average, self.show_fourier, self.trust_weights, self.tile])
        self.settings.update(weights=self.weights, flip_average=self.flip_average, show_fourier=self.show_fourier,
                             tile=self.tile)

    def layer_rank(self, layer) -> int:
        return 1 if aet_meta(layer).get("enhanced") else 0  # never an enhanced tomogram by default

    def start(self):
        layer = self.selected_layer()
        px = aet_meta(layer).get("pixel_size")
        if layer is None or not px:
            self.status.setText("no tomogram with a voxel size: reconstruct or open one first")
            return
        self._source = layer
        self._tilts = self._tilt_series_of(layer)
        measured = None
        if self._tilts is not None:
            measured = (np.asarray(self._tilts.data, np.float32), np.asarray(aet_meta(self._tilts)["angles"], float))
            free = aet_meta(layer).get("free_projections") or []
            if free and len(measured[0]) > max(free):  # judged on what the tomogram never saw (R-free), as run
                measured = (measured[0][free], measured[1][free])
        self.status.setText("enhancing...")
        self.launch(_enhance_task, np.asarray(layer.data, np.float32), float(px), path_text(self.weights),
                    self.flip_average.value, self.device.value, aet_meta(layer).get("tilt_range"),
                    self.show_fourier.value, self.trust_weights.value, measured, self.tile.value or None)

    def _tilt_series_of(self, layer):
        """The tilt-series layer a tomogram was reconstructed from (its metadata names it), with angles."""
        name = aet_meta(layer).get("tilt_series")
        for candidate in self.layers_of_kind(("tilt_series",)):
            if candidate.name == name and aet_meta(candidate).get("angles"):
                return candidate
        return None

    def on_result(self, result):
        from .._layers import fourier_layers

        out, warning, views, check = result
        meta = aet_meta(self._source)
        vol = Volume(out, meta["pixel_size"])
        name = f"{self._source.name} enhanced"
        data, kwargs, kind = volume_layer(vol, name=name)
        kwargs["metadata"]["napari_aet"].update(enhanced=True, tilt_range=meta.get("tilt_range"), consistency=check,
                                                tilt_series=meta.get("tilt_series"),
                                                free_projections=meta.get("free_projections") or [])
        self.add_layer((data, kwargs, kind))
        if views is not None:  # in their own viewer: 1/Å, never mixed with the Å layers here
            before = Volume(np.asarray(self._source.data, np.float32), meta["pixel_size"])
            show_fourier(self, fourier_layers(before, meta.get("tilt_range"), self._source.name, views[0])
                         + fourier_layers(vol, None, name, views[1]))
        text = consistency_text(check, self._tilts.name if self._tilts is not None else "")
        self.status.setText(f"enhanced; {text}" + (f"; warning: {warning}" if warning else ""))

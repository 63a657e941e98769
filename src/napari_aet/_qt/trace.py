"""Trace atoms: sub-voxel positions in a tomogram, atoms told from noise."""

from __future__ import annotations

import numpy as np

from .base import WorkerWidget, aet_meta, number


class TraceWidget(WorkerWidget):
    """Trace atoms in a tomogram layer; atoms become a Points layer with their features."""

    run_label = "Trace atoms"
    layer_kinds = ("tomogram", "ideal_tomogram")

    def build_form(self, form):
        self.layer_box.label = "tomogram"
        self.min_distance = number("min. distance", 0.5, 10.0, 2.0, decimals=2, suffix=" Å")
        form.extend([self.layer_box, self.min_distance])
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
        self.launch(trace_atoms, np.asarray(layer.data), float(px), min_distance=self.min_distance.value)

    def on_result(self, result):
        from .._layers import atoms_layer

        atoms = result.atoms
        data, kwargs, kind = atoms_layer(atoms, name="traced atoms", metadata=result.metadata)
        kwargs["metadata"]["napari_aet"]["tomogram"] = self._source
        self.add_layer((data, kwargs, kind))
        self.status.setText(f"{len(atoms)} atoms, {result.metadata['n_peaks'] - len(atoms)} non-atom peaks")

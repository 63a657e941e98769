"""Analyze: f.c.c. lattice, sites, surface, facets, displacement and strain; colour and per-layer views."""

from __future__ import annotations

import numpy as np

from magicgui import widgets as mg

from .base import WorkerWidget, choice, number, aet_meta, layer_table, recolour


class AnalyzeWidget(WorkerWidget):
    """Fit the f.c.c. lattice, find surface atoms and facets, compute displacements and strain;
    colour the atoms by assignment, facet, layer or any strain/displacement component, and show
    one layer's displacements as arrows (the slider picks the layer)."""

    run_label = "Analyze"
    layer_kinds = ("atoms",)
    has_device = False

    def build_form(self, form):
        self.layer_box.label = "atoms"
        self.lattice_constant = number("lattice constant", 0.0, 10.0, 0.0, decimals=4, suffix=" Å", special="fit")
        self.layer_axis = choice("layers along", ["001", "010", "100", "111"])
        form.extend([self.layer_box, self.lattice_constant, self.layer_axis])
        self.settings.update(lattice_constant=self.lattice_constant, layer_axis=self.layer_axis)

    def build_extra(self, layout):
        self.colour_by = choice("colour atoms by", [])
        self.colour_by.changed.connect(self._recolour)
        self.layer_slider = mg.Slider(label="displacement layer", min=0, max=0, enabled=False)
        self.layer_slider.changed.connect(self._show_layer)
        self.layer_label = mg.Label(label="", value="")
        self.exaggeration = number("arrow length", 1.0, 500.0, 20.0, decimals=1)
        self.exaggeration.native.setPrefix("× ")
        self.exaggeration.changed.connect(lambda *_: self._show_layer(self.layer_slider.value))
        views = mg.Container(widgets=[self.colour_by, self.layer_slider, self.layer_label, self.exaggeration],
                             labels=True)
        self.settings.update(exaggeration=self.exaggeration)
        layout.addWidget(views.native)
        self._views = views  # keep the magicgui container alive with its Qt widget
        self._analysed = None

    def start(self):
        from ..core.analysis import analyze_atoms

        layer = self.selected_layer()
        if layer is None or len(layer.data) < 4:
            self.status.setText("no atoms layer with atoms: trace atoms first")
            return
        self._target = layer
        self.status.setText("analysing...")
        self.launch(analyze_atoms, layer_table(layer), lattice_constant=self.lattice_constant.value or None,
                    layer_axis=self.layer_axis.value)

    def on_result(self, result):
        from .._layers import colour_options

        table, summary = result
        layer = self._target
        feats = table.drop(columns=["x", "y", "z"]).reset_index(drop=True)
        layer.features = feats
        meta = aet_meta(layer)
        meta["analysis"] = {k: v for k, v in summary.items() if k != "grid"}
        self._analysed = (layer, table, summary["lattice"])
        previous = self.colour_by.value
        options = colour_options(feats)
        with self.colour_by.changed.blocked():
            self.colour_by.choices = options
            self.colour_by.value = previous if previous in options else "fcc"
        self._recolour(self.colour_by.value)
        layers = sorted(int(v) for v in table["layer"].dropna().unique())
        with self.layer_slider.changed.blocked():
            self.layer_slider.min, self.layer_slider.max = min(layers), max(layers)
            self.layer_slider.enabled = True
            self.layer_slider.value = layers[len(layers) // 2]
        self._show_layer(self.layer_slider.value)
        lat = summary["lattice"]
        self.status.setText(f"a = {lat['lattice_constant']:.4f} Å, {summary['share_assigned']:.1%} on "
                            f"f.c.c. sites, {len(layers)} layers")

    def _recolour(self, by: str):
        if self._analysed and by:
            recolour(self._analysed[0], by)

    def _show_layer(self, index: int):
        from .._layers import displacement_vectors

        if not self._analysed:
            return
        layer, table, lattice = self._analysed
        data, feats = displacement_vectors(table, lattice, int(index), self.exaggeration.value)
        name = "displacement"
        kwargs = dict(name=name, features=feats, edge_width=0.25, edge_color="magnitude", edge_colormap="viridis",
                      vector_style="arrow", units=("angstrom",) * 3,
                      metadata={"napari_aet": {"kind": "displacement", "layer": int(index)}})
        if name in self.viewer.layers:
            v = self.viewer.layers[name]
            v.data = data if len(data) else np.zeros((0, 2, 3))
            v.features = feats
            if len(data):
                v.edge_color = "magnitude"
            aet_meta(v)["layer"] = int(index)
        else:
            self.viewer.add_vectors(data if len(data) else np.zeros((0, 2, 3)), **kwargs)
        mean = float(feats["magnitude"].mean()) if len(feats) else float("nan")
        self.layer_label.value = (f"layer {index}: {len(data)} atoms, mean |u| = {100 * mean:.1f} pm "
                                  f"(arrows × {self.exaggeration.value:g})")

"""Analyze: f.c.c. lattice, sites, surface, facets, displacement and strain; colour and per-layer views."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSlider

from .base import WorkerWidget, aet_meta, layer_table, recolour


class AnalyzeWidget(WorkerWidget):
    """Fit the f.c.c. lattice, find surface atoms and facets, compute displacements and strain;
    colour the atoms by assignment, facet, layer or any strain/displacement component, and show
    one layer's displacements as arrows (the slider picks the layer)."""

    run_label = "Analyze"
    layer_kinds = ("atoms",)
    has_device = False

    def build_form(self, form):
        self.lattice_constant = QDoubleSpinBox()
        self.lattice_constant.setRange(0.0, 10.0)
        self.lattice_constant.setDecimals(4)
        self.lattice_constant.setSpecialValueText("fit")
        self.lattice_constant.setSuffix(" Å")
        self.layer_axis = QComboBox()
        self.layer_axis.addItems(["001", "010", "100", "111"])
        form.addRow("atoms", self.layer_box)
        form.addRow("lattice constant", self.lattice_constant)
        form.addRow("layers along", self.layer_axis)
        self.settings.update(lattice_constant=self.lattice_constant, layer_axis=self.layer_axis)

    def build_extra(self, layout):
        form = QFormLayout()
        self.colour_by = QComboBox()
        self.colour_by.currentTextChanged.connect(self._recolour)
        self.layer_slider = QSlider(Qt.Orientation.Horizontal)
        self.layer_slider.setEnabled(False)
        self.layer_slider.valueChanged.connect(self._show_layer)
        self.layer_label = QLabel("")
        self.exaggeration = QDoubleSpinBox()
        self.exaggeration.setRange(1.0, 500.0)
        self.exaggeration.setValue(20.0)
        self.exaggeration.setPrefix("× ")
        self.exaggeration.valueChanged.connect(lambda *_: self._show_layer(self.layer_slider.value()))
        form.addRow("colour atoms by", self.colour_by)
        form.addRow("displacement layer", self.layer_slider)
        form.addRow("", self.layer_label)
        form.addRow("arrow length", self.exaggeration)
        self.settings.update(exaggeration=self.exaggeration)
        layout.addLayout(form)
        self._analysed = None

    def start(self):
        from ..core.analysis import analyze_atoms

        layer = self.selected_layer()
        if layer is None or len(layer.data) < 4:
            self.status.setText("no atoms layer with atoms: trace atoms first")
            return
        self._target = layer
        self.status.setText("analysing...")
        self.launch(analyze_atoms, layer_table(layer), lattice_constant=self.lattice_constant.value() or None,
                    layer_axis=self.layer_axis.currentText())

    def on_result(self, result):
        from .._layers import colour_options

        table, summary = result
        layer = self._target
        feats = table.drop(columns=["x", "y", "z"]).reset_index(drop=True)
        layer.features = feats
        meta = aet_meta(layer)
        meta["analysis"] = {k: v for k, v in summary.items() if k != "grid"}
        self._analysed = (layer, table, summary["lattice"])
        previous = self.colour_by.currentText()
        self.colour_by.blockSignals(True)
        self.colour_by.clear()
        self.colour_by.addItems(colour_options(feats))
        self.colour_by.blockSignals(False)
        self.colour_by.setCurrentText(previous if previous in colour_options(feats) else "fcc")
        self._recolour(self.colour_by.currentText())
        layers = sorted(int(v) for v in table["layer"].dropna().unique())
        self.layer_slider.setRange(min(layers), max(layers))
        self.layer_slider.setEnabled(True)
        self.layer_slider.setValue(layers[len(layers) // 2])
        self._show_layer(self.layer_slider.value())
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
        data, feats = displacement_vectors(table, lattice, int(index), self.exaggeration.value())
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
        self.layer_label.setText(f"layer {index}: {len(data)} atoms, mean |u| = {100 * mean:.1f} pm "
                                 f"(arrows × {self.exaggeration.value():g})")

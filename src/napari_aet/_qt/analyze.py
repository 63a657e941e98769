"""Analyze: f.c.c. lattice, sites, surface, facets, displacement and strain; colour and per-layer views."""

from __future__ import annotations

import numpy as np

from magicgui import widgets as mg

from .base import WorkerWidget, choice, flag, number, aet_meta, layer_table, recolour
from .side import find_side_viewer, show_layers, side_viewer

NOT_COLOURED = "(as shown)"


class AnalyzeWidget(WorkerWidget):
    """Fit the f.c.c. lattice, find surface atoms and facets, compute displacements and strain;
    colour the atoms by assignment, facet, layer, any strain/displacement component or their
    confidence (before an analysis too), and show one layer's displacements as arrows (the
    slider picks the layer). Atoms below a minimum presence can be left out of the analysis."""

    run_label = "Analyze"
    layer_kinds = ("atoms",)
    has_device = False

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.layer_box.changed.connect(self._offer_colours)
        self._offer_colours()

    def build_form(self, form):
        self.layer_box.label = "atoms"
        self.lattice_constant = number("lattice constant", 0.0, 10.0, 0.0, decimals=4, suffix=" Å", special="fit")
        self.layer_axis = choice("layers along", ["001", "010", "100", "111"])
        self.min_presence = number("minimum presence", 0.0, 1.0, 0.0, decimals=2, special="keep all")
        self.min_presence.tooltip = ("leave out atoms the held-out projections barely want (presence below this, "
                                     "from trace or run with a tilt series); they stay in the layer")
        self.add_views = flag("add facet and strain layers (hidden, to toggle)", True)
        form.extend([self.layer_box, self.lattice_constant, self.layer_axis, self.min_presence, self.add_views])
        self.settings.update(lattice_constant=self.lattice_constant, layer_axis=self.layer_axis,
                             min_presence=self.min_presence, add_views=self.add_views)

    def build_extra(self, layout):
        self.colour_by = choice("colour atoms by", [])
        self.colour_by.changed.connect(self._recolour)
        self.layer_slider = mg.Slider(label="displacement layer", min=0, max=0, enabled=False)
        self.layer_slider.changed.connect(self._show_layer)
        self.layer_label = mg.Label(label="", value="")
        # auto: the median arrow half the nearest-neighbour distance (pm displacements are specks at ×20)
        self.exaggeration = number("arrow length", 0.0, 100000.0, 0.0, decimals=0, special="auto")
        self.exaggeration.native.setPrefix("× ")
        self.exaggeration.changed.connect(lambda *_: self._show_layer(self.layer_slider.value))
        self.face_on_button = mg.PushButton(text="Show this layer face-on (2D viewer)", label="")
        self.face_on_button.changed.connect(self.show_face_on)
        self.face_on_button.enabled = False
        views = mg.Container(widgets=[self.colour_by, self.layer_slider, self.layer_label, self.exaggeration,
                                      self.face_on_button], labels=True)
        self.settings.update(arrow_exaggeration=self.exaggeration)  # a new name: the old default ×20 is not restored
        layout.addWidget(views.native)
        self._views = views  # keep the magicgui container alive with its Qt widget
        self._analysed = None

    def _offer_colours(self, *_):
        """The input layer's colourings (its confidence, before any analysis) in the colour
        choice, led by one that leaves the colours as they are."""
        from .._layers import colour_options

        layer = self.selected_layer()
        if not hasattr(self, "colour_by") or self._analysed and self._analysed[0] is layer:
            return
        self._analysed = None
        options = colour_options(layer.features) if layer is not None else []
        current = aet_meta(layer).get("colour_by")
        with self.colour_by.changed.blocked():
            self.colour_by.choices = [NOT_COLOURED, *options]
            self.colour_by.value = current if current in options else NOT_COLOURED

    def start(self):
        from ..core.correct import analyze_confident

        layer = self.selected_layer()
        if layer is None or len(layer.data) < 4:
            self.status.setText("no atoms layer with atoms: trace atoms first")
            return
        self._target = layer
        self.status.setText("analysing...")
        self.launch(analyze_confident, layer_table(layer), min_presence=float(self.min_presence.value),
                    lattice_constant=self.lattice_constant.value or None, layer_axis=self.layer_axis.value)

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
        self._auto_exaggeration = _auto_exaggeration(table, summary["lattice"])
        self._layer_axis = str((summary.get("settings") or {}).get("layer_axis", self.layer_axis.value))
        if self.add_views.value:
            from .._layers import analysis_layers

            for ld in analysis_layers(table, layer.name, size=float(np.mean(layer.size)) if len(layer.size) else 1.2):
                self.add_layer(ld)
        layers = sorted(int(v) for v in table["layer"].dropna().unique())
        with self.layer_slider.changed.blocked():
            self.layer_slider.min, self.layer_slider.max = min(layers), max(layers)
            self.layer_slider.enabled = True
            self.layer_slider.value = layers[len(layers) // 2]
        self.face_on_button.enabled = True
        self._show_layer(self.layer_slider.value)
        if self.viewer.dims.ndisplay == 3:
            self.look_down_layers()
        lat = summary["lattice"]
        left_out = int(summary["settings"].get("n_left_out_low_presence") or 0)
        note = f", {left_out} atoms below presence {self.min_presence.value:g} left out" if left_out else ""
        self.status.setText(f"a = {lat['lattice_constant']:.4f} Å, {summary['share_assigned']:.1%} on "
                            f"f.c.c. sites, {len(layers)} layers{note}")

    def _recolour(self, by: str):
        from .._layers import CONFIDENCE, DISPLACEMENT, STRAIN, colour_label

        layer = self._analysed[0] if self._analysed else self.selected_layer()
        if layer is None or not by or by == NOT_COLOURED:
            return
        recolour(layer, by)
        text = self.viewer.canvas.overlays.text  # the colour bar's label: component and unit
        continuous = by in STRAIN or by in DISPLACEMENT or by in CONFIDENCE
        text.text = f"{layer.name}: {colour_label(by)}" if continuous else ""
        text.position = "top_right"  # stacked with the colour bar
        text.visible = continuous

    def exaggeration_value(self) -> float:
        """The arrow exaggeration in use: the user's, or the automatic one chosen from the data."""
        return float(self.exaggeration.value or getattr(self, "_auto_exaggeration", 1.0))

    def look_down_layers(self) -> None:
        """Turn the 3D camera to look along the layers' normal, so a layer is seen face-on."""
        from .._layers import layer_frame

        if not self._analysed:
            return
        frame = layer_frame(self._analysed[2], self._layer_axis)
        self.viewer.dims.ndisplay = 3
        self.viewer.scene.camera.set_view_direction(tuple(-frame[2]), tuple(-frame[1]))

    def _show_layer(self, index: int):
        """The layer's displacement arrows and its atoms highlighted in the main (3D) view; the
        face-on 2D view follows when it is open."""
        from .._layers import displacement_vectors

        if not self._analysed:
            return
        layer, table, lattice = self._analysed
        factor = self.exaggeration_value()
        data, feats = displacement_vectors(table, lattice, int(index), factor)
        data = data if len(data) else np.zeros((0, 2, 3))
        _replace_data(self.viewer, data, dict(
            name="displacement", features=feats, edge_width=0.25, edge_color="magnitude", edge_colormap="viridis",
            vector_style="arrow", units=("angstrom",) * 3,
            metadata={"napari_aet": {"kind": "displacement", "layer": int(index), "exaggeration": factor}}), "vectors")
        _replace_data(self.viewer, data[:, 0], dict(
            name="displacement slice", size=float(np.mean(layer.size)) * 1.3 if len(layer.size) else 1.6,
            face_color="#ffd54f", opacity=0.45, border_width=0, units=("angstrom",) * 3, blending="translucent",
            metadata={"napari_aet": {"kind": "slice", "layer": int(index)}}), "points")
        mean = float(feats["magnitude"].mean()) if len(feats) else float("nan")
        auto = "" if self.exaggeration.value else ", auto"
        self.layer_label.value = (f"layer {index}: {len(data)} atoms, mean |u| = {100 * mean:.1f} pm "
                                  f"(arrows × {factor:g}{auto})")
        if find_side_viewer(self, "layer") is not None:
            self.show_face_on()

    def show_face_on(self, *_):
        """The slider's layer face-on in a 2D side viewer (in-plane Å along the layer's own axes;
        arrows the in-plane displacement, coloured by the out-of-plane part), the 3D view turned
        to look down the layers with the slice highlighted."""
        from .._layers import layer_view

        if not self._analysed:
            return
        layer, table, lattice = self._analysed
        index, factor = int(self.layer_slider.value), self.exaggeration_value()
        points, arrows, feats = layer_view(table, lattice, index, self._layer_axis, factor)
        size = float(np.mean(layer.size)) if len(layer.size) else 1.2
        meta = {"napari_aet": {"kind": "layer_view", "layer": index, "exaggeration": factor}}
        units = ("angstrom",) * 2
        viewer = side_viewer(self, "layer", "napari-aet: one layer face-on (Å)")
        show_layers(viewer, [
            (points, dict(name=f"layer {index} atoms", size=size, face_color="#b0b0b0", border_width=0, units=units,
                          metadata=meta), "points"),
            (arrows, dict(name=f"layer {index} in-plane displacement × {factor:g}", features=feats, units=units,
                          edge_width=0.2, edge_color="u_normal", edge_colormap="RdBu_r",
                          edge_contrast_limits=_symmetric(feats["u_normal"]), vector_style="arrow", metadata=meta),
             "vectors"),
        ])
        viewer.dims.ndisplay = 2
        self.look_down_layers()


def _replace_data(viewer, data, kwargs: dict, kind: str) -> None:
    """Update the layer ``kwargs['name']`` in place (keeps the user's visibility and order), or add it."""
    name = kwargs["name"]
    if name not in viewer.layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
        return
    layer = viewer.layers[name]
    layer.data = data
    if "features" in kwargs:
        layer.features = kwargs["features"]
        if len(data):
            layer.edge_color = kwargs["edge_color"]
    layer.metadata["napari_aet"] = kwargs["metadata"]["napari_aet"]


def _symmetric(values) -> tuple:
    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    lim = float(v.max()) if v.size and v.max() > 0 else 1.0
    return (-lim, lim)


def _auto_exaggeration(table, lattice: dict) -> float:
    """Arrow exaggeration from the data: median |u| drawn at half the nearest-neighbour distance."""
    from .._layers import arrow_exaggeration

    u = table[["ux", "uy", "uz"]].to_numpy(float)
    return arrow_exaggeration(np.linalg.norm(u, axis=1), float(lattice["lattice_constant"]) / np.sqrt(2))

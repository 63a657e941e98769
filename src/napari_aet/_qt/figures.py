"""Figures & export: a high-resolution rendering of the canvas (white or black background,
scale bar in Å, atoms as shaded spheres), the strain/displacement layer maps as publication
figures (PNG 300 dpi plus SVG or PDF), the atoms as a CSV, and a rotating movie through
napari-animation where it is installed. Every file is written to a temporary name first and
then renamed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import session
from .._layers import DISPLACEMENT, STRAIN
from ..core import figures
from ..core.analysis import AnalysisSummary
from magicgui import widgets as mg

from .base import WorkerWidget, choice, flag, integer, path_field, path_text, aet_meta, layer_table


def save_rendering(viewer, path, size=(2000, 2000), background: str = "white", scale_bar: bool = True,
                   spheres: bool = True) -> np.ndarray:
    """Render the canvas at ``size`` (height, width) px and save it as PNG (300 dpi); the
    viewer's background, scale bar and point shading are restored afterwards."""
    from PIL import Image

    bar = viewer.scale_bar
    old = (viewer.canvas.background_color_override, bar.visible, bar.color)
    shading = {l: l.shading for l in viewer.layers if aet_meta(l).get("kind") == "atoms"}
    try:
        viewer.canvas.background_color_override = background
        bar.visible = scale_bar
        bar.color = "black" if background == "white" else "white"
        if spheres:
            for layer in shading:
                layer.shading = "spherical"
        img = np.asarray(viewer.screenshot(size=tuple(int(s) for s in size), canvas_only=True))
    finally:
        viewer.canvas.background_color_override = old[0]
        bar.visible, bar.color = old[1], old[2]
        for layer, s in shading.items():
            layer.shading = s
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG", dpi=(300, 300))
    os.replace(tmp, path)
    return img


def save_movie(viewer, path, frames: int = 72, fps: int = 24) -> None:
    """A full turn about the vertical axis in 3D, through napari-animation."""
    from napari_animation import Animation

    path = Path(path)
    viewer.dims.ndisplay = 3
    anim = Animation(viewer)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
    start = tuple(camera.angles)
    for k in range(5):
        camera.angles = (start[0], start[1] + 90 * k, start[2])
        anim.capture_keyframe(steps=max(1, frames // 4))
    tmp = path.with_name(f".tmp_{path.name}")
    anim.animate(str(tmp), canvas_only=True, fps=fps)
    os.replace(tmp, path)
    camera.angles = start


def _tomograms(viewer) -> tuple:
    """({"RESIRE": plain, "U-Net": enhanced}, voxel size Å, largest tilt °) from the newest
    tomogram layers in the viewer (either may be missing)."""
    volumes, pixel_size, tilt_range = {}, 1.0, None
    for layer in reversed(list(viewer.layers)):
        meta = aet_meta(layer)
        if meta.get("kind") != "tomogram":
            continue
        label = "U-Net" if meta.get("enhanced") else "RESIRE"
        if label not in volumes:
            volumes[label] = np.asarray(layer.data, np.float32)
            pixel_size = meta.get("pixel_size") or pixel_size
            tilt_range = tilt_range or meta.get("tilt_range")
    ordered = {k: volumes[k] for k in ("RESIRE", "U-Net") if k in volumes}
    return ordered, pixel_size, tilt_range


def _paper_figures_task(folder, table, summary, volumes, pixel_size, tilt_range, layer, names, progress=None,
                        cancel=None) -> list:
    return figures.write_figures(folder, table, summary, volumes, pixel_size, tilt_range, layer=layer, names=names,
                                 workers=1, progress=progress, cancel=cancel)


class FiguresWidget(WorkerWidget):
    """Publication figures and exports."""

    run_label = "Save rendering"
    layer_kinds = ("atoms",)
    has_device = False

    def build_form(self, form):
        self.folder = path_field("folder", mode="d")
        self.folder.line_edit.value = str(Path.home() / "napari-aet-figures")
        self.width = integer("width (px)", 64, 8000, 2000)
        self.height = integer("height (px)", 64, 8000, 2000)
        self.background = choice("background", ["white", "black"])
        self.scale_bar = flag("scale bar (Å)", True)
        self.spheres = flag("atoms as shaded spheres", True)
        form.extend([self.folder, self.width, self.height, self.background, self.scale_bar, self.spheres])
        self.settings.update(folder=self.folder, width=self.width, height=self.height, background=self.background,
                             scale_bar=self.scale_bar, spheres=self.spheres)

    def build_extra(self, layout):
        self.layer_box.label = "atoms"
        self.paper_figure = choice("paper figure", [("all of (a)-(g) and the 3D maps", "all")]
                                   + [(f"{key}: {what}", key) for key, what in figures.REFERENCE_FIGURES.items()])
        self.paper_layer = integer("layer for (f), (g)", -1, 999, -1, tooltip="-1: the layer with most atoms")
        self.component = choice("map component", list(STRAIN + DISPLACEMENT))
        self.vector_format = choice("vector format", ["svg", "pdf"])
        self.paper_button = mg.PushButton(text="Render paper figure", label="",
                                          tooltip="the reference work's figures as shaded renderings (PNG 300 dpi and "
                                          "SVG), made off the GUI thread exactly as 'napari-aet run' makes them")
        self.maps_button = mg.PushButton(text="Save layer maps", label="")
        self.atoms_button = mg.PushButton(text="Export atoms (CSV)", label="")
        self.movie_button = mg.PushButton(text="Save rotating movie", label="")
        try:
            import napari_animation  # noqa: F401
        except ImportError:
            self.movie_button.enabled = False
            self.movie_button.tooltip = "install napari-animation for movies"
        self._exports = mg.Container(labels=True, widgets=[
            self.layer_box, self.paper_figure, self.paper_layer, self.paper_button, self.component,
            self.vector_format, self.maps_button, self.atoms_button, self.movie_button])
        self.paper_button.changed.connect(self.render_paper_figures)
        self.maps_button.changed.connect(self.save_layer_maps)
        self.atoms_button.changed.connect(self.export_atoms)
        self.movie_button.changed.connect(self.save_movie)
        self.settings.update(component=self.component, vector_format=self.vector_format,
                             paper_figure=self.paper_figure, paper_layer=self.paper_layer)
        layout.addWidget(self._exports.native)

    def _out(self, name: str) -> Path:
        folder = Path(path_text(self.folder) or Path.home() / "napari-aet-figures").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def start(self):
        path = self._out("rendering.png")
        img = save_rendering(self.viewer, path, (self.height.value, self.width.value), self.background.value,
                             self.scale_bar.value, self.spheres.value)
        self.status.setText(f"saved {path} ({img.shape[1]}×{img.shape[0]} px)")

    def render_paper_figures(self):
        """(a)-(g), the tomograms' 3D density and Fourier maps, from the atoms layer and the
        newest plain and enhanced tomogram layers, rendered in a worker thread."""
        try:
            layer, table = self._atoms()
            summary = aet_meta(layer).get("analysis")
            if not summary:
                raise ValueError("the atoms have not been analysed: run Analyze first")
            volumes, pixel_size, tilt_range = _tomograms(self.viewer)
            key = self.paper_figure.value
            names = None if key == "all" else [key]
            if key in ("tomograms_3d", "fourier_3d") and not volumes:
                raise ValueError("no tomogram layer: reconstruct (and enhance) first")
            layer_index = None if self.paper_layer.value < 0 else self.paper_layer.value
            self.save_settings()
            self.launch(_paper_figures_task, self._out(""), table, summary, volumes or None, pixel_size, tilt_range,
                        layer_index, names)
        except Exception as exc:
            self._report(exc)

    def on_result(self, paths):
        if paths:
            folder = Path(paths[0]).parent
            self.status.setText(f"saved {len(paths)} files in {folder}")
            from napari.utils.notifications import show_info

            show_info(f"napari-aet: {len(paths)} figure files saved in {folder}")

    def _atoms(self):
        layer = self.selected_layer()
        if layer is None:
            raise ValueError("no atoms layer: trace atoms first")
        return layer, layer_table(layer)

    def save_layer_maps(self):
        try:
            layer, table = self._atoms()
            found = AnalysisSummary.of(aet_meta(layer).get("analysis"))
            lattice = found.lattice
            comp = self.component.value
            if lattice is None or comp not in table:
                raise ValueError("the atoms have no strain or displacement yet: run Analyze first")
            axis = found.layer_axis
            fig = figures.layer_maps(table, comp, lattice, axis if axis in ("100", "010", "001") else "001")
            if fig is None:
                raise ValueError("no atoms with a layer index")
            paths = figures.save(fig, self._out(""), f"layers_{comp}", formats=("png", self.vector_format.value))
            self.status.setText("saved " + ", ".join(str(p) for p in paths))
        except Exception as exc:
            self._report(exc)

    def export_atoms(self):
        from ..core.io import write_atoms

        try:
            layer, table = self._atoms()
            path = self._out(f"{layer.name.replace(' ', '_')}.csv")
            meta = dict(aet_meta(layer).get("atoms_metadata") or {})
            if aet_meta(layer).get("analysis"):
                meta["analysis"] = aet_meta(layer)["analysis"]
            write_atoms(path, table.drop(columns=["edited"], errors="ignore"), meta)
            session.Session(aet_meta(layer).get("session_folder")).mark_exported(path)  # the editing session
            self.status.setText(f"saved {path} ({len(table)} atoms)")
        except Exception as exc:
            self._report(exc)

    def save_movie(self):
        try:
            path = self._out("rotation.mp4")
            save_movie(self.viewer, path)
            self.status.setText(f"saved {path}")
        except Exception as exc:
            self._report(exc)

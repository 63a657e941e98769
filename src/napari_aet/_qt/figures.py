"""Figures & export: a high-resolution rendering of the canvas (white or black background,
scale bar in Å, atoms as shaded spheres), the strain/displacement layer maps as publication
figures (PNG 300 dpi plus SVG or PDF), the atoms as a CSV, and a rotating movie (MP4,
rendered frame by frame with progress and cancel; imageio-ffmpeg, the [movie] extra). Every file is written to a temporary name first and
then renamed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .. import session
from .._layers import DISPLACEMENT, STRAIN
from ..core import figures
from ..core.analysis import AnalysisSummary
from magicgui import widgets as mg
from qtpy.QtCore import QObject, QTimer, Signal

from ..core._layer_maps import layer_maps_figure

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


def scale_bar_note(viewer) -> str:
    """'' when the scale bar reads in Å; else why it has no unit (layers in other units)."""
    units = viewer.layers.extent.units
    if units is not None and str(units[-1]) == "angstrom":
        return "; scale bar in Å"
    odd = [layer.name for layer in viewer.layers if str(layer.units[-1]) != "angstrom"]
    return f"; the scale bar has no Å unit: layers not in Å: {', '.join(odd)}"


class MovieRecorder(QObject):
    """Turns the 3D view a full circle about the vertical axis, one frame per timer tick
    (screenshots must be taken on the GUI thread, so frames are spread over event-loop turns:
    the window stays responsive), written to MP4 (imageio-ffmpeg) through a temporary file;
    ``cancel_flag.set()`` stops it and removes the partial file."""

    progressed = Signal(int, int, str)
    finished = Signal(str)

    def __init__(self, viewer, path, frames: int = 72, fps: int = 24):
        super().__init__()
        import imageio  # napari's own dependency; MP4 needs imageio-ffmpeg (the [movie] extra)

        self.viewer, self.path, self.frames = viewer, Path(path), int(frames)
        self.tmp = self.path.with_name(f".tmp_{self.path.name}")
        self.cancel_flag = threading.Event()
        self.camera = viewer.scene.camera
        self.viewer.dims.ndisplay = 3
        self.start_angles = tuple(self.camera.angles)
        self.writer = imageio.get_writer(self.tmp, fps=fps, macro_block_size=8)
        self.done = 0
        self.timer = QTimer(self)
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._step)

    def start(self) -> None:
        self.progressed.emit(0, self.frames, "movie: rendering frames...")
        self.timer.start()

    def _step(self) -> None:
        try:
            if self.cancel_flag.is_set():
                self._end("movie cancelled; nothing saved")
                return
            a = self.start_angles
            self.camera.angles = (a[0], a[1] + 360.0 * self.done / self.frames, a[2])
            self.writer.append_data(np.asarray(self.viewer.screenshot(canvas_only=True))[..., :3])
            self.done += 1
            self.progressed.emit(self.done, self.frames, f"movie: frame {self.done} of {self.frames}")
            if self.done == self.frames:
                self._end(f"saved {self.path} ({self.frames} frames)")
        except Exception as exc:  # a failed frame or encoder: say so, leave nothing half-written
            self._end(f"error: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}")

    def _end(self, outcome: str) -> None:
        self.timer.stop()
        self.writer.close()
        self.camera.angles = self.start_angles
        if self.done == self.frames and not outcome.startswith("error"):
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        self.finished.emit(outcome)


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
        self._recorder = None
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            self.movie_button.enabled = False
            self.movie_button.tooltip = "MP4 movies need imageio-ffmpeg: pip install 'napari-aet[movie]'"
        self._exports = mg.Container(labels=True, widgets=[
            self.layer_box, self.paper_figure, self.paper_layer, self.paper_button, self.component,
            self.vector_format, self.maps_button, self.atoms_button, self.movie_button])
        self.paper_button.changed.connect(self.render_paper_figures)
        self.maps_button.changed.connect(self.save_layer_maps)
        self.atoms_button.changed.connect(self.export_atoms)
        self.movie_button.changed.connect(lambda *_: self.save_movie())
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
        self.status.setText(f"saved {path} ({img.shape[1]}×{img.shape[0]} px){scale_bar_note(self.viewer)}")

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
            fig = layer_maps_figure(table, comp, lattice, axis if axis in ("100", "010", "001") else "001")
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

    def save_movie(self, frames: int = 72, fps: int = 24):
        """A full turn about the vertical axis, one frame per event-loop turn (napari renders
        on the GUI thread; the window stays responsive), with progress and Cancel."""
        try:
            self._recorder = MovieRecorder(self.viewer, self._out("rotation.mp4"), frames, fps)
        except Exception as exc:
            self._report(exc)
            return
        self._cancel = self._recorder.cancel_flag
        self.run_button.setEnabled(False)
        self.movie_button.enabled = False
        self.cancel_button.setEnabled(True)
        self._recorder.progressed.connect(self._on_progress)
        self._recorder.finished.connect(self._movie_finished)
        self._recorder.start()

    def _movie_finished(self, outcome: str):
        self._on_finished()
        self.movie_button.enabled = True
        self._recorder = None
        self.status.setText(outcome)

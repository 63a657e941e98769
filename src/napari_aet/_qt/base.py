"""The base of every dock widget: a form, a worker thread with progress and cancel, errors to
napari's notifications, remembered settings (``napari_aet.session``); and the helpers the
widgets share (layer metadata, atoms tables, colouring).
"""

from __future__ import annotations

import logging
import threading

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QHBoxLayout, QLabel, QProgressBar,
    QPushButton, QVBoxLayout, QWidget,
)

from magicgui import widgets as mg

from .. import session


_log = logging.getLogger(__name__)


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


def aet_meta(layer) -> dict:
    return (layer.metadata.get("napari_aet") or {}) if layer is not None else {}


# -- form fields: magicgui widgets (one ``.value`` API, ``.changed`` signals, a file picker)

def choice(label: str, choices, value=None, tooltip: str = "") -> mg.ComboBox:
    """A drop-down; ``choices`` a list, (text, value) pairs or a callable (refreshed by
    ``reset_choices``)."""
    w = mg.ComboBox(label=label, choices=choices, tooltip=tooltip or None)
    if value is not None:
        w.value = value
    return w


def integer(label: str, low: int, high: int, value: int, tooltip: str = "") -> mg.SpinBox:
    """An integer box (magicgui's has no suffix: put the unit in the label)."""
    return mg.SpinBox(label=label, min=low, max=high, value=value, tooltip=tooltip or None)


def number(label: str, low: float, high: float, value: float, decimals: int = 2, suffix: str = "",
           special: str = "") -> mg.FloatSpinBox:
    w = mg.FloatSpinBox(label=label, min=low, max=high, step=10.0 ** -decimals, value=value)
    w.native.setDecimals(decimals)
    if suffix:
        w.native.setSuffix(suffix)
    if special:  # shown at the minimum, which then means "automatic"
        w.native.setSpecialValueText(special)
    return w


def flag(text: str, value: bool = False) -> mg.CheckBox:
    return mg.CheckBox(text=text, value=value, label="")


def path_field(label: str, mode: str = "r", filter: str = "", placeholder: str = "") -> mg.FileEdit:
    w = mg.FileEdit(label=label, mode=mode, filter=filter or None)
    w.line_edit.value = ""
    if placeholder:
        w.line_edit.native.setPlaceholderText(placeholder)
    return w


def path_text(w: mg.FileEdit) -> str:
    """What the user typed or picked, '' when empty (magicgui reads an empty field as '.')."""
    return str(w.line_edit.value).strip()


def _value(w):
    if isinstance(w, mg.FileEdit):
        return path_text(w)
    return w.value


def _set_value(w, v) -> None:
    try:
        if isinstance(w, mg.FileEdit):
            w.line_edit.value = str(v)
        else:
            w.value = v
    except (TypeError, ValueError):
        pass  # a stale or hand-edited settings file must not break the widget


class WorkerWidget(QWidget):
    """Base of the step widgets: a form, Run/Cancel, a progress bar, a status line, and a
    core function run in a napari thread worker with a progress callback and a cancel flag.

    Subclasses build their inputs as magicgui widgets into ``form`` (a magicgui ``Container``)
    in :meth:`build_form` and list the remembered ones in ``self.settings`` (name -> widget).
    """

    run_label = "Run"
    layer_kinds: tuple = ()
    has_device = True

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._cancel = None
        self.worker = None
        self.napari_progress = None
        self.settings: dict = {}
        self.layer_box = choice("input", self._layer_names, tooltip="input layer")
        self.device = choice("device", ["auto", "cpu", "cuda"], "auto")
        self.run_button = QPushButton(self.run_label)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.form = mg.Container(labels=True)
        self.build_form(self.form)
        if self.has_device:
            self.form.append(self.device)
            self.settings["device"] = self.device
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.main_layout = QVBoxLayout(self)
        self.main_layout.addWidget(self.form.native)
        self.main_layout.addLayout(buttons)
        self.main_layout.addWidget(self.bar)
        self.main_layout.addWidget(self.status)
        self.build_extra(self.main_layout)
        self.main_layout.addStretch()
        self.relay = _Relay()
        self.relay.progressed.connect(self._on_progress)
        self.run_button.clicked.connect(self._start)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self.restore_settings()

    # -- subclass hooks
    def build_form(self, form):
        """Add the step's inputs (magicgui widgets) to ``form``, a magicgui ``Container``."""

    def build_extra(self, layout):
        """Add rows below the progress bar (optional)."""

    def start(self):
        raise NotImplementedError

    def on_result(self, result):
        raise NotImplementedError

    # -- settings
    @property
    def settings_section(self) -> str:
        return type(self).__name__

    def restore_settings(self) -> None:
        for name, value in session.load_settings(self.settings_section).items():
            if name in self.settings:
                _set_value(self.settings[name], value)

    def save_settings(self) -> None:
        session.save_settings(self.settings_section, {k: _value(w) for k, w in self.settings.items()})

    # -- layers
    def layers_of_kind(self, kinds):
        return [l for l in self.viewer.layers if aet_meta(l).get("kind") in kinds]

    def _layer_names(self, *_) -> list:
        return [l.name for l in self.layers_of_kind(self.layer_kinds)] if hasattr(self, "viewer") else []

    def _refresh_layers(self, *_):
        self.layer_box.reset_choices()  # keeps the current layer while it exists

    def selected_layer(self):
        name = self.layer_box.value
        return next((l for l in self.layers_of_kind(self.layer_kinds) if l.name == name), None)

    def add_layer(self, layer_data) -> None:
        """Add (data, kwargs, type) to the viewer, replacing a layer of the same name."""
        data, kwargs, kind = layer_data
        name = kwargs.get("name")
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    # -- running
    def _start(self):
        self.save_settings()
        try:
            self.start()
        except Exception as exc:  # bad input caught before the worker: say why, keep the viewer usable
            self._report(exc)

    def launch(self, func, *args, **kwargs):
        """Run ``func(*args, progress=..., cancel=..., **kwargs)`` in a worker thread."""
        from napari.qt.threading import create_worker

        self._cancel = threading.Event()
        relay = self.relay
        kwargs.update(cancel=self._cancel, progress=lambda d, t, m: relay.progressed.emit(d, t, m))
        self.worker = create_worker(func, *args, **kwargs, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        from napari.utils import progress

        self.napari_progress = progress(total=0, desc=self.run_label)  # napari's activity dock and status bar
        self.worker.start()

    def _on_returned(self, result):
        try:
            self.on_result(result)
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        """One line for the user; the traceback to the log unless it is a known input error."""
        from ..core.errors import AETInputError

        if not isinstance(exc, AETInputError):
            _log.error("napari-aet %s failed", self.run_label, exc_info=exc)
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.status.setText(f"error: {line}")
        from napari.utils.notifications import show_error

        show_error(f"{self.run_label}: {line}")  # napari's notification area, where users look

    def _on_progress(self, done: int, total: int, message: str):
        self.bar.setMaximum(total)
        self.bar.setValue(done)
        self.status.setText(message)
        pbar = self.napari_progress
        if pbar is not None:
            pbar.total = total
            pbar.n = done
            pbar.set_description(f"{self.run_label}: {message}"[:80])
            pbar.refresh()

    def cancel(self):
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling after this iteration...")

    def _on_error(self, exc):
        from ..core.errors import Cancelled

        if isinstance(exc, Cancelled):
            self.status.setText("cancelled")
        else:
            self._report(exc)

    def _on_finished(self):
        pbar = self.napari_progress
        if pbar is not None:
            pbar.close()
            self.napari_progress = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


def layer_table(layer):
    """The atoms table (sample-frame Å) of a Points layer."""
    from .._layers import points_to_table

    return points_to_table(layer.data, {"scale": layer.scale, "translate": layer.translate,
                                        "features": layer.features})


def recolour(layer, by: str) -> None:
    """Colour a Points layer's atoms by a feature (see :func:`napari_aet._layers.atom_colours`)."""
    from .._layers import atom_colours

    spec = atom_colours(layer.features, by)
    if isinstance(spec["face_color"], str):
        layer.face_color = spec["face_color"]
        layer.face_colormap = spec["face_colormap"]
        layer.face_contrast_limits = spec["face_contrast_limits"]
        layer.face_colorbar.visible = True
    else:
        layer.face_colorbar.visible = False
        layer.face_color = spec["face_color"]
    aet_meta(layer)["colour_by"] = by

"""The base of every dock widget: a form, a worker thread with progress and cancel, errors to
napari's notifications, remembered settings (``napari_aet.session``); and the helpers the
widgets share (layer metadata, atoms tables, colouring).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox, QDockWidget, QFrame, QHBoxLayout, QLabel, QMainWindow, QProgressBar,
    QPushButton, QScrollArea, QSizePolicy, QVBoxLayout, QWidget,
)

from magicgui import widgets as mg

from .. import session


_log = logging.getLogger(__name__)


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


def aet_meta(layer) -> dict:
    return (layer.metadata.get("napari_aet") or {}) if layer is not None else {}


GROUND_TRUTH_KINDS = ("ideal_tomogram",)


def is_ground_truth(layer) -> bool:
    """A simulation's truth (its ideal tomogram, its true atoms): an input only when nothing else exists."""
    meta = aet_meta(layer)
    return bool(meta.get("ground_truth") or meta.get("kind") in GROUND_TRUTH_KINDS
                or "true_euler_angles" in (meta.get("atoms_metadata") or {}))


def preferred_layers(layers, kinds, rank=None) -> list:
    """The layers of ``kinds``, best input first: anything before ground truth, then by
    ``rank(layer)`` (lower first; e.g. a step's own output last), then the newest first."""
    found = [(i, layer) for i, layer in enumerate(layers) if aet_meta(layer).get("kind") in kinds]
    found.sort(key=lambda il: (is_ground_truth(il[1]), rank(il[1]) if rank else 0, -il[0]))
    return [layer for _, layer in found]


def _set_choices(box: mg.ComboBox, names: list, value) -> None:
    """Show ``names`` in this order in ``box`` and select ``value`` (the first name when it is
    not there); ``changed`` is emitted only when the selection changes."""
    before = box.value
    if [str(c) for c in box.choices] != names or before != value:
        with box.changed.blocked():
            box.choices = []  # magicgui keeps existing items in place: clear to reorder
            box.choices = names
            if value in names:
                box.value = value
    if box.value != before:
        box.changed.emit(box.value)


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


class _FormScroll(QScrollArea):
    """A vertical scroll area around a widget's form: the dock's minimum height is a few rows,
    not the whole form's, so eight docks fit a screen; as wide as the form (no side scrolling)."""

    def __init__(self, body: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(body)
        for box in body.findChildren(QComboBox):  # long choices widen the popup, not the dock
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(16)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        body = self.widget()
        width = (body.minimumSizeHint().width() if body is not None else 0) + self.verticalScrollBar().sizeHint().width()
        return QSize(width, 120)


def call_weakly(ref, name: str, *_) -> None:
    """Call a widget's method through a weak reference (timers, layer key bindings, which pass
    the layer): no reference cycle through the viewer, nothing once the widget is gone."""
    widget = ref()
    if widget is not None:
        try:
            getattr(widget, name)()
        except RuntimeError:  # the Qt object was deleted before the call came
            pass


def _dock_and_window(widget: QWidget):
    """The QDockWidget holding ``widget`` and its QMainWindow, through Qt's parent chain (napari
    hands plugins a proxy of the viewer, whose window cannot be used as a Qt object)."""
    dock, parent = None, widget.parentWidget()
    while parent is not None and not isinstance(parent, QMainWindow):
        if dock is None and isinstance(parent, QDockWidget):
            dock = parent
        parent = parent.parentWidget()
    return dock, parent


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
        self._inputs: list = []  # (box, kinds, rank, names after the layers) of every layer drop-down
        self._tabbed = False
        self.layer_box = self.layer_choice("input", self.layer_kinds, self.layer_rank, tooltip="input layer")
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
        body = QWidget()
        self.main_layout = QVBoxLayout(body)
        self.main_layout.addWidget(self.form.native)
        self.main_layout.addLayout(buttons)
        self.main_layout.addWidget(self.bar)
        self.main_layout.addWidget(self.status)
        self.build_extra(self.main_layout)
        self.main_layout.addStretch()
        self.scroll = _FormScroll(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        # the scroll area takes the dock's height (napari adds no stretch below an expanding widget)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.relay = _Relay()
        self.relay.progressed.connect(self._on_progress)
        self.run_button.clicked.connect(self._start)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self.restore_settings()
        for box, *_ in self._inputs:
            box.changed.connect(self._note_ground_truth)
        self._note_ground_truth()

    # -- subclass hooks
    def build_form(self, form):
        """Add the step's inputs (magicgui widgets) to ``form``, a magicgui ``Container``."""

    def build_extra(self, layout):
        """Add rows below the progress bar (optional)."""

    def start(self):
        raise NotImplementedError

    def on_result(self, result):
        raise NotImplementedError

    # -- docking
    def event(self, event):  # noqa: D102 (Qt's name)
        if event.type() in (QEvent.Type.ParentChange, QEvent.Type.Show) and not getattr(self, "_tabbed", True):
            # napari adds the dock to its window after building the widget: look once it has
            QTimer.singleShot(0, functools.partial(call_weakly, weakref.ref(self), "tab_with_siblings"))
        return super().event(event)

    def tab_with_siblings(self) -> None:
        """Tab this widget's dock with the other napari-aet docks in the same area of its window
        (once, when first docked): the steps share one full-height column, each form scrolling,
        instead of stacking past the screen's height."""
        dock, window = _dock_and_window(self)
        if dock is None or window is None or self._tabbed:
            return
        self._tabbed = True
        if dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        others = [d for d in window.findChildren(QDockWidget)
                  if d is not dock and isinstance(d.widget(), WorkerWidget) and not d.isFloating()
                  and window.dockWidgetArea(d) == area and d.isVisibleTo(window)]
        if others and dock not in window.tabifiedDockWidgets(others[0]):
            window.tabifyDockWidget(others[0], dock)
            dock.show()
            dock.raise_()  # the newest step in front

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

    def layer_rank(self, layer) -> int:
        """Order of preference among the input layers (lower first, then the newest); a step
        whose output is of its own input kind (Align, Enhance) puts that output last."""
        return 0

    def layer_choice(self, label: str, kinds, rank=None, after=(), tooltip: str = "") -> mg.ComboBox:
        """A drop-down of the viewer's layers of ``kinds``, best first (:func:`preferred_layers`),
        then the fixed names ``after``; it switches to a new layer that becomes the best."""
        def names(*_) -> list:
            return self._input_names(kinds, rank, after) if hasattr(self, "viewer") else list(after)

        box = choice(label, names, tooltip=tooltip)
        self._inputs.append((box, kinds, rank, tuple(after)))
        return box

    def _input_names(self, kinds, rank, after) -> list:
        return [layer.name for layer in preferred_layers(self.viewer.layers, kinds, rank)] + list(after)

    def _refresh_layers(self, *_, follow: str = ""):
        """Update every layer drop-down: the current layer stays while it exists (else the best
        one); ``follow``, a new layer's name, is selected where it is now the best input."""
        for box, kinds, rank, after in self._inputs:
            names = self._input_names(kinds, rank, after)
            value = box.value if box.value in names else (names[0] if names else None)
            if follow and names and names[0] == follow:
                value = follow
            _set_choices(box, names, value)
        self._note_ground_truth()

    def _note_ground_truth(self, *_) -> None:
        """Say so in the status line when an input is a simulation's ground truth (chosen only
        when nothing else exists): a result from it is not a measurement."""
        if not hasattr(self, "status") or self.worker is not None and self.napari_progress is not None:
            return
        truth = [box.value for box, kinds, _, _ in getattr(self, "_inputs", [])
                 if box.value in self.viewer.layers and is_ground_truth(self.viewer.layers[box.value])]
        note = "note: the input " + ", ".join(f"'{n}'" for n in truth) + " is the simulation's ground truth"
        if truth:
            self.status.setText(note + "; run the previous step to work on a result instead")
        elif self.status.text().startswith("note: the input "):
            self.status.setText("")

    def _on_layer_inserted(self, event) -> None:
        self._refresh_layers(follow=getattr(event.value, "name", ""))

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

        from ..core.threads import configure_threads

        configure_threads(sample_s=0.1)  # once per napari session: the pools fit the CPUs free for us
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
    if "display_feature" in spec:  # the component in % or pm, for a colour bar with readable ticks
        label, values = spec["display_feature"]
        layer.features = layer.features.assign(**{label: values})
    if isinstance(spec["face_color"], str):
        layer.face_color = spec["face_color"]
        layer.face_colormap = spec["face_colormap"]
        layer.face_contrast_limits = spec["face_contrast_limits"]
        layer.face_colorbar.visible = True
    else:
        layer.face_colorbar.visible = False
        layer.face_color = spec["face_color"]
    aet_meta(layer)["colour_by"] = by

"""Work that must survive a crash: remembered widget settings, the undo history of manual
atom edits, and the session folder where every edit is autosaved (no Qt or napari here).

Locations: ``$NAPARI_AET_HOME`` when set, else the platform's user data folder for
napari-aet (``platformdirs``, already a napari dependency).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional


from .core.io import atomic_path, read_atoms, write_atoms, write_json


def home() -> Path:
    """The folder holding settings and sessions (created on demand)."""
    import os

    env = os.environ.get("NAPARI_AET_HOME")
    if env:
        root = Path(env)
    else:
        from platformdirs import user_data_dir

        root = Path(user_data_dir("napari-aet", appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


# ------------------------------------------------------------------------- settings


def _settings_path() -> Path:
    return home() / "settings.json"


def load_settings(section: str) -> dict:
    """The remembered settings of one widget (empty when none or unreadable)."""
    try:
        return dict(json.loads(_settings_path().read_text()).get(section, {}))
    except (OSError, ValueError, AttributeError):
        return {}


def save_settings(section: str, values: dict) -> None:
    """Remember one widget's settings (the file is replaced atomically)."""
    path = _settings_path()
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[section] = values
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, default=str))


# -------------------------------------------------------------------------- history


class EditHistory:
    """Bounded undo/redo of atom tables (whole snapshots: a few thousand atoms are cheap)."""

    def __init__(self, limit: int = 200):
        self.limit = limit
        self._undo: list = []
        self._redo: list = []

    def push(self, table) -> None:
        """Record the state *before* an edit."""
        self._undo.append(table.copy())
        del self._undo[: max(0, len(self._undo) - self.limit)]
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self, current):
        """The state before the last edit; ``current`` goes on the redo stack."""
        if not self._undo:
            return None
        self._redo.append(current.copy())
        return self._undo.pop()

    def redo(self, current):
        if not self._redo:
            return None
        self._undo.append(current.copy())
        return self._redo.pop()


# -------------------------------------------------------------------------- session


class Session:
    """A session folder: ``atoms.csv`` (+ JSON sidecar) rewritten atomically on every edit, and
    ``session.json`` with the edit count and whether the latest edits were exported."""

    def __init__(self, folder: Optional[Path] = None):
        self.folder = Path(folder) if folder else home() / "session"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.atoms_path = self.folder / "atoms.csv"
        self.state_path = self.folder / "session.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _set_state(self, **values) -> None:
        st = self.state()
        st.update(values)
        write_json(self.state_path, st)

    def autosave(self, table, metadata: Optional[dict] = None, layer_name: str = "atoms") -> None:
        """Write the edited atoms now; marks the session as having unexported edits."""
        write_atoms(self.atoms_path, table, metadata or {})
        st = self.state()
        self._set_state(edits=int(st.get("edits", 0)) + 1, exported=False, layer_name=layer_name,
                        saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"), n_atoms=int(len(table)))

    def has_autosave(self) -> bool:
        return self.atoms_path.exists()

    def restore(self):
        """``(table, metadata, layer_name)`` from the last autosave, or None."""
        if not self.has_autosave():
            return None
        table, meta = read_atoms(self.atoms_path)
        return table, meta, self.state().get("layer_name", "atoms")

    def mark_exported(self, path) -> None:
        self._set_state(exported=True, last_export=str(path))

    @property
    def unexported(self) -> bool:
        st = self.state()
        return bool(st.get("edits")) and not st.get("exported", False)

    def clear(self) -> None:
        """Forget the autosave (after the user discards it)."""
        for p in (self.atoms_path, self.atoms_path.with_suffix(".json"), self.state_path):
            p.unlink(missing_ok=True)

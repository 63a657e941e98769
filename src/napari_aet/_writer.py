"""napari writers: a Points layer of atoms to the contract's CSV, or to XYZ through ASE."""

from __future__ import annotations

from ._layers import points_to_table
from .core.io import write_atoms


def _atoms_metadata(meta: dict):
    return (meta.get("metadata") or {}).get("napari_aet", {}).get("atoms_metadata") or None


def write_atoms_csv(path: str, data, meta: dict) -> list[str]:
    """Write atoms as the lossless contract CSV (with its JSON sidecar when known)."""
    write_atoms(path, points_to_table(data, meta), metadata=_atoms_metadata(meta))
    return [path]


def write_atoms_xyz(path: str, data, meta: dict) -> list[str]:
    """Write atoms as extended XYZ through ASE (features as per-atom arrays)."""
    write_atoms(path, points_to_table(data, meta), metadata=_atoms_metadata(meta))
    return [path]

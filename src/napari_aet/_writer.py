"""napari writers: atoms (Points) to the contract's CSV or through ASE; tomograms and tilt series to MRC."""

from __future__ import annotations

from pathlib import Path

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


def write_atoms_structure(path: str, data, meta: dict) -> list[str]:
    """Write atoms as PDB, XSF or LAMMPS data through ASE (species and positions only)."""
    write_atoms(path, points_to_table(data, meta), metadata=_atoms_metadata(meta))
    return [path]


def write_image_mrc(path: str, data, meta: dict) -> list[str]:
    """Write a tomogram as MRC with its voxel size (Å) and centred origin, or a tilt series as an
    MRC image stack with its angles beside it (``.rawtlt``), so both reopen as they were."""
    import numpy as np

    from .core.errors import AETInputError
    from .core.io import LENGTH_UNITS_TO_A, TiltSeries, write_tilt_series, write_volume

    arr = np.asarray(data)
    if arr.ndim != 3:
        raise AETInputError(f"layer has {arr.ndim} dimensions; MRC tomograms and tilt series are 3D")
    aet = (meta.get("metadata") or {}).get("napari_aet", {})
    scale = list(meta.get("scale") or [1.0, 1.0, 1.0])
    units = [str(u) for u in (meta.get("units") or ["angstrom"] * 3)]
    factor = LENGTH_UNITS_TO_A.get(units[-1].lower(), None)
    pixel_size = aet.get("pixel_size") or (scale[-1] * factor if factor else None)
    if not pixel_size:
        raise AETInputError("the layer has no voxel size in Å; set its scale (and units) or open it with a pixel size")
    if aet.get("kind") == "tilt_series":
        angles = aet.get("angles")
        write_tilt_series(path, TiltSeries(arr.astype(np.float32), None if angles is None else np.asarray(angles),
                                           float(pixel_size)), write_angles_file=angles is not None)
        written = [path] + ([str(Path(path).with_suffix(".rawtlt"))] if angles is not None else [])
        return written
    write_volume(path, arr, float(pixel_size))
    return [path]

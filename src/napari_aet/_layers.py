"""Turn core records into napari layer data, and Points layers back into atoms tables.

Plain tuples and arrays only (napari's LayerData form), so this module needs no napari
import; every layer is placed in sample-frame Å per the contract.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .core import geometry
from .core.io import TiltSeries, Volume

FCC_COLOURS = {1: "#1f4fd1", 0: "#000000"}  # the reference's blue (assigned) / black (not)


def tilt_series_layer(ts: TiltSeries, name: str = "tilt series"):
    """Image layer of a tilt series ``[a, v, u]``; rows and columns in Å (pixels if unknown)."""
    p = ts.pixel_size or 1.0
    _, nv, nu = ts.data.shape
    meta = {
        "napari_aet": {
            "kind": "tilt_series",
            "angles": None if ts.angles is None else np.asarray(ts.angles).tolist(),
            "pixel_size": ts.pixel_size,
            "source": ts.source,
        }
    }
    kwargs = {
        "name": name,
        "scale": (1.0, p, p),
        "translate": (0.0, -(nv // 2) * p, -(nu // 2) * p),
        "metadata": meta,
        "colormap": "gray",
    }
    return (ts.data, kwargs, "image")


def volume_layer(vol: Volume, name: str = "tomogram", kind: str = "tomogram", **extra):
    """Image layer of a (z, y, x) volume in sample-frame Å."""
    scale, translate = geometry.napari_scale_translate(vol.data.shape, vol.pixel_size or 1.0)
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "metadata": {"napari_aet": {"kind": kind, "pixel_size": vol.pixel_size, "source": vol.source}},
        "colormap": "gray",
        "rendering": "attenuated_mip",
    }
    kwargs.update(extra)
    return (vol.data, kwargs, "image")


def atoms_layer(table, name: str = "atoms", metadata: Optional[dict] = None, size: float = 1.2):
    """Points layer of an atoms table: data (z, y, x) in Å, the other columns as features.

    Coloured by f.c.c. assignment when known (blue assigned, black not), else grey.
    """
    data = table[["z", "y", "x"]].to_numpy(dtype=float)
    features = table.drop(columns=["x", "y", "z"]).reset_index(drop=True)
    if "fcc" in features:
        colours = [FCC_COLOURS.get(int(v), "#808080") for v in features["fcc"].fillna(0)]
    else:
        colours = "#b0b0b0"
    kwargs = {
        "name": name,
        "features": features,
        "size": size,
        "face_color": colours,
        "border_width": 0,
        "metadata": {"napari_aet": {"kind": "atoms", "atoms_metadata": metadata or {}}},
        "shading": "spherical",
    }
    return (data, kwargs, "points")


def points_to_table(data, meta: dict):
    """Atoms table from a Points layer's data (z, y, x) and its writer ``meta``."""
    import pandas as pd

    pts = np.asarray(data, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points have shape {pts.shape}; atoms need 3D points (z, y, x)")
    scale = np.asarray(meta.get("scale", (1, 1, 1)), float)[-3:]
    translate = np.asarray(meta.get("translate", (0, 0, 0)), float)[-3:]
    world = pts * scale + translate
    table = pd.DataFrame({"x": world[:, 2], "y": world[:, 1], "z": world[:, 0]})
    features = meta.get("features")
    if features is not None and len(features) == len(table):
        feats = pd.DataFrame(features).reset_index(drop=True)
        feats = feats.drop(columns=[c for c in ("x", "y", "z") if c in feats])
        table = pd.concat([table, feats], axis=1)
    return table

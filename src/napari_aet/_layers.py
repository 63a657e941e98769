"""Turn core records into napari layer data, and Points layers back into atoms tables.

Plain tuples and arrays only (napari's LayerData form), so this module needs no napari
import; every layer is placed in sample-frame Å per the contract.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .core import geometry
from .core.io import TiltSeries, Volume

from .core.figures import FACET_COLOURS, FCC_COLOURS  # one palette for napari and the paper figures


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
            "angles_source": (ts.metadata or {}).get("angles_source"),
        }
    }
    kwargs = {
        "name": name,
        "units": ("pixel", "angstrom", "angstrom") if ts.pixel_size else ("pixel",) * 3,
        "scale": (1.0, p, p),
        "translate": (0.0, geometry.origin_angstrom(nv, p), geometry.origin_angstrom(nu, p)),
        "metadata": meta,
        "colormap": "gray",
    }
    return (ts.data, kwargs, "image")


def data_range(data) -> tuple:
    """(min, max) of an array for a layer's contrast limits: numpy's reduction takes a few ms
    where napari's own estimate takes a third of a second at 144³ (measured), on the GUI thread."""
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def volume_layer(vol: Volume, name: str = "tomogram", kind: str = "tomogram", **extra):
    """Image layer of a (z, y, x) volume in sample-frame Å."""
    scale, translate = geometry.napari_scale_translate(vol.data.shape, vol.pixel_size or 1.0)
    kwargs = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "metadata": {"napari_aet": {"kind": kind, "pixel_size": vol.pixel_size, "source": vol.source}},
        "colormap": "gray",
        "contrast_limits": data_range(vol.data),
        "rendering": "attenuated_mip",
        "units": ("angstrom",) * 3 if vol.pixel_size else ("pixel",) * 3,
    }
    kwargs.update(extra)
    return (vol.data, kwargs, "image")


def atoms_layer(table, name: str = "atoms", metadata: Optional[dict] = None, size: float = 1.2):
    """Points layer of an atoms table: data (z, y, x) in Å, the other columns as features.

    Coloured by f.c.c. assignment when known (blue assigned, black not), else grey.
    """
    data = np.array(table[["z", "y", "x"]].to_numpy(dtype=float))  # writable: napari moves points in place
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
        "units": ("angstrom",) * 3,
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


LAYER_PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]
CATEGORICAL = ("fcc", "facet", "layer")
STRAIN = ("exx", "eyy", "ezz", "exy", "exz", "eyz")
DISPLACEMENT = ("ux", "uy", "uz")


def colour_options(features) -> list:
    """What an atoms layer can be coloured by, given its features."""
    cols = set(getattr(features, "columns", []))
    return [c for c in CATEGORICAL + STRAIN + DISPLACEMENT if c in cols]


def atom_colours(features, by: str) -> dict:
    """Points-layer colour settings for colouring atoms by ``by``.

    Categorical (``fcc``: blue assigned / black not, as in the reference; ``facet``: {100}
    red, {111} blue, {110} green, others grey; ``layer``: a repeating palette) give explicit
    colours; a strain or displacement component gives the feature name with a diverging
    colormap and limits symmetric about zero (99th percentile of |value|).
    """
    if by not in getattr(features, "columns", []):
        raise ValueError(f"the atoms have no '{by}' column; run Analyze first")
    values = features[by]
    if by == "fcc":
        return {"face_color": [FCC_COLOURS.get(int(v), "#808080") if v == v else "#808080" for v in values]}
    if by == "facet":
        return {"face_color": [FACET_COLOURS.get(str(v), "#bbbbbb") for v in values.fillna("")]}
    if by == "layer":
        return {"face_color": [LAYER_PALETTE[int(v) % (len(LAYER_PALETTE) - 1)] if v == v else LAYER_PALETTE[-1]
                               for v in values]}
    v = np.asarray(values, float)
    finite = np.abs(v[np.isfinite(v)])
    lim = float(np.percentile(finite, 99)) if finite.size else 1.0
    return {"face_color": by, "face_colormap": "RdBu_r", "face_contrast_limits": (-(lim or 1.0), lim or 1.0)}


def displacement_vectors(table, lattice: dict, layer: Optional[int] = None, exaggeration: float = 10.0):
    """Vectors layer data ``(N, 2, 3)`` [origin (z, y, x) Å, displacement × ``exaggeration``]
    for the atoms of one layer (all when None), with the magnitude (Å) as a feature."""
    import pandas as pd

    needed = {"ux", "uy", "uz", "layer"}
    if not needed <= set(table.columns):
        raise ValueError("the atoms have no displacements; run Analyze first")
    t = table
    if "atom" in t:
        t = t[t["atom"] == 1]
    t = t[np.isfinite(t[["ux", "uy", "uz"]].to_numpy(float)).all(axis=1)]
    if layer is not None:
        t = t[t["layer"] == layer]
    rot = np.asarray(lattice["crystal_rotation"], float)  # columns: crystal axes in the sample frame
    u_sample = t[["ux", "uy", "uz"]].to_numpy(float) @ rot.T
    origin = t[["z", "y", "x"]].to_numpy(float)
    data = np.stack([origin, u_sample[:, ::-1] * exaggeration], axis=1)
    features = pd.DataFrame({"magnitude": np.linalg.norm(u_sample, axis=1), "layer": t["layer"].to_numpy()})
    return data, features


def fourier_views(volume: np.ndarray, tilt_range: Optional[float]) -> tuple:
    """(log Fourier intensity, missing-wedge mask or None): the heavy part of
    :func:`fourier_layers`, to run in a worker thread."""
    from .core.fourier import fourier_intensity, missing_wedge_mask

    wedge = missing_wedge_mask(volume.shape, tilt_range).astype(np.uint8) if tilt_range else None
    return fourier_intensity(volume), wedge


def fourier_layers(volume: Volume, tilt_range: Optional[float], name: str, views: Optional[tuple] = None):
    """Image layer of log Fourier intensity (centred, axes in 1/Å) and, when the tilt range is
    known, a Labels layer marking the missing wedge. ``views``: precomputed
    :func:`fourier_views` (else computed here)."""
    intensity, wedge = views if views is not None else fourier_views(volume.data, tilt_range)

    n = np.array(volume.data.shape)
    dk = 1.0 / (n * (volume.pixel_size or 1.0))
    scale = tuple(dk)
    translate = tuple(-(n // 2) * dk)
    meta = {"napari_aet": {"kind": "fourier", "pixel_size": volume.pixel_size, "tilt_range": tilt_range}}
    out = [(intensity, {"name": f"{name} |F|² (log)", "scale": scale, "translate": translate,
                        "colormap": "magma", "contrast_limits": data_range(intensity), "metadata": meta}, "image")]
    if wedge is not None:  # an image overlay, not a Labels layer: four times cheaper to add (measured)
        out.append((wedge, {"name": f"missing wedge (±{tilt_range:.0f}°)", "scale": scale, "translate": translate,
                            "colormap": "cyan", "blending": "additive", "opacity": 0.3, "contrast_limits": (0, 1),
                            "metadata": {"napari_aet": {"kind": "wedge"}}}, "image"))
    return out

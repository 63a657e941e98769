"""Turn core records into napari layer data, and Points layers back into atoms tables.

Plain tuples and arrays only (napari's LayerData form), so this module needs no napari
import; every layer is placed in sample-frame Å per the contract.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .core import geometry
from .core.io import TiltSeries, Volume

from .core.figures import FACET_COLOURS, FCC_COLOURS, species_colour  # one palette for napari and the paper figures
from .core._layer_maps import component_label, nice_limit  # one naming of components and their units


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
        # every axis in Å as the volumes and atoms are (the stack axis counts projections at
        # one "Å" a step): one unit per dimension keeps napari's units and its scale bar in Å
        "units": ("angstrom",) * 3 if ts.pixel_size else ("pixel",) * 3,
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
        display_only = {component_label(c) for c in STRAIN + DISPLACEMENT} | set(CONFIDENCE_LABELS.values())
        feats = feats.drop(columns=[c for c in feats if c in ("x", "y", "z") or c in display_only])
        table = pd.concat([table, feats], axis=1)
    return table


LAYER_PALETTE = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]
CATEGORICAL = ("fcc", "facet", "layer", "species", "shell")
# shells from the surface inward (core.alloy): viridis from the surface (dark) to the core
# (light), fixed per shell so one shell keeps its colour in every particle; non-atoms grey
SHELL_PALETTE = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"]
STRAIN = ("exx", "eyy", "ezz", "exy", "exz", "eyz")
DISPLACEMENT = ("ux", "uy", "uz")
CONFIDENCE = ("sigma_x_pm", "sigma_y_pm", "sigma_z_pm", "presence")  # core.confidence.CONFIDENCE_COLUMNS
CONFIDENCE_LABELS = {"sigma_x_pm": "σ_x (pm)", "sigma_y_pm": "σ_y (pm)", "sigma_z_pm": "σ_z (pm)",
                     "presence": "presence (0-1)"}  # display-only columns: a missing score drawn as the worst


def colour_options(features) -> list:
    """What an atoms layer can be coloured by, given its features."""
    cols = set(getattr(features, "columns", []))
    if "species" in cols and not _has_species(features["species"]):
        cols.discard("species")  # no species known: nothing to colour by
    return [c for c in CATEGORICAL + STRAIN + DISPLACEMENT + CONFIDENCE if c in cols]


def _has_species(values) -> bool:
    from .core.alloy import species_labels

    return bool((species_labels({"species": values}) != "").any())


def colour_label(by: str) -> str:
    """The colour bar's name of a continuous colouring: component and unit."""
    return CONFIDENCE_LABELS.get(by) or component_label(by)


def _confidence_colours(values, by: str) -> dict:
    """Red for the least certain, blue for the most: presence 0 to 1 (RdYlBu), a position
    uncertainty from 0 to a round 99th percentile (RdYlBu_r); an atom without a score (added
    by hand) is drawn as the least certain."""
    import pandas as pd

    v = pd.to_numeric(pd.Series(values), errors="coerce").astype(float).to_numpy()
    finite = v[np.isfinite(v)]
    if by == "presence":
        limits, worst, cmap = (0.0, 1.0), 0.0, "RdYlBu"
    else:
        hi = nice_limit(float(np.percentile(finite, 99))) if finite.size else 1.0
        limits, worst, cmap = (0.0, hi), hi, "RdYlBu_r"
    label = CONFIDENCE_LABELS[by]
    return {"face_color": label, "face_colormap": cmap, "face_contrast_limits": limits,
            "display_feature": (label, np.where(np.isfinite(v), v, worst))}


def atom_colours(features, by: str) -> dict:
    """Points-layer colour settings for colouring atoms by ``by``.

    Categorical (``fcc``: blue assigned / black not, as in the reference; ``facet``: {100}
    red, {111} blue, {110} green, others grey; ``layer``: a repeating palette; ``species``:
    one fixed colour per name, :func:`~napari_aet.core.figures.species_colour`; ``shell``:
    surface to core dark to light, :data:`SHELL_PALETTE`) give explicit colours; a strain or displacement component gives the feature name with a diverging
    colormap and limits symmetric about zero (99th percentile of |value|).
    """
    if by not in getattr(features, "columns", []):
        raise ValueError(f"the atoms have no '{by}' column; run Analyze first")
    values = features[by]
    if by in ("fcc", "layer"):  # nullable integers (pd.NA) and NaN alike: missing is grey
        import pandas as pd

        numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
        if by == "fcc":
            return {"face_color": [FCC_COLOURS.get(int(v), "#808080") if np.isfinite(v) else "#808080"
                                   for v in numbers]}
        return {"face_color": [LAYER_PALETTE[int(v) % (len(LAYER_PALETTE) - 1)] if np.isfinite(v)
                               else LAYER_PALETTE[-1] for v in numbers]}
    if by == "facet":
        return {"face_color": [FACET_COLOURS.get(str(v), "#bbbbbb") for v in values.fillna("")]}
    if by == "species":  # one fixed colour per name, as in the paper figures
        from .core.alloy import species_labels

        return {"face_color": [species_colour(v) for v in species_labels({"species": values})]}
    if by == "shell":
        import pandas as pd

        numbers = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
        return {"face_color": [SHELL_PALETTE[min(int(v), len(SHELL_PALETTE) - 1)] if np.isfinite(v) and v >= 0
                               else "#bbbbbb" for v in numbers]}
    if by in CONFIDENCE:
        return _confidence_colours(values, by)
    v = np.asarray(values, float)
    label, factor = by, 1.0
    if by in STRAIN or by in DISPLACEMENT:  # shown in % and pm (a colour bar of 0.003 reads "0")
        label, factor = component_label(by), 100.0
        v = v * factor
    finite = np.abs(v[np.isfinite(v)])
    lim = nice_limit(float(np.percentile(finite, 99))) if finite.size else 1.0
    spec = {"face_color": label, "face_colormap": "RdBu_r", "face_contrast_limits": (-lim, lim)}
    if label != by:
        spec["display_feature"] = (label, v)  # a display-only column: never exported (points_to_table)
    return spec


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
    units = (INVERSE_ANGSTROM,) * 3  # their own viewer: never mixed with the Å layers
    meta = {"napari_aet": {"kind": "fourier", "pixel_size": volume.pixel_size, "tilt_range": tilt_range}}
    out = [(intensity, {"name": f"{name} |F|² (log)", "scale": scale, "translate": translate, "units": units,
                        "colormap": "magma", "contrast_limits": data_range(intensity), "metadata": meta}, "image")]
    if wedge is not None:  # an image overlay, not a Labels layer: four times cheaper to add (measured)
        out.append((wedge, {"name": f"missing wedge (±{tilt_range:.0f}°)", "scale": scale, "translate": translate,
                            "units": units, "colormap": "cyan", "blending": "additive", "opacity": 0.3,
                            "contrast_limits": (0, 1), "metadata": {"napari_aet": {"kind": "wedge"}}}, "image"))
        out.append(wedge_lines_layer(volume.data.shape, volume.pixel_size or 1.0, tilt_range))
    return out


INVERSE_ANGSTROM = "1/angstrom"


def wedge_lines(shape, pixel_size: float, tilt_range: float) -> list:
    """The missing wedge's edges in the k_x-k_z plane (k_y = 0) as two line segments through
    the origin, ``[(k_z, k_y, k_x) start, end]`` in 1/Å: |k_z| = |k_x| tan(tilt range), clipped
    to the Fourier box (the reference work's figure 2c-d)."""
    n = np.asarray(shape, float)
    kz_max, kx_max = (n[0] // 2) / (n[0] * pixel_size), (n[2] // 2) / (n[2] * pixel_size)
    t = float(np.tan(np.deg2rad(tilt_range)))
    kx = min(kx_max, kz_max / t) if t > 0 else kx_max
    return [np.array([[-sign * kx * t, 0.0, -kx], [sign * kx * t, 0.0, kx]]) for sign in (1.0, -1.0)]


def wedge_lines_layer(shape, pixel_size: float, tilt_range: float):
    """Shapes layer of :func:`wedge_lines` (cyan, 1/Å) named after the tilt range."""
    lines = wedge_lines(shape, pixel_size, tilt_range)
    width = 2.0 / (np.asarray(shape[-1], float) * pixel_size)  # two frequency steps
    return (lines, {"name": f"wedge edges (±{tilt_range:.0f}°)", "shape_type": "line", "edge_color": "cyan",
                    "edge_width": width, "units": (INVERSE_ANGSTROM,) * 3,
                    "metadata": {"napari_aet": {"kind": "wedge_lines", "tilt_range": tilt_range}}}, "shapes")


def arrow_exaggeration(magnitudes, spacing: float) -> float:
    """A round factor (1, 2 or 5 × 10^k) that draws the median displacement ``magnitudes`` (Å)
    at about half the atom ``spacing`` (Å): pm displacements become visible arrows."""
    m = np.asarray(magnitudes, float)
    m = m[np.isfinite(m) & (m > 0)]
    if not m.size:
        return 1.0
    want = 0.5 * spacing / float(np.median(m))
    k = np.floor(np.log10(want))
    steps = np.array([1.0, 2.0, 5.0, 10.0]) * 10.0**k
    return float(steps[np.argmin(np.abs(np.log(steps / want)))])


def layer_frame(lattice: dict, layer_axis: str = "001") -> np.ndarray:
    """Rows: two in-plane directions and the normal of the one-unit-cell layers along
    ``layer_axis`` ('100', '010', '001', '110', '111'), unit vectors in napari (z, y, x) order."""
    from .core.analysis import LAYER_AXES

    rot = np.asarray(lattice["crystal_rotation"], float)  # columns: crystal axes in the sample frame (x, y, z)
    normal = rot @ np.asarray(LAYER_AXES.get(layer_axis, (0, 0, 1)), float)
    normal /= np.linalg.norm(normal)
    helper = rot[:, int(np.argmin(np.abs(rot.T @ normal)))]  # the crystal axis most in the plane
    e1 = helper - (helper @ normal) * normal
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    return np.stack([e1, e2, normal])[:, ::-1]


def layer_view(table, lattice: dict, layer: int, layer_axis: str = "001", exaggeration: float = 1.0) -> tuple:
    """One layer seen face-on in 2D: atom positions ``(N, 2)`` and displacement arrows
    ``(N, 2, 2)`` (in-plane part × ``exaggeration``), both in Å along :func:`layer_frame`'s
    in-plane directions, and the features (magnitude in Å, out-of-plane part u_n in Å)."""
    import pandas as pd

    data, feats = displacement_vectors(table, lattice, layer, 1.0)
    frame = layer_frame(lattice, layer_axis)
    origin = data[:, 0] @ frame[:2].T if len(data) else np.zeros((0, 2))
    inplane = data[:, 1] @ frame[:2].T if len(data) else np.zeros((0, 2))
    normal = data[:, 1] @ frame[2] if len(data) else np.zeros(0)
    arrows = np.stack([origin, inplane * exaggeration], axis=1) if len(data) else np.zeros((0, 2, 2))
    return origin, arrows, pd.DataFrame({"magnitude": feats["magnitude"].to_numpy(), "u_normal": normal})


def analysis_layers(table, name: str, size: float = 1.2) -> list:
    """Points layers of an analysed atoms table for toggling and comparing: the facets (surface
    atoms coloured by facet family) and each strain component in % (diverging, symmetric round
    limits, a colour bar), in Å like the atoms layer; hidden until the user shows them."""
    atoms = table[table["atom"] == 1] if "atom" in table else table
    out = []
    if "facet" in atoms:
        surf = atoms[atoms["facet"].fillna("").astype(str) != ""]
        data, kwargs, _ = atoms_layer(surf, name=f"{name}: facets", size=size)
        kwargs.update(face_color=atom_colours(kwargs["features"], "facet")["face_color"], visible=False)
        kwargs["metadata"] = {"napari_aet": {"kind": "analysis_view", "component": "facet"}}
        out.append((data, kwargs, "points"))
    for comp in STRAIN:
        if comp not in atoms:
            continue
        sel = atoms[np.isfinite(atoms[comp].to_numpy(float))]
        data, kwargs, _ = atoms_layer(sel, name=f"{name}: {component_label(comp)}", size=size)
        label = component_label(comp)
        kwargs["features"] = kwargs["features"].assign(**{label: sel[comp].to_numpy(float) * 100.0})
        lim = nice_limit(float(np.percentile(np.abs(kwargs["features"][label]), 99)) if len(sel) else 1.0)
        kwargs.update(face_color=label, face_colormap="RdBu_r", face_contrast_limits=(-lim, lim), visible=False)
        kwargs["metadata"] = {"napari_aet": {"kind": "analysis_view", "component": comp, "label": label}}
        out.append((data, kwargs, "points"))
    return out

"""Publication figures with matplotlib (Agg, no display): PNG at 300 dpi and SVG, with units,
scale bars and colour bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import AETInputError

import numpy as np

FCC_COLOURS = {1: "#1f4fd1", 0: "#000000"}  # the reference's blue (on an f.c.c. site) / black (not)
FACET_COLOURS = {"100": "#d62728", "111": "#1f77b4", "110": "#2ca02c", "other": "#ff7f0e", "": "#bbbbbb"}  # edges, corners, interior: grey
# one colour an element, whatever else the particle holds (Ni and Pt look the same in every figure and layer)
SPECIES_COLOURS = {"Pt": "#607d8b", "Ni": "#43a047", "Co": "#e53935", "Fe": "#fb8c00", "Cu": "#a0522d",
                   "Pd": "#00acc1", "Au": "#fdd835", "Ag": "#9575cd", "Ir": "#8e24aa", "Rh": "#d81b60",
                   "Ru": "#00897b", "Ta": "#6d4c41", "Mo": "#c0ca33", "W": "#1a237e", "Al": "#ce93d8",
                   "C": "#424242", "": "#bbbbbb"}
SPECIES_FALLBACK = ("#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", "#cc6677", "#882255", "#aa4499")

__all__ = ["orthoslices", "fourier_intensity", "layer_maps", "particle_on_support", "facets", "fcc_layers",
           "layer_displacements", "layer_strain", "density_maps", "fourier_density_maps", "tilt_axis_basis",
           "density_images", "fourier_images", "reference_jobs",
           "REFERENCE_FIGURES", "ALLOY_FIGURES", "write_figures", "render", "save", "species_colour",
           "particle_species"]


class _AggFigures:
    """The two pyplot calls the figures use, on plain Agg figures: no pyplot state, so
    building figures is safe in worker threads and whatever backend the host (napari: Qt)
    has chosen."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, figsize=None, layout=None, **kw):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(nrows, ncols, **kw)

    @staticmethod
    def close(fig) -> None:
        """Nothing to release: the figure is not registered with pyplot."""


def _plt() -> _AggFigures:
    return _AggFigures()


FORMATS = ("png", "svg")


def save(fig, out_dir: Path, name: str, formats=FORMATS) -> list:
    """Write ``name``.png (300 dpi) and ``name``.svg (or .pdf) atomically; return the paths.

    Parameters
    ----------
    fig : matplotlib Figure
    out_dir : Path
    name : str
    formats : sequence of {"png", "svg", "pdf"}

    Returns
    -------
    list of str
    """
    from .io import atomic_path

    out = []
    # lay the figure out and find its tight box once, not once per format
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    fig.set_layout_engine("none")
    for fmt in formats:
        # zlib level 1: a quarter of the encoding time of the default for files about 15% larger
        ext, kw = f".{fmt}", ({"dpi": 300, "pil_kwargs": {"compress_level": 1}} if fmt == "png" else {})
        path = Path(out_dir) / f"{name}{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext[1:], bbox_inches=box, **kw)
        out.append(str(path))
    _plt().close(fig)
    return out


def _scale_bar(ax, length_px: float, label: str):
    from matplotlib.patches import Rectangle

    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    w, h = abs(x1 - x0), abs(y1 - y0)
    left, bottom = min(x0, x1) + 0.05 * w, min(y0, y1) + 0.06 * h
    ax.add_patch(Rectangle((left, bottom), length_px, 0.015 * h, color="white"))
    ax.text(left + length_px / 2, bottom + 0.03 * h, label, color="white", ha="center", va="bottom", fontsize=7)


def orthoslices(volumes: dict, pixel_size: float, title: str = ""):
    """Central xy, xz and yz slices of each volume (rows), with a 1 nm scale bar.

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    pixel_size : float
        Å.
    title : str

    Returns
    -------
    matplotlib Figure
    """
    plt = _plt()
    fig, axes = plt.subplots(len(volumes), 3, figsize=(8, 2.7 * len(volumes)), squeeze=False, layout="constrained")
    for r, (name, vol) in enumerate(volumes.items()):
        nz, ny, nx = vol.shape
        slices = {"xy (z = 0)": vol[nz // 2], "xz (y = 0)": vol[:, ny // 2], "yz (x = 0)": vol[:, :, nx // 2].T}
        vmax = float(np.percentile(vol, 99.9)) or 1.0
        for c, (lab, img) in enumerate(slices.items()):
            ax = axes[r, c]
            im = ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, origin="lower")
            ax.set_title(f"{name}: {lab}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            _scale_bar(ax, 10.0 / pixel_size, "1 nm")
        fig.colorbar(im, ax=axes[r, :].tolist(), shrink=0.8, label="intensity (Pt-atom units)")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def fourier_intensity(volumes: dict, tilt_range: float, pixel_size: float):
    """log |F|² on the kx-kz plane (ky = 0) of each volume, the missing wedge outlined.

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    tilt_range : float
        Degrees.
    pixel_size : float
        Å.

    Returns
    -------
    matplotlib Figure
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(volumes), figsize=(3.9 * len(volumes), 3.3), squeeze=False, layout="constrained")
    for c, (name, vol) in enumerate(volumes.items()):
        f = np.fft.fftshift(np.abs(np.fft.fftn(vol)) ** 2)
        sl = np.log10(f[:, f.shape[1] // 2, :] + 1e-6)
        kmax = 0.5 / pixel_size
        ax = axes[0, c]
        im = ax.imshow(sl, cmap="magma", origin="lower", extent=[-kmax, kmax, -kmax, kmax])
        t = np.deg2rad(tilt_range)
        kx = np.linspace(-kmax, kmax, 50)
        for sgn in (1, -1):  # measured directions lie within ±tilt_range of k_x; the wedge is around k_z
            ax.plot(kx, sgn * np.tan(t) * kx, "c--", lw=0.8)
        ax.set_xlim(-kmax, kmax)
        ax.set_ylim(-kmax, kmax)
        ax.set_xlabel("k_x (1/Å)")
        ax.set_ylabel("k_z (1/Å)")
        ax.set_title(f"{name}: log10 |F|² (k_y = 0); missing wedge beyond ±{tilt_range:.1f}°", fontsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def layer_maps(table, component: str, lattice: dict, layer_axis: str = "001"):
    """One panel per layer: atoms coloured by a strain or displacement component (diverging,
    symmetric), drawn in the layer's plane in crystal coordinates (the reference's Fig. 3e-g).

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    component : str
        ``ux`` ... ``eyz``.
    lattice : dict
        The analysis summary's lattice.
    layer_axis : {"100", "010", "001"}

    Returns
    -------
    matplotlib Figure or None
        None without layers.
    """
    plt = _plt()
    atoms = table[np.isfinite(table[component])]
    rot, origin = np.asarray(lattice["crystal_rotation"]), np.asarray(lattice["origin"])
    crys = (atoms[["x", "y", "z"]].to_numpy() - origin) @ rot
    normal = int(np.argmax([int(c) for c in layer_axis])) if layer_axis in ("100", "010", "001") else 2
    i1, i2 = [k for k in range(3) if k != normal]
    names = "xyz"
    layers = sorted(int(v) for v in atoms["layer"].dropna().unique())
    if not layers:
        return None
    ncol = min(5, len(layers))
    nrow = int(np.ceil(len(layers) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol + 0.8, 2.3 * nrow), squeeze=False, layout="constrained")
    vals = atoms[component].to_numpy()
    scale = 100.0 if component.startswith("e") else 1.0
    lim = float(np.nanpercentile(np.abs(vals), 99)) * scale or 1.0
    for k, L in enumerate(layers):
        ax = axes[k // ncol, k % ncol]
        sel = atoms["layer"] == L
        sel = sel.to_numpy()
        sc = ax.scatter(crys[sel, i1], crys[sel, i2], c=atoms.loc[sel, component] * scale, cmap="RdBu_r",
                        vmin=-lim, vmax=lim, s=10, linewidths=0)
        ax.set_title(f"layer {L}", fontsize=7)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(len(layers), nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    unit = "%" if component.startswith("e") else "Å"
    fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.8, label=f"{component} ({unit})")
    fig.suptitle(f"{component} per one-unit-cell layer along [{layer_axis}] ({lattice['lattice_constant']:.3f} Å thick); "
                 f"panels span crystal {names[i1]}-{names[i2]}", fontsize=8)
    return fig




# --- the reference work's figures, rendered as shaded spheres and density maps (core.render) ---

SUPPORT_COLOUR = "#a8a8a8"  # non-atoms: support and noise peaks
FADED_COLOUR = "#e2e2e2"  # atoms that are not the subject of a panel
ATOM_RADIUS = 1.25  # Å, drawn: a little under half the Pt-Pt distance (2.77 Å), so neighbours just part
SUPPORT_RADIUS = 0.8  # Å, drawn
DEFAULT_VIEW = (25.0, -55.0)  # elevation and azimuth (degrees) of the 3D views
LAYER_AXES = ("100", "010", "001")


def _particle_and_rest(table):
    if "atom" not in table:
        return table, table.iloc[:0]
    return table[table["atom"] == 1], table[table["atom"] != 1]


def _families(atoms) -> np.ndarray:
    """Facet family labels as clean strings ('100', '111', ..., '' for none)."""
    if "facet" not in atoms:
        return np.full(len(atoms), "", dtype=object)
    out = []
    for v in atoms["facet"]:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            out.append("")
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out.append(f"{int(v):03d}")  # a CSV reader may have turned '100' into 100.0
        else:
            out.append(str(v))
    return np.array(out, dtype=object)


def _nice_bar_nm(width_angstrom: float) -> float:
    """A scale-bar length (nm) near a fifth of the image width: 0.2, 0.5, 1, 2, 5, 10, ... nm."""
    target = width_angstrom / 50.0  # a fifth of the width, in nm
    nice = [m * 10.0 ** e for e in range(-1, 4) for m in (1, 2, 5)]
    return max([v for v in nice if v <= target] or [nice[0]])


def _sphere_panel(ax, img, angstrom_per_px: float, title: str = "", bar_nm: Optional[float] = None,
                  dark: bool = False):
    ax.imshow(img, interpolation="antialiased")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    h, w = img.shape[:2]
    bar_nm = bar_nm or _nice_bar_nm(w * angstrom_per_px)
    length = 10.0 * bar_nm / angstrom_per_px
    colour = "white" if dark else "black"
    ax.plot([0.05 * w, 0.05 * w + length], [0.95 * h, 0.95 * h], color=colour, lw=2.5, solid_capstyle="butt")
    ax.text(0.05 * w + length / 2, 0.93 * h, f"{bar_nm:g} nm", color=colour, ha="center", va="bottom", fontsize=7)


def _legend(ax, entries):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", markerfacecolor=c, markeredgecolor="none", markersize=7, label=lab)
               for lab, c in entries]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=6.5, frameon=False,
              handletextpad=0.2, columnspacing=0.8, borderaxespad=0.0)


def _basis(view) -> np.ndarray:
    from .render import camera_basis, view_direction

    return camera_basis(view_direction(*view))


def _support_side(atoms, rest, summary: Optional[dict]) -> np.ndarray:
    """Non-atoms on the support's side of the particle: beyond its contact face along the
    support normal that ``analyze --support-normal`` recorded (none without one: noise peaks
    all round the particle would bury it)."""
    from .analysis import AnalysisSummary

    found = AnalysisSummary.of(summary)
    if found.support_normal is None or not len(rest) or not len(atoms):
        return np.zeros(len(rest), bool)
    n = found.support_normal / np.linalg.norm(found.support_normal)
    a = found.lattice_constant or 3.9
    contact = float((atoms[["x", "y", "z"]].to_numpy(float) @ n).max())
    return (rest[["x", "y", "z"]].to_numpy(float) @ n) > contact - 0.5 * a


def species_colour(label) -> str:
    """The fixed colour of a species: :data:`SPECIES_COLOURS` for the elements listed there,
    else one of :data:`SPECIES_FALLBACK` chosen by the label's CRC-32 (the same every run).

    Parameters
    ----------
    label : str
        Element symbol or class label ('' unknown: grey).

    Returns
    -------
    str
        Hex colour.
    """
    import zlib

    label = "" if label is None else str(label).strip()
    if label in SPECIES_COLOURS:
        return SPECIES_COLOURS[label]
    return SPECIES_FALLBACK[zlib.crc32(label.encode()) % len(SPECIES_FALLBACK)]


def _scene(table, summary: Optional[dict]) -> tuple:
    """Figure (a)'s scene: the atoms and the non-atoms on the support's side, their centres
    and drawn radii."""
    atoms, rest = _particle_and_rest(table)
    support = rest[_support_side(atoms, rest, summary)]
    xyz = np.concatenate([atoms[["x", "y", "z"]].to_numpy(float), support[["x", "y", "z"]].to_numpy(float)])
    radii = np.r_[np.full(len(atoms), ATOM_RADIUS), np.full(len(support), SUPPORT_RADIUS)]
    return atoms, rest, support, xyz, radii


def particle_on_support(table, summary: Optional[dict] = None, view: tuple = DEFAULT_VIEW, size: int = 900):
    """(a) The particle on its support: atoms on f.c.c. sites blue, off them black, and, when
    the analysis knows the support's direction, the non-atoms on that side small and grey;
    shaded spheres.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    summary : dict, optional
        The analysis summary (its support normal draws the support).
    view : (elevation, azimuth)
        Degrees.
    size : int
        Rendering edge, pixels.

    Returns
    -------
    matplotlib Figure
    """
    from .render import render_spheres

    atoms, rest, support, xyz, radii = _scene(table, summary)
    on_site = (atoms["fcc"] == 1).to_numpy() if "fcc" in atoms else np.ones(len(atoms), bool)
    colours = [FCC_COLOURS[1] if s else FCC_COLOURS[0] for s in on_site] + [SUPPORT_COLOUR] * len(support)
    img, scale = render_spheres(xyz, radii, colours, _basis(view), (size, size))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.8), layout="constrained")
    where = (f"{len(support)} support and other non-atom peaks below it" if len(support) else
             "no support direction given" if len(rest) else "no non-atoms")
    _sphere_panel(ax, img, scale, f"(a) {len(atoms)} atoms; {where}")
    _legend(ax, [(f"on an f.c.c. site ({int(on_site.sum())})", FCC_COLOURS[1]),
                 (f"not assigned ({int((~on_site).sum())})", FCC_COLOURS[0])]
            + ([(f"support ({len(support)})", SUPPORT_COLOUR)] if len(support) else []))
    return fig


def particle_species(table, summary: Optional[dict] = None, view: tuple = DEFAULT_VIEW, size: int = 900):
    """(a, species) Figure (a)'s particle in the same view and style, its atoms coloured by
    species (:func:`species_colour`) with a legend of counts and shares; None when the atoms
    hold fewer than two species.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns, ``species``).
    summary : dict, optional
        The analysis summary (its support normal draws the support).
    view : (elevation, azimuth)
        Degrees.
    size : int
        Rendering edge, pixels.

    Returns
    -------
    matplotlib Figure or None
    """
    from .alloy import alloy_species, species_labels
    from .render import render_spheres

    atoms, rest, support, xyz, radii = _scene(table, summary)
    species = alloy_species(atoms)
    if len(species) < 2:
        return None
    labels = species_labels(atoms)
    colours = [species_colour(v) for v in labels] + [SUPPORT_COLOUR] * len(support)
    img, scale = render_spheres(xyz, radii, colours, _basis(view), (size, size))
    fig, ax = _plt().subplots(figsize=(3.6, 3.8), layout="constrained")
    known = int((labels != "").sum())
    counts = {s: int((labels == s).sum()) for s in species}
    _sphere_panel(ax, img, scale, "(a) species: " + ", ".join(f"{s} {100 * c / known:.1f}%" for s, c in counts.items()))
    _legend(ax, [(f"{s} ({c})", species_colour(s)) for s, c in counts.items()]
            + ([(f"unknown ({len(labels) - known})", species_colour(""))] if known < len(labels) else [])
            + ([(f"support ({len(support)})", SUPPORT_COLOUR)] if len(support) else []))
    return fig


def facets(table, view: tuple = DEFAULT_VIEW, size: int = 700):
    """(b-d) Surface atoms by facet family; the {100} facets alone; the {111} facets alone.
    The spheres are ray-cast once and shaded three times.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    view : (elevation, azimuth)
        Degrees.
    size : int
        Rendering edge, pixels.

    Returns
    -------
    matplotlib Figure
    """
    from .render import render_sphere_colourings

    atoms, _ = _particle_and_rest(table)
    fam = _families(atoms)
    surface = (atoms["surface"] == 1).to_numpy() if "surface" in atoms else np.ones(len(atoms), bool)
    fam = np.where(surface, fam, "")
    all_colours = [FACET_COLOURS.get(f, FACET_COLOURS["other"]) if f else FACET_COLOURS[""] for f in fam]
    only = {k: [FACET_COLOURS[k] if f == k else FADED_COLOUR for f in fam] for k in ("100", "111")}
    images, scale = render_sphere_colourings(atoms[["x", "y", "z"]].to_numpy(float), ATOM_RADIUS,
                                             [all_colours, only["100"], only["111"]], _basis(view), (size, size))
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.4), layout="constrained")
    counts = {k: int((fam == k).sum()) for k in ("100", "111", "110")}
    _sphere_panel(axes[0], images[0], scale, "(b) surface atoms by facet")
    _legend(axes[0], [(f"{{{k}}} ({counts[k]})", FACET_COLOURS[k]) for k in ("100", "111", "110") if counts[k]]
            + [(f"other surface ({int(((fam != '') & ~np.isin(fam, ['100', '111', '110'])).sum())})",
                FACET_COLOURS["other"]), ("edges, corners, interior", FACET_COLOURS[""])])
    _sphere_panel(axes[1], images[1], scale, f"(c) {{100}} facets: {counts['100']} atoms")
    _sphere_panel(axes[2], images[2], scale, f"(d) {{111}} facets: {counts['111']} atoms")
    return fig


def _layer_frame(atoms, lattice: dict, layer_axis: str):
    """Camera basis looking down the layer normal (a crystal axis) and the layer labels."""
    from .render import camera_basis

    rot = np.asarray(lattice["crystal_rotation"], float)  # columns: crystal axes in the sample frame
    k = LAYER_AXES.index(layer_axis) if layer_axis in LAYER_AXES else 2
    up = rot[:, (k + 2) % 3]
    return camera_basis(rot[:, k], up=up), k


def default_layer(table) -> Optional[int]:
    """The layer with the most atoms (the particle's middle), or None without layers."""
    atoms, _ = _particle_and_rest(table)
    if "layer" not in atoms or not atoms["layer"].notna().any():
        return None
    return int(atoms["layer"].dropna().astype(int).value_counts().idxmax())


def fcc_layers(table, lattice: dict, layer_axis: str = "001", size: int = 360):
    """(e) Every one-unit-cell layer seen down its normal, atoms on f.c.c. sites blue and off
    them black, all panels at one scale.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    lattice : dict
    layer_axis : {"100", "010", "001"}
    size : int
        Panel edge, pixels.

    Returns
    -------
    matplotlib Figure or None
    """
    from .render import render_spheres, sphere_extent

    atoms, _ = _particle_and_rest(table)
    atoms = atoms[atoms["layer"].notna()] if "layer" in atoms else atoms.iloc[:0]
    if not len(atoms):
        return None
    basis, _ = _layer_frame(atoms, lattice, layer_axis)
    xyz = atoms[["x", "y", "z"]].to_numpy(float)
    extent = sphere_extent(xyz, ATOM_RADIUS, basis)
    layer = atoms["layer"].astype(int).to_numpy()
    on_site = (atoms["fcc"] == 1).to_numpy() if "fcc" in atoms else np.ones(len(atoms), bool)
    layers = sorted(set(layer.tolist()))
    ncol = min(5, len(layers))
    nrow = int(np.ceil(len(layers) / ncol))
    plt = _plt()
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.9 * ncol, 2.0 * nrow + 0.3), squeeze=False, layout="constrained")
    for j, L in enumerate(layers):
        sel = layer == L
        colours = [FCC_COLOURS[1] if s else FCC_COLOURS[0] for s in on_site[sel]]
        img, scale = render_spheres(xyz[sel], ATOM_RADIUS, colours, basis, (size, size), extent=extent, depth_cue=0)
        _sphere_panel(axes[j // ncol, j % ncol], img, scale, f"layer {L}: {int(sel.sum())} ({int((~on_site[sel]).sum())} off)")
    for j in range(len(layers), nrow * ncol):
        axes[j // ncol, j % ncol].axis("off")
    fig.suptitle(f"(e) one-unit-cell layers along [{layer_axis}] ({lattice['lattice_constant']:.3f} Å): "
                 "on f.c.c. sites blue, not assigned black", fontsize=8)
    return fig


def _component_panels(table, lattice: dict, layer_axis: str, layer: Optional[int], components, unit_scale: float,
                      unit: str, label: str, prefix: str, size: int = 440):
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .render import render_sphere_colourings, sphere_extent

    atoms, _ = _particle_and_rest(table)
    if "layer" not in atoms or not set(components) <= set(atoms.columns):
        return None
    layer = default_layer(table) if layer is None else int(layer)
    if layer is None:
        return None
    in_layer = atoms[(atoms["layer"] == layer).to_numpy()]
    if not len(in_layer):
        return None
    basis, _ = _layer_frame(atoms, lattice, layer_axis)
    xyz = in_layer[["x", "y", "z"]].to_numpy(float)
    everything = np.concatenate([atoms[c].to_numpy(float) for c in components]) * unit_scale
    lim = float(np.nanpercentile(np.abs(everything), 99)) if np.isfinite(everything).any() else 1.0
    lim = lim or 1.0
    norm, cmap = Normalize(-lim, lim), colormaps["RdBu_r"]
    colourings = []
    for c in components:
        v = in_layer[c].to_numpy(float) * unit_scale
        rgb = cmap(norm(np.nan_to_num(v)))[:, :3]
        rgb[~np.isfinite(v)] = (0.85, 0.85, 0.85)
        colourings.append(rgb)
    images, scale = render_sphere_colourings(xyz, ATOM_RADIUS, colourings, basis, (size, size),
                                             extent=sphere_extent(xyz, ATOM_RADIUS, basis), depth_cue=0)
    plt = _plt()
    ncol = 3
    nrow = int(np.ceil(len(components) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.6, 2.5 * nrow + 0.3), squeeze=False, layout="constrained")
    for j, (c, img) in enumerate(zip(components, images)):
        _sphere_panel(axes[j // ncol, j % ncol], img, scale, c)
    fig.colorbar(ScalarMappable(norm, cmap), ax=axes.ravel().tolist(), shrink=0.8, label=f"{label} ({unit})")
    fig.suptitle(f"{prefix} layer {layer} along [{layer_axis}], {len(in_layer)} atoms, seen down [{layer_axis}] "
                 f"(crystal frame components)", fontsize=8)
    return fig


def layer_displacements(table, lattice: dict, layer_axis: str = "001", layer: Optional[int] = None):
    """(f) Displacements from the ideal sites along the crystal axes (pm) for one layer
    (default: the layer with most atoms), one panel per component.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    lattice : dict
    layer_axis : {"100", "010", "001"}
    layer : int, optional

    Returns
    -------
    matplotlib Figure or None
    """
    return _component_panels(table, lattice, layer_axis, layer, ("ux", "uy", "uz"), 100.0, "pm", "displacement", "(f)")


def layer_strain(table, lattice: dict, layer_axis: str = "001", layer: Optional[int] = None):
    """(g) The six strain components (%) for one layer (default: the layer with most atoms).

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    lattice : dict
    layer_axis : {"100", "010", "001"}
    layer : int, optional

    Returns
    -------
    matplotlib Figure or None
    """
    return _component_panels(table, lattice, layer_axis, layer, ("exx", "eyy", "ezz", "exy", "exz", "eyz"), 100.0,
                             "%", "strain", "(g)")


def _volume_panels(volumes: dict) -> tuple:
    """A figure with one panel per volume, side by side: (figure, [(axes, (label, volume))])."""
    fig, axes = _plt().subplots(1, len(volumes), figsize=(3.3 * len(volumes), 3.5), squeeze=False,
                                layout="constrained")
    return fig, list(zip(axes[0], volumes.items()))


def tilt_axis_basis() -> np.ndarray:
    """Camera looking along the tilt axis (y): x to the right, z (the beam at zero tilt) up.
    The missing wedge elongates a tomogram along z, so this view shows it in the picture's
    plane; in Fourier space it shows the wedge as two empty sectors about k_z.

    Returns
    -------
    (3, 3) array
        :func:`~napari_aet.core.render.camera_basis` rows.
    """
    from .render import camera_basis

    return camera_basis((0.0, -1.0, 0.0), up=(0.0, 0.0, 1.0))


def _view_basis(view) -> np.ndarray:
    return tilt_axis_basis() if view is None else _basis(view)


def _panel_letter(ax, letter: str) -> None:
    ax.text(-0.03, 1.0, letter, transform=ax.transAxes, fontsize=12, fontweight="bold", ha="right", va="bottom")


def _axis_arrows(ax, img_shape, labels=("x", "z (beam)"), colour: str = "white") -> None:
    """Two short arrows in the lower right corner naming the screen's right and up directions."""
    h, w = img_shape[:2]
    n = 0.12 * min(h, w)
    x0, y0 = w - 0.06 * w - n, 0.94 * h
    kw = dict(arrowstyle="-|>", color=colour, lw=1.0, mutation_scale=7)
    ax.annotate("", (x0 + n, y0), (x0, y0), arrowprops=kw)
    ax.annotate("", (x0, y0 - n), (x0, y0), arrowprops=kw)
    ax.text(x0 + n, y0 - 0.02 * h, labels[0], color=colour, fontsize=6, ha="right", va="bottom")
    ax.text(x0 + 0.02 * w, y0 - n, labels[1], color=colour, fontsize=6, ha="left", va="center")


def _common_box(volumes: dict, limits: dict, threshold: float = 0.3, pad: int = 2) -> tuple:
    """One crop of every volume holding each one's content (above ``threshold`` of its colour range)."""
    shape = next(iter(volumes.values())).shape
    if any(v.shape != shape for v in volumes.values()):
        return (slice(None),) * 3
    content = np.zeros(shape, bool)
    for name, vol in volumes.items():
        lo, hi = limits[name]
        content |= np.asarray(vol) > lo + threshold * (hi - lo)
    if not content.any():
        return (slice(None),) * 3
    idx = np.nonzero(content)
    return tuple(slice(max(int(i.min()) - pad, 0), int(i.max()) + pad + 1) for i in idx)


def density_images(volumes: dict, pixel_size: float = 1.0, view: Optional[tuple] = None, size: int = 320,
                   slab: Optional[float] = 4.0) -> tuple:
    """The renderings :func:`density_maps` shows: each volume cropped to the content they
    share, seen along the tilt axis (``view`` None: a central slab, ``slab`` Å thick along
    it, so that atoms stand apart) or from ``(elevation, azimuth)`` (all of it), and trimmed
    to one common box.

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    pixel_size : float
        Å.
    view : (elevation, azimuth), optional
        Degrees; default: along the tilt axis.
    size : int
        Rendering edge before trimming, pixels.
    slab : float, optional
        Å along the tilt axis, about the content's middle (None: the whole depth).

    Returns
    -------
    images : dict
        Label -> (height, width, 3) uint8 image.
    voxels_per_pixel : float
    limits : dict
        Label -> (low, high) voxel values at the colour map's ends.
    """
    from .render import render_volume, trim_background

    limits = {name: (float(np.percentile(vol, 80)), float(np.percentile(vol, 99.9))) for name, vol in volumes.items()}
    box = _common_box(volumes, limits)
    if view is None and slab:
        y = box[1].indices(next(iter(volumes.values())).shape[1])
        mid, half = (y[0] + y[1] - 1) // 2, max(int(round(slab / pixel_size / 2)), 1)
        box = (box[0], slice(max(mid - half, y[0]), min(mid + half + 1, y[1])), box[2])
    rendered = {}
    for name, vol in volumes.items():
        rendered[name], step = render_volume(np.asarray(vol)[box], _view_basis(view), size=size, opacity=80,
                                             gamma=1.5, limits=limits[name], fit="view")
    trimmed, _ = trim_background(list(rendered.values()), "black")
    return dict(zip(rendered, trimmed)), step, limits


def density_maps(volumes: dict, pixel_size: float, view: Optional[tuple] = None, size: int = 320,
                 slab: Optional[float] = 4.0):
    """Tomograms (e.g. before and after the network) as 3D density maps, one panel each
    (the reference's Fig. 2a-b), seen along the tilt axis so that the missing wedge's
    elongation along the beam shows, with a colour bar each.

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    pixel_size : float
        Å.
    view : (elevation, azimuth), optional
        Degrees; default: along the tilt axis (y), the beam (z) up.
    size : int
        Pixels.
    slab : float, optional
        Along the tilt axis, only a central slab this thick (Å), so that atoms stand apart
        (None: the whole depth). Each title gives :func:`~napari_aet.core.metrics.atom_elongation`.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .metrics import atom_elongation

    images, step, limits = density_images(volumes, pixel_size, view, size, slab)
    fig, panels = _volume_panels(volumes)
    for k, (ax, (name, vol)) in enumerate(panels):
        img = images[name]
        stretch = atom_elongation(vol)
        _sphere_panel(ax, img, step * pixel_size, name + (f" (atoms' width z/x {stretch:.2f})"
                                                          if np.isfinite(stretch) else ""), dark=True)
        _panel_letter(ax, "abcdefgh"[k % 8])
        if view is None:
            _axis_arrows(ax, img.shape)
        bar = fig.colorbar(ScalarMappable(Normalize(*limits[name]), colormaps["magma"]), ax=ax, shrink=0.7)
        bar.set_label("voxel intensity (Pt-atom units)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    where = (f"a central {slab:g} Å slab seen along the tilt axis (y), the beam (z) up: where a missing wedge "
             "stretches atoms (along z; widths z/x in the titles)" if view is None and slab else
             "seen along the tilt axis (y), the beam (z) up" if view is None else
             f"seen from elevation {view[0]:g}°, azimuth {view[1]:g}°")
    fig.suptitle(f"3D density, {where}", fontsize=8)
    return fig


def fourier_images(volumes: dict, size: int = 320, slab: Optional[int] = 6) -> tuple:
    """The renderings :func:`fourier_density_maps` shows: each tomogram's log Fourier
    intensity as a density map seen along k_y (the tilt axis), k_x to the right, k_z up.

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    size : int
        Pixels.
    slab : int, optional
        Only the frequencies within this many voxels of k_y = 0 (a slab about the central
        k_x-k_z plane, where the reciprocal lattice's spots stand apart); None: all.

    Returns
    -------
    images : dict
        Label -> (size, size, 3) uint8 image.
    extents : dict
        Label -> (kx_min, kx_max, kz_min, kz_max) in cycles per voxel.
    limits : dict
        Label -> (low, high) of the log intensity at the colour map's ends.
    """
    from .fourier import fourier_intensity as log_intensity
    from .render import render_volume

    images, extents, limits = {}, {}, {}
    for name, vol in volumes.items():
        f = log_intensity(vol)
        limits[name] = (float(np.percentile(f, 70)), float(np.percentile(f, 99.95)))
        mid = f.shape[1] // 2
        part = f if slab is None else f[:, max(mid - int(slab), 0):mid + int(slab) + 1]
        images[name], step = render_volume(part, tilt_axis_basis(), size=size, opacity=12 if slab is None else 40,
                                           gamma=2, limits=limits[name], fit="view")
        nz, _, nx = f.shape
        half = size * step / 2  # voxels from the centre to an edge
        extents[name] = (-half / nx, half / nx, -half / nz, half / nz)
    return images, extents, limits


def _wedge_lines(ax, tilt_range: float, kmax: float) -> None:
    """Dashed lines at ±tilt_range from k_x: the edges of the missing wedge (about k_z)."""
    t = np.deg2rad(tilt_range)
    reach = 1.5 * kmax  # past the corners: the axes clip the lines
    for sgn in (1, -1):
        ax.plot([-reach * np.cos(t), reach * np.cos(t)], [-sgn * reach * np.sin(t), sgn * reach * np.sin(t)],
                color="cyan", ls="--", lw=0.9)
    for sgn in (1, -1):
        ax.text(0.0, sgn * 0.8 * kmax, "missing wedge", color="cyan", fontsize=6, ha="center", va="center",
                clip_on=True)


def fourier_density_maps(volumes: dict, tilt_range: Optional[float], pixel_size: float = 1.0, size: int = 320,
                         slab: Optional[int] = 6):
    """3D Fourier intensity (log) of each tomogram as a density map seen along k_y, the tilt
    axis (the reference's Fig. 2c-d): k axes in 1/Å, a colour bar, and the missing wedge of a
    single-axis series over ±``tilt_range``° between dashed lines (None: not drawn).

    Parameters
    ----------
    volumes : dict
        Label -> tomogram ``[z, y, x]``.
    tilt_range : float or None
        Degrees.
    pixel_size : float
        Å (the k axes' unit).
    size : int
        Pixels.
    slab : int, optional
        As :func:`fourier_images`.

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    images, extents, limits = fourier_images(volumes, size, slab)
    fig, axes = _plt().subplots(1, len(volumes), figsize=(3.5 * len(volumes), 3.3), squeeze=False,
                                layout="constrained")
    for k, (ax, name) in enumerate(zip(axes[0], volumes)):
        ext = np.array(extents[name]) / pixel_size  # 1/Å
        ax.imshow(images[name], extent=tuple(ext), interpolation="antialiased")
        ax.set_xlabel("$k_x$ (1/Å)", fontsize=7)
        ax.set_ylabel("$k_z$ (1/Å)", fontsize=7)
        ax.tick_params(labelsize=6)
        if tilt_range:
            _wedge_lines(ax, tilt_range, float(np.abs(ext).max()))
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_title(name, fontsize=8)
        _panel_letter(ax, "cdefgh"[k % 6])
        bar = fig.colorbar(ScalarMappable(Normalize(*limits[name]), colormaps["magma"]), ax=ax, shrink=0.7)
        bar.set_label("log$_{10}$(1 + |F|² / median)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    ny = next(iter(volumes.values())).shape[1]
    part = f"a slab |$k_y$| ≤ {slab / (ny * pixel_size):.2f} 1/Å" if slab is not None else "all of it"
    fig.suptitle(f"3D Fourier intensity, {part}, seen along $k_y$ (the tilt axis)" +
                 (f"; missing wedge beyond ±{tilt_range:.0f}° between the dashed lines" if tilt_range else ""),
                 fontsize=8)
    return fig


REFERENCE_FIGURES = {
    "a_particle_on_support": "particle on its support, f.c.c. assignment",
    "bcd_facets": "all facets, {100} facets, {111} facets",
    "e_fcc_layers": "one-unit-cell layers, atoms assigned and not assigned",
    "f_layer_displacements": "displacements along the crystal axes for one layer",
    "g_layer_strain": "six strain components for the same layer",
    "tomograms_3d": "tomograms before and after the network as 3D density maps",
    "fourier_3d": "3D Fourier intensity with the missing wedge",
}
# written beside the reference figures when the atoms hold two or more species
ALLOY_FIGURES = {"a_species": "the particle of (a) in the same view, atoms coloured by species"}


def reference_jobs(table, summary: dict, volumes: Optional[dict] = None, pixel_size: float = 1.0,
                   tilt_range: Optional[float] = None, layer: Optional[int] = None, names=None) -> list:
    """The reference work's figures as :func:`render` jobs ``(name, builder, args)``.

    ``summary`` is the analysis summary (``lattice``, ``settings.layer_axis``); ``volumes``
    maps a label to a tomogram ``[z, y, x]`` (the density and Fourier figures need it);
    ``names`` picks some of :data:`REFERENCE_FIGURES` and :data:`ALLOY_FIGURES` (default: all
    that the inputs allow; ``a_species`` only for two or more species).

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns).
    summary : dict
    volumes : dict, optional
    pixel_size : float
        Å.
    tilt_range : float, optional
        Degrees.
    layer : int, optional
    names : sequence of str, optional

    Returns
    -------
    list of (name, builder, args)
    """
    from .analysis import AnalysisSummary

    found = AnalysisSummary.of(summary)
    lattice, axis = found.lattice, found.layer_axis
    jobs = [("a_particle_on_support", particle_on_support, (table, summary)), ("bcd_facets", facets, (table,))]
    from .alloy import alloy_species

    if len(alloy_species(table)) >= 2:
        jobs.append(("a_species", particle_species, (table, summary)))
    if lattice is not None:
        jobs += [("e_fcc_layers", fcc_layers, (table, lattice, axis)),
                 ("f_layer_displacements", layer_displacements, (table, lattice, axis, layer)),
                 ("g_layer_strain", layer_strain, (table, lattice, axis, layer))]
    if volumes:
        jobs += [("tomograms_3d", density_maps, (volumes, pixel_size)),
                 ("fourier_3d", fourier_density_maps, (volumes, tilt_range, pixel_size))]
    return [j for j in jobs if names is None or j[0] in names]


LAYER_MAP_COMPONENTS = ("ux", "uy", "uz", "exx", "eyy", "ezz", "exy", "exz", "eyz")


def write_figures(out_dir: Path, table, summary: Optional[dict], volumes: Optional[dict] = None,
                  pixel_size: float = 1.0, tilt_range: Optional[float] = None, layer: Optional[int] = None,
                  names=None, with_layer_maps: bool = False, workers: int = 2, progress=None, cancel=None,
                  overwrite: bool = True) -> list:
    """Every figure of a run, as ``run``, ``napari-aet figures`` and the workbench make them.

    Parameters
    ----------
    out_dir : folder for ``NAME.png`` (300 dpi) and ``NAME.svg``; created if missing.
    table : analysed atoms table (contract columns).
    summary : the analysis summary (``lattice``, ``settings.layer_axis``), or None.
    volumes : label -> tomogram ``[z, y, x]``, e.g. ``{"RESIRE": ..., "U-Net": ...}``.
    pixel_size : voxel size of the volumes, Å.
    tilt_range : largest tilt, degrees (marks the missing wedge); None: not marked.
    layer : layer index for the (f) and (g) figures (default: the layer with most atoms).
    names : only these figures (:data:`REFERENCE_FIGURES` and :data:`ALLOY_FIGURES` keys, ``tomogram_slices``,
        ``fourier_intensity``, ``layers_<component>``); default: all but the layer maps.
    with_layer_maps : also every layer's map of each displacement and strain component
        (``layers_ux`` ... ``layers_eyz``; nine more figures).
    workers : 2 renders half the figures in a forked process; 1 renders them here (threads,
        e.g. the workbench's workers, must not fork).
    progress : ``progress(done, total, name)`` after each figure (serial rendering).
    cancel : a ``threading.Event``; set, the rendering stops before the next figure.
    overwrite : replace figures already in ``out_dir`` (default); False refuses them.

    Returns
    -------
    list of str : the paths written.
    """
    if layer is not None and ("layer" not in table or not (table["layer"] == layer).any()):
        known = sorted(int(v) for v in table["layer"].dropna().unique()) if "layer" in table else []
        raise AETInputError(f"no atoms in layer {layer}; the layers are {known[:1] + known[-1:]} (first, last)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    jobs = []
    if volumes:
        jobs += [("tomogram_slices", orthoslices, (volumes, pixel_size))]
        if tilt_range:
            jobs += [("fourier_intensity", fourier_intensity, (volumes, tilt_range, pixel_size))]
    jobs += reference_jobs(table, summary or {}, volumes, pixel_size, tilt_range, layer)
    from .analysis import AnalysisSummary

    found = AnalysisSummary.of(summary)
    lattice = found.lattice
    if lattice is not None and (with_layer_maps or names):
        axis = found.layer_axis
        jobs += [(f"layers_{c}", layer_maps, (table, c, lattice, axis)) for c in LAYER_MAP_COMPONENTS
                 if c in table]
    if names is not None:
        unknown = set(names) - {j[0] for j in jobs}
        if unknown:
            raise AETInputError(f"cannot make figure(s) {sorted(unknown)} from these inputs; known: "
                                f"{sorted(j[0] for j in jobs)} (the Fourier and density figures need tomograms, "
                                "the layer figures an analysed table, a_species two or more species)")
        jobs = [j for j in jobs if j[0] in names]
    # the heaviest first, alternating between the two processes of render()
    weight = {"bcd_facets": 3, "e_fcc_layers": 3, "g_layer_strain": 3, "a_particle_on_support": 2.5, "a_species": 2.5,
              "tomograms_3d": 2.5, "fourier_3d": 2.5, "f_layer_displacements": 1.5}
    jobs.sort(key=lambda j: -weight.get(j[0], 1))
    existing = [f"{j[0]}.{fmt}" for j in jobs for fmt in FORMATS if (Path(out_dir) / f"{j[0]}.{fmt}").exists()]
    if existing and not overwrite:
        raise AETInputError(f"{out_dir} already holds {', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}; "
                            "choose another folder or pass --overwrite")
    from .locks import output_lock

    with output_lock(out_dir, "figures folder"):  # one writer a folder
        return render(jobs, Path(out_dir), workers=workers, progress=progress, cancel=cancel)


def render(jobs, out_dir: Path, workers: int = 2, progress=None, cancel=None) -> list:
    """Build and save figures: ``jobs`` is a list of ``(name, builder, args)``; a builder
    returning None is skipped. With ``workers`` 2 on a POSIX machine with 2+ cores, half the
    jobs are rendered by a forked child while this process renders the rest (matplotlib is
    single-threaded; the figure stage is most of a short run). If the child fails, its
    jobs are rendered here. Returns the paths written.

    Parameters
    ----------
    jobs : list of (name, builder, args)
    out_dir : Path
    workers : {1, 2}
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``
        (serial rendering).

    Returns
    -------
    list of str
    """
    import multiprocessing as mp
    import os

    def run(part):
        from .errors import Cancelled

        paths = []
        for k, (name, builder, args) in enumerate(part):
            if cancel is not None and cancel.is_set():
                raise Cancelled("figures cancelled")
            if progress is not None:
                progress(k, len(part), f"rendering {name}")
            fig = builder(*args)
            if fig is not None:
                paths += save(fig, out_dir, name)
        if progress is not None:
            progress(len(part), len(part), f"{len(paths)} files written")
        return paths

    from .threads import current_plan

    cpus = current_plan().threads if current_plan() is not None else (os.cpu_count() or 1)  # other work's CPUs left alone
    forkable = (workers > 1 and progress is None and cancel is None and cpus > 1 and "fork" in mp.get_all_start_methods() and len(jobs) > 1
                and not mp.current_process().daemon)  # daemonic processes (e.g. batch workers) may not fork
    if not forkable:
        return run(jobs)
    mine, theirs = jobs[0::2], jobs[1::2]
    child = mp.get_context("fork").Process(target=lambda: os._exit(0 if run(theirs) is not None else 1), daemon=True)
    try:
        child.start()
    except (OSError, AssertionError):
        return run(jobs)
    paths = run(mine)
    child.join()
    if child.exitcode != 0:
        return paths + run(theirs)
    expected = [Path(out_dir) / f"{name}.{fmt}" for name, _, _ in theirs for fmt in FORMATS]
    return paths + [str(q) for q in expected if q.exists()]


"""Publication figures with matplotlib (Agg, no display): PNG at 300 dpi and SVG, with units,
scale bars and colour bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FCC_COLOURS = {1: "#1f4fd1", 0: "#000000"}  # the reference's blue (on an f.c.c. site) / black (not)
FACET_COLOURS = {"100": "#d62728", "111": "#1f77b4", "110": "#2ca02c", "other": "#ff7f0e", "": "#bbbbbb"}  # edges, corners, interior: grey

__all__ = ["orthoslices", "fourier_intensity", "atoms_by_assignment", "atoms_by_facet", "isosurfaces", "layer_maps", "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


FORMATS = ("png", "svg")


def save(fig, out_dir: Path, name: str, formats=FORMATS) -> list:
    """Write ``name``.png (300 dpi) and ``name``.svg (or .pdf) atomically; return the paths."""
    from .io import atomic_path

    out = []
    # lay the figure out and find its tight box once, not once per format
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    fig.set_layout_engine("none")
    for fmt in formats:
        ext, kw = f".{fmt}", ({"dpi": 300} if fmt == "png" else {})
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
    """Central xy, xz and yz slices of each volume (rows), with a 1 nm scale bar."""
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
    """log |F|² on the kx-kz plane (ky = 0) of each volume, the missing wedge outlined."""
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


def atoms_by_assignment(table, pixel_size: float = 0.357):
    """Atoms projected on xy and xz, blue on f.c.c. sites, black off them (as in the reference)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), layout="constrained")
    atoms = table[table["atom"] == 1] if "atom" in table else table
    colour = np.where(atoms.get("fcc", 1) == 1, FCC_COLOURS[1], FCC_COLOURS[0])
    for ax, (a, b) in zip(axes, (("x", "y"), ("x", "z"))):
        ax.scatter(atoms[a], atoms[b], s=6, c=colour, linewidths=0)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{a} (Å)")
        ax.set_ylabel(f"{b} (Å)")
    n_fcc = int((atoms.get("fcc", 1) == 1).sum())
    fig.suptitle(f"{len(atoms)} atoms: {n_fcc} on fcc sites (blue), {len(atoms) - n_fcc} not (black)", fontsize=9)
    return fig


def layer_maps(table, component: str, lattice: dict, layer_axis: str = "001"):
    """One panel per layer: atoms coloured by a strain or displacement component (diverging,
    symmetric), drawn in the layer's plane in crystal coordinates (the reference's Fig. 3e-g)."""
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




def atoms_by_facet(table):
    """Atoms in 3D (sample frame, Å): surface atoms coloured by facet family, interior grey."""
    plt = _plt()
    fig = plt.figure(figsize=(5, 4.6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    atoms = table[table["atom"] == 1] if "atom" in table else table
    fam = atoms.get("facet", "").astype(str)
    for name, colour in FACET_COLOURS.items():
        sel = (fam == name).to_numpy() & ((atoms.get("surface", 1) == 1).to_numpy() if name else True)
        if sel.any():
            label = (f"{{{name}}} ({int(sel.sum())})" if name not in ("", "other") else
                     f"no low-index facet ({int(sel.sum())})" if name else f"edges, corners, interior ({int(sel.sum())})")
            ax.scatter(atoms["x"][sel], atoms["y"][sel], atoms["z"][sel], s=8, c=colour, depthshade=True, label=label)
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    ax.set_box_aspect((1, 1, 1))
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("surface atoms by facet family", fontsize=9)
    return fig


def isosurfaces(volumes: dict, pixel_size: float, level_fraction: float = 0.3):
    """3D renderings: an isosurface of each tomogram (marching cubes), axes in Å."""
    from skimage.measure import marching_cubes

    plt = _plt()
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    fig = plt.figure(figsize=(4.2 * len(volumes), 4.2), layout="constrained")
    for k, (name, vol) in enumerate(volumes.items()):
        ax = fig.add_subplot(1, len(volumes), k + 1, projection="3d")
        level = level_fraction * float(np.percentile(vol, 99.9))
        # step 2: the surface of a 144³ volume at full step is ~10^6 triangles, which took 13 s to
        # draw and 31 MB of SVG; at step 2 a quarter of that, and the mesh goes into the SVG as a
        # raster (axes and labels stay vector)
        verts, faces, _, _ = marching_cubes(np.asarray(vol, np.float32), level, step_size=2)
        n = np.array(vol.shape)
        xyz = (verts[:, ::-1] - (n[::-1] // 2)) * pixel_size  # (z, y, x) index -> (x, y, z) Å
        mesh = Poly3DCollection(xyz[faces], alpha=0.9, facecolor="#c8a000", edgecolor="none", rasterized=True)
        ax.add_collection3d(mesh)
        lim = np.abs(xyz).max() if len(xyz) else 1
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-lim, lim)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        ax.set_zlabel("z (Å) (beam)")
        ax.set_box_aspect((1, 1, 1))
        ax.set_title(f"{name}: isosurface at {level_fraction:.0%} of the 99.9th percentile", fontsize=8)
    return fig


def render(jobs, out_dir: Path, workers: int = 2) -> list:
    """Build and save figures: ``jobs`` is a list of ``(name, builder, args)``; a builder
    returning None is skipped. With ``workers`` 2 on a POSIX machine with 2+ cores, half the
    jobs are rendered by a forked child while this process renders the rest (matplotlib is
    single-threaded; the figure stage is most of a short run). If the child fails, its
    jobs are rendered here. Returns the paths written."""
    import multiprocessing as mp
    import os

    def run(part):
        paths = []
        for name, builder, args in part:
            fig = builder(*args)
            if fig is not None:
                paths += save(fig, out_dir, name)
        return paths

    forkable = (workers > 1 and (os.cpu_count() or 1) > 1 and "fork" in mp.get_all_start_methods() and len(jobs) > 1
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


"""Per-layer strain/displacement maps for the workbench's *Save layer maps*: one panel per
one-unit-cell layer, all panels the same size and scale (one shared frame), atoms drawn at
their spacing, a scale bar in Å and a colour bar naming the component and its unit. Plain
matplotlib figures (Agg), safe off the GUI thread.
"""

from __future__ import annotations

import numpy as np

PANEL_INCHES = 2.2
COMPONENT_LABELS = {"exx": "ε_xx", "eyy": "ε_yy", "ezz": "ε_zz", "exy": "ε_xy", "exz": "ε_xz", "eyz": "ε_yz",
                    "ux": "u_x", "uy": "u_y", "uz": "u_z"}


def component_label(name: str) -> str:
    """A component's name with its unit for colour bars and layer names: 'ε_xx (%)', 'u_x (pm)'.

    Parameters
    ----------
    name : str
        ``exx`` ... ``eyz``, ``ux`` ... ``uz``; anything else comes back unchanged.

    Returns
    -------
    str
    """
    if name in COMPONENT_LABELS:
        return f"{COMPONENT_LABELS[name]} ({'%' if name.startswith('e') else 'pm'})"
    return name


def nice_limit(value: float) -> float:
    """``value`` rounded up to 1, 2 or 5 × 10^k, so a symmetric colour bar gets round ticks.

    Parameters
    ----------
    value : float
        Positive; anything else gives 1.

    Returns
    -------
    float
    """
    if not np.isfinite(value) or value <= 0:
        return 1.0
    k = np.floor(np.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * 10.0**k >= value * (1 - 1e-9):
            return float(step * 10.0**k)
    return float(10.0 ** (k + 1))


def nice_length(span: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10^k Å) near a fifth of ``span`` (Å).

    Parameters
    ----------
    span : float
        Å across a panel.

    Returns
    -------
    float
        Å.
    """
    want = max(span / 5.0, 1e-6)
    k = np.floor(np.log10(want))
    steps = np.array([1.0, 2.0, 5.0, 10.0]) * 10.0**k
    return float(steps[steps <= want * 1.5].max())


def _frame(atoms, lattice: dict, layer_axis: str):
    """Crystal-frame coordinates (Å) of the atoms and the indices of the two in-plane axes."""
    rot, origin = np.asarray(lattice["crystal_rotation"], float), np.asarray(lattice["origin"], float)
    crys = (atoms[["x", "y", "z"]].to_numpy(float) - origin) @ rot
    normal = int(np.argmax([int(c) for c in layer_axis])) if layer_axis in ("100", "010", "001") else 2
    return crys, [k for k in range(3) if k != normal]


def layer_maps_figure(table, component: str, lattice: dict, layer_axis: str = "001"):
    """Figure of ``component`` (``exx``...``eyz`` in %, ``ux``...``uz`` in pm) per layer:
    equal panels sharing one frame, markers at 80% of the nearest-neighbour distance, a scale
    bar (Å) in every panel.

    Parameters
    ----------
    table : DataFrame
        Analysed atoms table (contract columns, ``layer`` and the component).
    component : str
    lattice : dict
        The analysis summary's lattice (``crystal_rotation``, ``origin``, ``lattice_constant`` Å).
    layer_axis : {"100", "010", "001"}

    Returns
    -------
    matplotlib Figure or None
        None without layers.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    atoms = table[np.isfinite(table[component].to_numpy(float))]
    layers = sorted(int(v) for v in atoms["layer"].dropna().unique()) if "layer" in atoms else []
    if not layers:
        return None
    crys, (i1, i2) = _frame(atoms, lattice, layer_axis)
    lo, hi = crys[:, [i1, i2]].min(0), crys[:, [i1, i2]].max(0)
    pad = 0.6 * float(lattice["lattice_constant"])
    span = float((hi - lo).max()) + 2 * pad
    centre = (lo + hi) / 2
    ncol = min(5, len(layers))
    nrow = int(np.ceil(len(layers) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(PANEL_INCHES * ncol + 1.0, PANEL_INCHES * nrow + 0.5),
                             squeeze=False, layout="constrained")
    values = atoms[component].to_numpy(float) * 100.0  # strain in %, displacement Å -> pm
    lim = nice_limit(float(np.percentile(np.abs(values), 99)))
    bar = nice_length(span)
    layer_of = atoms["layer"].to_numpy()
    for k, index in enumerate(layers):
        ax = axes[k // ncol, k % ncol]
        sel = layer_of == index
        sc = ax.scatter(crys[sel, i1], crys[sel, i2], c=values[sel], cmap="RdBu_r", vmin=-lim, vmax=lim,
                        s=1.0, linewidths=0)
        ax.set_xlim(centre[0] - span / 2, centre[0] + span / 2)
        ax.set_ylim(centre[1] - span / 2, centre[1] + span / 2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"layer {index} ({sel.sum()} atoms)", fontsize=7)
        ax.add_artist(AnchoredSizeBar(ax.transData, bar, f"{bar:g} Å", "lower left", pad=0.3, frameon=False,
                                      size_vertical=span / 150, fontproperties={"size": 6}))
    for k in range(len(layers), nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.8, label=component_label(component))
    _size_markers(fig, [axes[k // ncol, k % ncol] for k in range(len(layers))],
                  0.8 * float(lattice["lattice_constant"]) / np.sqrt(2), span)
    names = "xyz"
    fig.suptitle(f"{component_label(component)} per one-unit-cell layer along [{layer_axis}] "
                 f"({float(lattice['lattice_constant']):.3f} Å thick); panels span crystal {names[i1]}-{names[i2]}",
                 fontsize=8)
    return fig


def _size_markers(fig, panels, diameter: float, span: float) -> None:
    """Draw each panel's atoms ``diameter`` Å wide, measured on the laid-out panels (``span`` Å across)."""
    fig.canvas.draw()  # the constrained layout sets the panels' final size
    for ax in panels:
        points_per_angstrom = ax.bbox.width * 72.0 / fig.dpi / span
        for collection in ax.collections:
            collection.set_sizes([(diameter * points_per_angstrom) ** 2])

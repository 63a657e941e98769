"""The workbench's per-layer maps: equal panels on one frame, markers at the atom spacing, a
scale bar in Å and a colour bar naming the component and its unit."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def analysed():
    from napari_aet._sample_data import simulate_sample
    from napari_aet.core.analysis import analyze_atoms

    table, summary = analyze_atoms(simulate_sample().truth_table())
    return table, summary["lattice"]


def test_layer_maps_share_one_frame_and_carry_units(analysed):
    from matplotlib.offsetbox import AnchoredOffsetbox

    from napari_aet.core._layer_maps import layer_maps_figure

    table, lattice = analysed
    fig = layer_maps_figure(table, "exx", lattice, "001")
    panels = [ax for ax in fig.axes if ax.get_title().startswith("layer ")]
    assert len(panels) == table["layer"].nunique() > 3
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in panels}
    assert len(limits) == 1  # one frame: every panel the same size and scale
    (xlim, ylim), = limits
    assert xlim[1] - xlim[0] == pytest.approx(ylim[1] - ylim[0])
    bars = [a for ax in panels for a in ax.artists if isinstance(a, AnchoredOffsetbox)]
    assert len(bars) == len(panels)
    assert all(t.get_text().endswith(" Å") for ax in panels for t in ax.findobj(lambda o: hasattr(o, "get_text"))
               if t.get_text().endswith("Å"))
    colourbar = [ax for ax in fig.axes if ax not in panels and ax.get_ylabel()]
    assert colourbar and colourbar[0].get_ylabel() == "ε_xx (%)"
    # markers at 80% of the nearest-neighbour distance: neighbours nearly touch
    panel = panels[len(panels) // 2]
    (points,) = panel.collections
    diameter_pt = np.sqrt(points.get_sizes()[0])
    fig.canvas.draw()
    span_pt = panel.bbox.width * 72.0 / fig.dpi
    nn = lattice["lattice_constant"] / np.sqrt(2)
    assert 0.4 < diameter_pt / (span_pt * nn / (xlim[1] - xlim[0])) < 1.0


def test_round_limits_and_lengths():
    from napari_aet.core._layer_maps import component_label, nice_length, nice_limit

    assert nice_limit(0.37) == 0.5 and nice_limit(0.2) == 0.2 and nice_limit(3.1) == 5.0
    assert nice_length(52.0) == 10.0 and nice_length(30.0) == 5.0
    assert component_label("eyz") == "ε_yz (%)" and component_label("ux") == "u_x (pm)"

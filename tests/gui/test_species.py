"""Species in the workbench (issue 24): a simulated Ni-Pt particle reconstructed and traced
through the docked widgets with the species given, lightest first; the atoms carry their species,
are coloured by it, and the Ni atoms are found where the truth has them (needs xvfb)."""

import numpy as np
import pytest

from .conftest import run_step

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def alloy():
    """A 2.5 nm Pt particle with 30% Ni on random sites (459 atoms, 138 Ni), noise-free, 96³."""
    from napari_aet.core.simulate import reference_config, simulate

    return simulate(reference_config(seed=3, alloy={"Ni": 0.3}, size=2.5, n_voxels=96, dose=None))


def test_a_bad_species_entry_is_one_line_before_any_work(dock, make_napari_viewer, alloy):
    from napari_aet._layers import volume_layer

    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layer(alloy.ideal, name="tomogram")
    viewer.add_image(data, **kwargs)
    w = dock(viewer, "Trace atoms")
    assert w.species.value == ""  # default: one species, as before
    w.species.value = "Pt Ni"
    w.run_button.click()
    assert w.status.text().startswith("error: species") and "give 'Ni Pt'" in w.status.text()
    assert w.worker is None and w.run_button.isEnabled() and "traced atoms" not in viewer.layers


def test_species_reach_the_tracer_and_the_points_layer(dock, make_napari_viewer, qtbot, monkeypatch, alloy):
    """The widget's part alone (the tracer's answer stands in): names and classes go to
    trace_volume, the species and their confidence come back as features, coloured by species."""
    from matplotlib.colors import to_rgba

    from napari_aet._layers import volume_layer
    from napari_aet._qt.base import aet_meta
    from napari_aet.core import pipeline
    from napari_aet.core.figures import species_colour

    calls = []

    def fake_trace_volume(vol, tilts_ts=None, **kwargs):
        calls.append(kwargs)
        table = alloy.truth_table()[["x", "y", "z", "intensity", "atom", "species"]]
        table["species_confidence"] = 0.9
        return table, {"trace": {}}

    monkeypatch.setattr(pipeline, "trace_volume", fake_trace_volume)
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_layer(alloy.ideal, name="tomogram")
    viewer.add_image(data, **kwargs)
    w = dock(viewer, "Trace atoms")
    w.species.value = "Ni Pt"
    w.refine_against.value = "none (trace only)"
    run_step(qtbot, w)
    assert calls[0]["species"] == ("Ni", "Pt") and calls[0]["n_classes"] == 3
    pts = viewer.layers["traced atoms"]
    assert set(pts.features["species"]) == {"Ni", "Pt"} and "species_confidence" in pts.features
    for s in ("Ni", "Pt"):
        rows = pts.face_color[(pts.features["species"] == s).to_numpy()]
        np.testing.assert_allclose(rows, np.tile(to_rgba(species_colour(s)), (len(rows), 1)), atol=2e-3)
    assert aet_meta(pts)["colour_by"] == "species" and "(Ni 138, Pt 321)" in w.status.text()
    w.species.value = ""  # one species: trace_volume called as before, without names or classes
    run_step(qtbot, w)
    assert "species" not in calls[1] and "n_classes" not in calls[1]

"""Alloys in the Analyze widget (issue 24): a Ni-Pt particle's atoms analysed through the docked
widget are offered and coloured by species (one fixed colour per element) and by shell from
the surface inward; the analysis in the layer's metadata holds the alloy block (needs xvfb)."""

import numpy as np
import pytest

from .conftest import run_step

pytestmark = pytest.mark.gui


def test_analyze_colours_an_alloy_by_species_and_shell(dock, make_napari_viewer, qtbot):
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_aet._layers import SHELL_PALETTE, atoms_layer
    from napari_aet.core.figures import species_colour
    from napari_aet.core.simulate import make_particle, particle_table, reference_config

    cfg = reference_config(seed=3, alloy={"Ni": 0.3}, surface_enrichment=-0.5, size=2.5, n_voxels=112)
    particle = make_particle(cfg)
    data, kwargs, _ = atoms_layer(particle_table(particle, cfg), name="NiPt atoms")
    viewer = make_napari_viewer()
    atoms = viewer.add_points(data, **kwargs)
    w = dock(viewer, "Analyze")
    assert w.layer_box.value == atoms.name
    assert "species" in w.colour_by.choices and "shell" not in w.colour_by.choices  # species before analysis
    run_step(qtbot, w)
    assert {"species", "shell"} <= set(w.colour_by.choices)
    alloy = atoms.metadata["napari_aet"]["analysis"]["alloy"]
    assert alloy["species"] == ["Pt", "Ni"] and "Ni" in alloy["text"]

    w.colour_by.value = "species"
    species = atoms.features["species"].to_numpy().astype(str)
    for s in ("Ni", "Pt"):
        np.testing.assert_allclose(atoms.face_color[species == s],
                                   np.tile(transform_color(species_colour(s))[0], ((species == s).sum(), 1)), atol=1e-6)
    assert not atoms.face_colorbar.visible and not viewer.canvas.overlays.text.visible

    w.colour_by.value = "shell"
    shell = atoms.features["shell"].to_numpy()
    np.testing.assert_array_equal(shell == 0, particle.surface)
    np.testing.assert_allclose(atoms.face_color[shell == 0][0], transform_color(SHELL_PALETTE[0])[0], atol=1e-6)
    one = atoms.face_color[shell == 1]
    assert np.allclose(one, one[0]) and not np.allclose(one[0], atoms.face_color[shell == 0][0])
    # the colouring follows the layer: back to species, Ni keeps its colour
    w.colour_by.value = "species"
    np.testing.assert_allclose(atoms.face_color[species == "Ni"][0], transform_color(species_colour("Ni"))[0],
                               atol=1e-6)

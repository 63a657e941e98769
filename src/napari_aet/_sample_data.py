"""Built-in sample: a simulated Pt nanoparticle (tilt series, ideal tomogram, true atoms)."""

from __future__ import annotations

import json
from importlib import resources

from ._layers import atoms_layer, tilt_series_layer, volume_layer


def sample_config():
    """The built-in sample's simulation settings, shipped in ``resources/sample_pt.json``."""
    from .core.simulate import SimulationConfig

    text = resources.files("napari_aet").joinpath("resources", "sample_pt.json").read_text()
    return SimulationConfig(**json.loads(text)["config"])


def simulate_sample(progress=None, cancel=None):
    """Simulate the built-in sample (deterministic, about a second)."""
    from .core.simulate import simulate

    return simulate(sample_config(), progress=progress, cancel=cancel)


def make_sample_pt():
    """napari sample data: tilt series, ideal tomogram and ground-truth atoms, all in Å.

    The tilt series and the tomogram hold the particle and its support; the atoms layer
    holds the particle's atoms (a few of them off their f.c.c. sites), as the demo compares
    them; the support's atom count and direction are in the layer's metadata."""
    sim = simulate_sample()
    table = sim.truth_table()
    particle = table[table["atom"] == 1].reset_index(drop=True)
    truth = [volume_layer(sim.ideal, name="Pt ideal tomogram", kind="ideal_tomogram"),
             atoms_layer(particle, name="Pt atoms (ground truth)", metadata=sim.metadata())]
    for _, kwargs, _ in truth:  # the widgets take these as inputs only when nothing else exists
        kwargs["metadata"]["napari_aet"]["ground_truth"] = True
    return [tilt_series_layer(sim.tilt_series, name="Pt tilt series (simulated)"), *truth]

"""The plugin inside a real napari viewer (needs a display: run under xvfb-run)."""

import numpy as np
import pandas as pd
import pytest

from napari_aet.core import geometry, io

pytestmark = pytest.mark.gui


def test_sample_loads_in_angstrom_and_atoms_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-aet", "pt_nanoparticle")
    names = [l.name for l in layers]
    assert names == ["Pt tilt series (simulated)", "Pt ideal tomogram", "Pt atoms (ground truth)"]
    tilts, ideal, atoms = layers
    p = 0.357
    assert tilts.data.shape == (21, 144, 144)
    np.testing.assert_allclose(tilts.scale, (1, p, p))
    np.testing.assert_allclose(ideal.scale, (p, p, p))
    np.testing.assert_allclose(ideal.translate, (-72 * p,) * 3)
    # the brightest voxel of the ideal tomogram sits on a true atom in world (Å) coordinates
    k = np.unravel_index(np.argmax(ideal.data), ideal.data.shape)
    world = np.asarray(ideal.data_to_world(k))
    d = np.linalg.norm(atoms.data - world, axis=1).min()
    assert d < p
    # atoms coloured blue when on an fcc site
    blue = np.array([0x1F, 0x4F, 0xD1, 255]) / 255
    fcc = atoms.features["fcc"].to_numpy() == 1
    np.testing.assert_allclose(atoms.face_color[fcc][0], blue, atol=1e-3)

    out = tmp_path / "atoms.csv"
    atoms.save(str(out), plugin="napari-aet")
    back, meta = io.read_atoms(out)
    truth = atoms.features.copy()
    truth.insert(0, "z", atoms.data[:, 0])
    truth.insert(0, "y", atoms.data[:, 1])
    truth.insert(0, "x", atoms.data[:, 2])
    pd.testing.assert_frame_equal(back, io._coerce_atoms(truth))
    assert np.array(meta["crystal_rotation"]).shape == (3, 3)

    # reading back through the plugin's reader: the tilt series with its angles
    sim_dir = tmp_path / "sim"
    sim_dir.mkdir()
    from napari_aet._sample_data import simulate_sample
    from napari_aet.cli import write_simulation

    write_simulation(simulate_sample(), sim_dir)
    opened = viewer.open(str(sim_dir / "tilts.mrc"), plugin="napari-aet")
    assert opened[0].metadata["napari_aet"]["kind"] == "tilt_series"
    assert len(opened[0].metadata["napari_aet"]["angles"]) == 21
    vol = viewer.open(str(sim_dir / "ideal.mrc"), plugin="napari-aet")[0]
    assert vol.metadata["napari_aet"]["kind"] == "tomogram"
    np.testing.assert_allclose(vol.data, ideal.data)
    assert geometry.centre_index(144) == 72


def test_xyz_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    atoms = viewer.open_sample("napari-aet", "pt_nanoparticle")[2]
    atoms.save(str(tmp_path / "atoms.xyz"), plugin="napari-aet")
    back, _ = io.read_atoms(tmp_path / "atoms.xyz")
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), atoms.data, atol=1e-6)
    assert set(back["species"]) == {"Pt"}

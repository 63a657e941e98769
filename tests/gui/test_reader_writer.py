"""napari's reader and writer paths: files we cannot read go to other readers; a tomogram or
tilt series saved from napari reopens with its voxel size and angles; atoms through ASE."""

import numpy as np
import pytest

from napari_aet.core import io

from .conftest import STEP_TIMEOUT_MS  # a bound for hangs only, never for speed

pytestmark = pytest.mark.gui


def test_reader_declines_what_is_not_a_stack(tmp_path):
    import tifffile

    from napari_aet._reader import napari_get_reader

    tifffile.imwrite(tmp_path / "image.tif", np.ones((16, 16), np.float32))
    np.save(tmp_path / "image.npy", np.ones((16, 16), np.float32))
    (tmp_path / "broken.mrc").write_bytes(b"not an mrc")
    for name in ("image.tif", "image.npy", "broken.mrc"):
        assert napari_get_reader(str(tmp_path / name)) is None, name
    tifffile.imwrite(tmp_path / "stack.tif", np.ones((4, 16, 16), np.float32))
    assert napari_get_reader(str(tmp_path / "stack.tif")) is not None


def _notices(since: int) -> list:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[since:]]


def test_a_declined_file_is_explained_in_napari(make_napari_viewer, tmp_path, small_sim):
    """Opened with napari-aet, a 2D TIFF, a colour TIFF, a corrupt and a truncated MRC are
    declined with a notification naming the file and the reason; a real tilt series opens
    without one."""
    import tifffile
    from napari.utils.notifications import notification_manager

    tifffile.imwrite(tmp_path / "image.tif", np.ones((16, 16), np.float32))
    tifffile.imwrite(tmp_path / "photo.tif", np.ones((16, 16, 3), np.uint8), photometric="rgb")
    (tmp_path / "broken.mrc").write_bytes(b"not an mrc")
    io.write_tilt_series(tmp_path / "tilts.mrc", small_sim.tilt_series, write_angles_file=True)
    whole = (tmp_path / "tilts.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "noid.mrc").write_bytes(whole[:208] + b"XXXX" + whole[212:])
    viewer = make_napari_viewer()
    reasons = {"image.tif": "single 2D image (16×16)", "photo.tif": "colour image",
               "broken.mrc": "not a valid MRC file", "cut.mrc": "truncated",
               "noid.mrc": "no 'MAP ' identifier"}
    for name, reason in reasons.items():
        since = len(notification_manager.records)
        with pytest.raises(Exception):  # napari: the chosen reader declined
            viewer.open(str(tmp_path / name), plugin="napari-aet")
        said = [m for m in _notices(since) if m.startswith(f"napari-aet did not open {name}")]
        assert len(said) == 1 and reason in said[0], (name, _notices(since))
    assert len(viewer.layers) == 0
    since = len(notification_manager.records)
    (layer,) = viewer.open(str(tmp_path / "tilts.mrc"), plugin="napari-aet")
    assert layer.metadata["napari_aet"]["kind"] == "tilt_series"
    np.testing.assert_allclose(layer.metadata["napari_aet"]["angles"], small_sim.tilt_series.angles, atol=1e-5)
    assert not any("napari-aet" in m for m in _notices(since))


def test_a_3d_npy_without_angles_is_read_as_a_tomogram_and_says_so(make_napari_viewer, tmp_path):
    from napari.utils.notifications import notification_manager

    np.save(tmp_path / "stack.npy", np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    viewer = make_napari_viewer()
    since = len(notification_manager.records)
    (layer,) = viewer.open(str(tmp_path / "stack.npy"), plugin="napari-aet")
    assert layer.metadata["napari_aet"]["kind"] == "tomogram"
    (said,) = [m for m in _notices(since) if "napari-aet" in m]
    assert "stack.npy as a tomogram" in said and "no tilt angles" in said and "stack.rawtlt" in said
    # with its angles beside it, the same file is a tilt series, without a word
    np.savetxt(tmp_path / "stack.rawtlt", np.linspace(-60, 60, 8))
    since = len(notification_manager.records)
    (layer,) = viewer.open(str(tmp_path / "stack.npy"), plugin="napari-aet")
    assert layer.metadata["napari_aet"]["kind"] == "tilt_series"
    assert not any("napari-aet" in m for m in _notices(since))


def test_a_2d_tiff_opens_with_another_reader(make_napari_viewer, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "image.tif", np.arange(256, dtype=np.float32).reshape(16, 16))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "image.tif"))  # napari picks a reader that can
    assert layers and layers[0].data.shape == (16, 16)


def test_tomogram_and_tilt_series_saved_from_napari_reopen_as_they_were(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    tilts, ideal, atoms = viewer.open_sample("napari-aet", "pt_nanoparticle")
    ideal.save(str(tmp_path / "tomo.mrc"), plugin="napari-aet")
    vol = io.read_volume(tmp_path / "tomo.mrc")
    assert vol.pixel_size == pytest.approx(0.357, rel=1e-5)
    np.testing.assert_array_equal(vol.data, ideal.data)
    back = viewer.open(str(tmp_path / "tomo.mrc"), plugin="napari-aet")[0]
    np.testing.assert_allclose(back.scale, ideal.scale, rtol=1e-5)
    np.testing.assert_allclose(back.translate, ideal.translate, rtol=1e-5)

    tilts.save(str(tmp_path / "tilts.mrc"), plugin="napari-aet")
    ts = io.read_tilt_series(tmp_path / "tilts.mrc")  # angles from the .rawtlt written beside it
    np.testing.assert_allclose(ts.angles, tilts.metadata["napari_aet"]["angles"], atol=1e-5)
    assert ts.pixel_size == pytest.approx(0.357, rel=1e-5)
    reopened = viewer.open(str(tmp_path / "tilts.mrc"), plugin="napari-aet")[0]
    assert reopened.metadata["napari_aet"]["kind"] == "tilt_series"
    assert [str(u) for u in reopened.units][1:] == ["angstrom", "angstrom"]

    for ext in ("pdb", "xsf", "lmp"):
        atoms.save(str(tmp_path / f"atoms.{ext}"), plugin="napari-aet")
        table, _ = io.read_atoms(tmp_path / f"atoms.{ext}")
        np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), atoms.data, atol=1e-3)
        assert set(table["species"]) == {"Pt"}


def test_microscope_files_open_in_napari_and_the_load_widget(make_napari_viewer, qtbot, tmp_path):
    """The public fixtures open through napari (DM4 stack: no calibration, so pixels) and through
    the Load widget docked from the plugin menu (a SerialEM stack: angles and pixel size from
    its mdoc), with the tilt axis found and rotated onto v."""
    import shutil
    from pathlib import Path

    import mrcfile

    from napari_aet.core import geometry
    from napari_aet.core.simulate import SimulationConfig, atom_weights, project_atoms, simulate

    data = Path(__file__).parent.parent / "data" / "vendor"
    viewer = make_napari_viewer()
    dm = viewer.open(str(data / "test-1.dm4"), plugin="napari-aet")[0]
    assert dm.data.shape == (2, 2, 2) and dm.metadata["napari_aet"]["kind"] == "tilt_series"

    # a simulated particle recorded at the mdoc's 41 tilts with the axis at 30° in the image
    shutil.copy(data / "tilt_series.mdoc", tmp_path / "TS_01.mrc.mdoc")
    from napari_aet.core.vendor import mdoc_tilts

    tilts, _, _ = mdoc_tilts(tmp_path / "TS_01.mrc.mdoc")
    sim = simulate(SimulationConfig(size=1.5, n_voxels=64, pixel_size=0.4, tilt_range=60, tilt_step=30, seed=5, dose=None))
    proj = project_atoms(sim.particle.positions, atom_weights(sim.particle.species),
                         geometry.convert_angles(tilts, "tilt-axis", 30.0), (64, 64), 0.4)
    with mrcfile.new(tmp_path / "TS_01.mrc") as m:
        m.set_data(proj.astype(np.float32))
        m.set_image_stack()
    _, w = viewer.window.add_plugin_dock_widget("napari-aet", "Load tilt series")
    w.path.value = str(tmp_path / "TS_01.mrc")
    w.find_axis.value = True
    w.run_button.click()
    qtbot.waitUntil(lambda: "TS_01" in viewer.layers, timeout=STEP_TIMEOUT_MS)
    layer = viewer.layers["TS_01"]
    np.testing.assert_allclose(layer.scale[1:], (5.4, 5.4))  # PixelSpacing of the mdoc
    np.testing.assert_allclose(layer.metadata["napari_aet"]["angles"], tilts)
    import re

    assert "SerialEM mdoc" in w.status.text()
    found = float(re.search(r"tilt axis ([+-][0-9.]+)°", w.status.text()).group(1))
    assert abs(found - 30.0) < 0.2, w.status.text()

"""Microscope files (public fixtures from RosettaSciIO and mdocfile) and angle conventions."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_aet.cli import main
from napari_aet.core import geometry, io
from napari_aet.core.errors import AETInputError

DATA = Path(__file__).parent / "data" / "vendor"
pytest.importorskip("rsciio")


def test_velox_emd_stack_pixel_size_and_stage_alpha():
    from napari_aet.core.vendor import read_vendor_stack

    data, px, tilts, info = read_vendor_stack(DATA / "fei_example_tem_stack.emd")
    assert data.shape == (2, 3, 3) and data.dtype == np.float32
    assert px == pytest.approx(0.08172883, rel=1e-6)  # 8.17 pm in the file, in Å here
    np.testing.assert_allclose(info["stage_alpha_deg"], np.degrees(-0.2196736), atol=1e-3)
    assert tilts is None  # both frames at the same alpha: not a tilt series' angles
    # through the tilt-series reader: the pixel size is checked (too small for AET) and named
    with pytest.raises(AETInputError, match="0.0817.*--pixel-size"):
        io.read_tilt_series(DATA / "fei_example_tem_stack.emd", angles=[-10, 10])
    ts = io.read_tilt_series(DATA / "fei_example_tem_stack.emd", angles=[-10, 10], pixel_size=0.357)
    assert ts.angles.tolist() == [-10, 10] and ts.metadata["angles_source"] == "given array"


@pytest.mark.parametrize("name", ["test-1.dm3", "test-1.dm4"])
def test_digitalmicrograph_stacks(name):
    with pytest.raises(AETInputError, match="no pixel size.*--pixel-size"):
        io.read_tilt_series(DATA / name, angles=[0, 30])
    ts = io.read_tilt_series(DATA / name, angles=[0, 30], pixel_size=0.4)
    assert ts.data.shape == (2, 2, 2) and ts.pixel_size == 0.4


def test_serialem_mdoc_gives_angles_pixel_size_and_axis(tmp_path):
    rng = np.random.default_rng(0)
    stack = tmp_path / "TS_01.mrc"
    import mrcfile

    with mrcfile.new(stack) as m:
        m.set_data(rng.random((41, 8, 8)).astype(np.float32) + 1)
        m.set_image_stack()  # no pixel size in the header: the mdoc's is used
    for mdoc_name in ("TS_01.mrc.mdoc", "TS_01.mdoc"):
        for old in tmp_path.glob("*.mdoc"):
            old.unlink()
        shutil.copy(DATA / "tilt_series.mdoc", tmp_path / mdoc_name)
        ts = io.read_tilt_series(stack)
        assert ts.metadata["angles_source"] == f"SerialEM mdoc {mdoc_name}"
        assert ts.pixel_size == pytest.approx(5.4)
        assert ts.metadata["mdoc_tilt_axis_angle_deg"] == pytest.approx(85.3)
        assert ts.angles[:3] == pytest.approx([0.000999877, 3.00113, -2.99863])  # dose-symmetric order kept
        assert ts.angles.min() == pytest.approx(-59.9986) and ts.angles.max() == pytest.approx(60.0006)


def test_fei_extended_header_tilts(tmp_path):
    """FEI1 records laid out by mrcfile's own dtype (no public FEI fixture could be brought here)."""
    import mrcfile
    from mrcfile.dtypes import get_ext_header_dtype

    tilts = np.linspace(-60, 60, 5)
    ext = np.zeros(5, dtype=get_ext_header_dtype(b"FEI1"))
    ext["Metadata size"] = ext.dtype.itemsize
    ext["Alpha tilt"] = tilts
    with mrcfile.new(tmp_path / "fei.mrc") as m:
        m.set_data(np.ones((5, 8, 8), np.float32))
        m.set_image_stack()
        m.voxel_size = 0.4
        m.set_extended_header(ext)
        m.header.exttyp = b"FEI1"
    ts = io.read_tilt_series(tmp_path / "fei.mrc")
    np.testing.assert_allclose(ts.angles, tilts)
    assert ts.metadata["angles_source"] == "MRC extended header (FEI1, alpha tilt)"


def test_zyx_series_reconstructs_like_its_zyz_conversion(tmp_path, small_sim):
    """RESIRE's Z-Y-X angles, read with --angle-convention zyx, give the tomogram of the same
    rotations written as Z-Y-Z, within 1e-4 (relative)."""
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import project_atoms

    rng = np.random.default_rng(5)
    zyx = np.c_[rng.uniform(-30, 30, 9), np.linspace(-60, 60, 9), rng.uniform(-20, 20, 9)]
    zyz = geometry.convert_angles(zyx, "zyx")
    # RESIRE: R = (Rz(phi) Ry(theta) Rx(psi))' and detector = R r
    rot_zyx = [(geometry.rotation_z(np.radians(a)) @ geometry.rotation_y(np.radians(b))
                @ geometry.rotation_x(np.radians(c))).T for a, b, c in zyx]
    np.testing.assert_allclose(geometry.euler_zyz_matrices(zyz), np.stack(rot_zyx), atol=1e-12)
    p = small_sim.particle
    tilts = project_atoms(p.positions, np.ones(len(p.positions)), zyz, (64, 64), 0.4)
    np.savetxt(tmp_path / "zyx.txt", zyx)
    np.savetxt(tmp_path / "zyz.txt", zyz)
    io.write_tilt_series(tmp_path / "t.mrc", io.TiltSeries(tilts, zyz, 0.4))
    a = io.read_tilt_series(tmp_path / "t.mrc", angles=tmp_path / "zyx.txt", angle_convention="zyx")
    b = io.read_tilt_series(tmp_path / "t.mrc", angles=tmp_path / "zyz.txt")
    va = reconstruct(a, iterations=10, device="cpu").volume
    vb = reconstruct(b, iterations=10, device="cpu").volume
    assert np.abs(va - vb).max() <= 1e-4 * np.abs(vb).max()
    # and the command line takes the convention
    assert main(["reconstruct", str(tmp_path / "t.mrc"), "--angles", str(tmp_path / "zyx.txt"), "--angle-convention",
                 "zyx", "--iterations", "10", "--device", "cpu", "-o", str(tmp_path / "v.mrc")]) == 0
    import json

    side = json.loads((tmp_path / "v.json").read_text())
    assert side["angle_convention"] == "zyx" and side["angles_source"] == "file zyx.txt"
    np.testing.assert_allclose(io.read_volume(tmp_path / "v.mrc").data, va, atol=1e-4 * np.abs(va).max())


def test_trace_and_enhance_reread_a_resire_stack_as_reconstruct_read_it(tmp_path, small_sim):
    """A RESIRE/GENFIRE MATLAB stack ([x, y, projection], Z-Y-X angles) needs three reading
    options; reconstruct records them, so trace --tilts and enhance read it the same way
    without repeating them, and refinement improves the fit."""
    import json

    import scipy.io

    from napari_aet.core.simulate import project_atoms

    rng = np.random.default_rng(8)
    zyx = np.c_[rng.uniform(-10, 10, 9), np.linspace(-60, 60, 9), rng.uniform(-10, 10, 9)]
    zyz = geometry.convert_angles(zyx, "zyx")
    p = small_sim.particle
    tilts = project_atoms(p.positions, np.ones(len(p.positions)), zyz, (64, 64), 0.4, b_factor=5.0)
    scipy.io.savemat(tmp_path / "resire.mat", {"projections": tilts.transpose(2, 1, 0)})
    np.savetxt(tmp_path / "angles.txt", zyx)
    read = ["--stack-axis", "2", "--transpose-projections", "--angle-convention", "zyx", "--pixel-size", "0.4"]
    assert main(["reconstruct", str(tmp_path / "resire.mat"), "--angles", str(tmp_path / "angles.txt"), *read,
                 "--iterations", "60", "--device", "cpu", "-o", str(tmp_path / "v.mrc")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["tilts_read"]["transpose_projections"] is True
    assert main(["trace", str(tmp_path / "v.mrc"), "--tilts", str(tmp_path / "resire.mat"), "--angles",
                 str(tmp_path / "angles.txt"), "--refine-iterations", "40", "--device", "cpu",
                 "-o", str(tmp_path / "atoms.csv")]) == 0
    meta = json.loads((tmp_path / "atoms.json").read_text())
    assert meta["refinement"]["r_factor_after"] < meta["refinement"]["r_factor_before"]
    # enhance finds the tilt series through the tomogram's JSON and reads it the same way
    assert main(["enhance", str(tmp_path / "v.mrc"), "--device", "cpu", "-o", str(tmp_path / "e.mrc")]) == 0
    # (read any other way the re-projection would not match: R would be near 1, not the reconstruction's own)
    r_own = json.loads((tmp_path / "v.json").read_text())["r_factors"][-1]
    r_enhance = json.loads((tmp_path / "e.json").read_text())["consistency"]["r_factor_reconstruction"]
    assert abs(r_enhance - r_own) < 0.05 * r_own


def test_tilt_axis_convention_rotates_the_detector_frame():
    e = geometry.convert_angles(np.array([0.0, 40.0]), "tilt-axis", tilt_axis_angle=30.0)
    np.testing.assert_allclose(e[:, 0], 30.0)
    np.testing.assert_allclose(e[:, 2], -30.0)
    # a point on the tilt axis stays where it is at every tilt
    axis = np.array([-np.sin(np.radians(30)), np.cos(np.radians(30)), 0.0]) * 5
    for row in e:
        np.testing.assert_allclose(geometry.euler_zyz_matrix(*row) @ axis, axis, atol=1e-12)


def test_readme_worked_examples_hold():
    np.testing.assert_allclose(geometry.convert_angles(np.array([[10.0, 30.0, 5.0]]), "zyx"), [[171.42, 30.38, 179.92]],
                               atol=0.006)
    np.testing.assert_allclose(geometry.convert_angles(np.array([40.0]), "tilt-axis", 23.4), [[23.4, 40.0, -23.4]])


def test_emd_1_0_stack():
    ts = io.read_tilt_series(DATA / "example_signal.emd", angles=[-10, 0, 10], pixel_size=0.4)
    assert ts.data.shape == (3, 3, 3) and ts.metadata["vendor"]["reader"] == "RosettaSciIO (emd)"
    assert ts.metadata["angles_source"] == "given array"


def test_a_resire_matlab_stack_reads_as_the_contract(tmp_path, small_sim):
    """A stack saved the way RESIRE's MATLAB scripts hold it ([x, y, projection], Z-Y-X angles with
    R = (Rz Ry Rx)'), read with --stack-axis 2 --transpose-projections --angle-convention zyx,
    is the same series with the same rotations."""
    import scipy.io

    from napari_aet.core.simulate import project_atoms

    t = np.linspace(-60, 60, 7)
    p = small_sim.particle
    tilts = project_atoms(p.positions, np.ones(len(p.positions)), t, (64, 64), 0.4)
    scipy.io.savemat(tmp_path / "resire.mat", {"projections": tilts.transpose(2, 1, 0)})
    scipy.io.savemat(tmp_path / "angles.mat", {"angles": np.c_[np.zeros(7), -t, np.zeros(7)]})  # theta = -t
    ts = io.read_tilt_series(tmp_path / "resire.mat", angles=tmp_path / "angles.mat", pixel_size=0.4, stack_axis=2,
                             transpose_projections=True, angle_convention="zyx")
    np.testing.assert_array_equal(ts.data, tilts)
    np.testing.assert_allclose(geometry.euler_zyz_matrices(ts.angles), geometry.euler_zyz_matrices(t), atol=1e-12)
    assert main(["reconstruct", str(tmp_path / "resire.mat"), "--angles", str(tmp_path / "angles.mat"), "--pixel-size",
                 "0.4", "--stack-axis", "2", "--transpose-projections", "--angle-convention", "zyx", "--iterations",
                 "5", "--device", "cpu", "-o", str(tmp_path / "v.mrc")]) == 0

import json

import h5py
import mrcfile
import numpy as np
import pandas as pd
import pytest
import scipy.io
import tifffile

from napari_aet.core import io
from napari_aet.core.errors import AETInputError

ANGLES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])


def _write_mrc(path, data, voxel=None, stack=True):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        if stack:
            m.set_image_stack()
        if voxel is not None:
            m.voxel_size = voxel


def _write_mat73(path, **arrays):
    """A MATLAB v7.3 file: HDF5 with a 512-byte user block and MATLAB's reversed axes."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=np.asarray(v).T)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Nov 26 2026 HDF5 schema 1.00 .".ljust(116))


# ------------------------------------------------------------------ tilt series


@pytest.mark.parametrize("ext", [".mrc", ".st", ".ali"])
def test_mrc_tilt_series_with_header_pixel_and_rawtlt(tmp_path, tilts_array, ext):
    path = tmp_path / f"series{ext}"
    _write_mrc(path, tilts_array, voxel=0.357)
    np.savetxt(tmp_path / "series.rawtlt", ANGLES)
    ts = io.read_tilt_series(path)
    np.testing.assert_array_equal(ts.data, tilts_array)
    np.testing.assert_allclose(ts.angles, ANGLES)
    assert ts.pixel_size == pytest.approx(0.357, rel=1e-6)


def test_tiff_npy_mat5_mat73_agree(tmp_path, tilts_array):
    tifffile.imwrite(tmp_path / "a.tif", tilts_array)
    np.save(tmp_path / "b.npy", tilts_array)
    scipy.io.savemat(tmp_path / "c.mat", {"tilts": tilts_array})
    _write_mat73(tmp_path / "d.mat", projections=tilts_array, other=np.zeros((2, 2)))
    for name in ("a.tif", "b.npy", "c.mat", "d.mat"):
        ts = io.read_tilt_series(tmp_path / name, angles=ANGLES, pixel_size=0.4)
        np.testing.assert_array_equal(ts.data, tilts_array, err_msg=name)
        assert ts.pixel_size == 0.4


def test_matlab_stack_last_hint_and_stack_axis(tmp_path, tilts_array):
    matlab_order = np.moveaxis(tilts_array, 0, 2)  # (v, u, n) as GENFIRE saves it
    scipy.io.savemat(tmp_path / "p.mat", {"proj": matlab_order})
    with pytest.raises(AETInputError, match="--stack-axis 2"):
        io.read_tilt_series(tmp_path / "p.mat", angles=ANGLES, pixel_size=0.4)
    ts = io.read_tilt_series(tmp_path / "p.mat", angles=ANGLES, pixel_size=0.4, stack_axis=2)
    np.testing.assert_array_equal(ts.data, tilts_array)


def test_tiff_pixel_size_round_trip(tmp_path, tilts_array):
    ts = io.TiltSeries(tilts_array, ANGLES, 0.357)
    io.write_tilt_series(tmp_path / "t.tif", ts)
    back = io.read_tilt_series(tmp_path / "t.tif", angles=ANGLES)
    assert back.pixel_size == pytest.approx(0.357, rel=1e-4)


def test_write_mrc_tilt_series_round_trip(tmp_path, tilts_array):
    ts = io.TiltSeries(tilts_array, ANGLES, 0.5)
    io.write_tilt_series(tmp_path / "t.mrc", ts, write_angles_file=True)
    back = io.read_tilt_series(tmp_path / "t.mrc")
    np.testing.assert_array_equal(back.data, tilts_array)
    np.testing.assert_allclose(back.angles, ANGLES)
    assert back.pixel_size == pytest.approx(0.5)


def test_generic_angles_file_found(tmp_path, tilts_array):
    np.save(tmp_path / "stack.npy", tilts_array)
    np.save(tmp_path / "angles.npy", ANGLES)
    ts = io.read_tilt_series(tmp_path / "stack.npy", pixel_size=0.3)
    np.testing.assert_allclose(ts.angles, ANGLES)


# ------------------------------------------------------------------- angles


def test_angles_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# tilts\n-60\n-30\n0\n30\n60\n")
    (tmp_path / "b.csv").write_text("0, -60, 0\n0,-30,0\n0,0,0\n0,30,0\n0,60,0\n")
    (tmp_path / "c.tlt").write_text("\n".join(str(a) for a in ANGLES))
    np.save(tmp_path / "d.npy", ANGLES)
    scipy.io.savemat(tmp_path / "e.mat", {"angles": ANGLES[None, :]})
    _write_mat73(tmp_path / "f.mat", angles=np.stack([np.zeros(5), ANGLES, np.zeros(5)], 1))
    for name in ("a.txt", "c.tlt", "d.npy", "e.mat"):
        np.testing.assert_allclose(io.read_angles(tmp_path / name), ANGLES, err_msg=name)
    for name in ("b.csv", "f.mat"):
        e = io.read_angles(tmp_path / name)
        assert e.shape == (5, 3)
        np.testing.assert_allclose(e[:, 1], ANGLES)


def test_angles_in_radians_rejected_and_converted(tmp_path):
    rad = np.deg2rad(ANGLES)
    np.savetxt(tmp_path / "r.txt", rad)
    with pytest.raises(AETInputError, match="look like radians"):
        io.read_angles(tmp_path / "r.txt")
    np.testing.assert_allclose(io.read_angles(tmp_path / "r.txt", units="rad"), ANGLES)


def test_angle_file_errors(tmp_path):
    (tmp_path / "x.txt").write_text("-60\nabc\n")
    with pytest.raises(AETInputError, match="line 2"):
        io.read_angles(tmp_path / "x.txt")
    (tmp_path / "y.txt").write_text("-60\n0 1 2\n")
    with pytest.raises(AETInputError, match="mixes"):
        io.read_angles(tmp_path / "y.txt")
    (tmp_path / "z.txt").write_text("1 2\n")
    with pytest.raises(AETInputError, match="2 values"):
        io.read_angles(tmp_path / "z.txt")


# -------------------------------------------------------------- bad input


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_angle_count_mismatch(tmp_path, tilts_array):
    np.save(tmp_path / "s.npy", tilts_array)
    with pytest.raises(AETInputError) as e:
        io.read_tilt_series(tmp_path / "s.npy", angles=ANGLES[:4], pixel_size=0.3)
    assert "4 angles for 5 projections" in _one_line(e)


def test_not_a_3d_stack(tmp_path):
    np.save(tmp_path / "img.npy", np.zeros((10, 10), np.float32))
    with pytest.raises(AETInputError) as e:
        io.read_tilt_series(tmp_path / "img.npy", angles=ANGLES, pixel_size=0.3)
    assert "not a 3D stack" in _one_line(e)


def test_nan_and_inf_values(tmp_path, tilts_array):
    bad = tilts_array.copy()
    bad[1, 2, 3] = np.nan
    bad[0, 0, 0] = np.inf
    np.save(tmp_path / "n.npy", bad)
    with pytest.raises(AETInputError) as e:
        io.read_tilt_series(tmp_path / "n.npy", angles=ANGLES, pixel_size=0.3)
    assert "2 NaN/Inf" in _one_line(e)


@pytest.mark.parametrize("ext", [".mrc", ".npy", ".tif", ".mat", ".txt"])
def test_empty_file(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    with pytest.raises(AETInputError) as e:
        if ext == ".txt":
            io.read_angles(path)
        else:
            io.read_tilt_series(path, angles=ANGLES, pixel_size=0.3)
    assert "empty" in _one_line(e)


@pytest.mark.parametrize("ext", [".mrc", ".npy", ".tif", ".mat"])
def test_truncated_file(tmp_path, tilts_array, ext):
    full = tmp_path / f"full{ext}"
    if ext == ".mrc":
        _write_mrc(full, tilts_array, voxel=0.3)
    elif ext == ".npy":
        np.save(full, tilts_array)
    elif ext == ".tif":
        tifffile.imwrite(full, tilts_array)
    else:
        scipy.io.savemat(full, {"tilts": tilts_array})
    raw = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AETInputError) as e:
        io.read_tilt_series(cut, angles=ANGLES, pixel_size=0.3)
    assert "truncated or corrupt" in _one_line(e)


def test_unknown_extension(tmp_path):
    (tmp_path / "x.foo").write_bytes(b"abc")
    with pytest.raises(AETInputError, match="unknown tilt series file type .foo"):
        io.read_tilt_series(tmp_path / "x.foo", angles=ANGLES, pixel_size=0.3)


def test_missing_pixel_size_is_an_error_not_one(tmp_path, tilts_array):
    np.save(tmp_path / "s.npy", tilts_array)
    with pytest.raises(AETInputError, match="--pixel-size"):
        io.read_tilt_series(tmp_path / "s.npy", angles=ANGLES)
    _write_mrc(tmp_path / "nohdr.mrc", tilts_array, voxel=None)
    with pytest.raises(AETInputError, match="no pixel size in its header"):
        io.read_tilt_series(tmp_path / "nohdr.mrc", angles=ANGLES)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 0.0357e-9, 35.7])
def test_pixel_size_units(bad):
    with pytest.raises(AETInputError):
        io.check_pixel_size(bad)


def test_missing_angles(tmp_path, tilts_array):
    np.save(tmp_path / "s.npy", tilts_array)
    with pytest.raises(AETInputError, match="no angles"):
        io.read_tilt_series(tmp_path / "s.npy", pixel_size=0.3)


def test_mat_with_several_candidates_asks_for_a_name(tmp_path, tilts_array):
    scipy.io.savemat(tmp_path / "m.mat", {"a": tilts_array, "b": tilts_array})
    with pytest.raises(AETInputError, match="several"):
        io.read_tilt_series(tmp_path / "m.mat", angles=ANGLES, pixel_size=0.3)
    ts = io.read_tilt_series(tmp_path / "m.mat", angles=ANGLES, pixel_size=0.3, variable="b")
    assert ts.data.shape == tilts_array.shape


# ------------------------------------------------------------------- volumes


def test_volume_round_trip_with_voxel_size_and_origin(tmp_path):
    vol = np.random.default_rng(1).random((8, 9, 10)).astype(np.float32)
    io.write_volume(tmp_path / "v.mrc", vol, 0.357)
    back = io.read_volume(tmp_path / "v.mrc")
    np.testing.assert_array_equal(back.data, vol)
    assert back.pixel_size == pytest.approx(0.357)
    with mrcfile.open(tmp_path / "v.mrc") as m:
        assert float(m.header.origin.x) == pytest.approx(-5 * 0.357, rel=1e-5)
        assert m.header.ispg == 1


def test_write_refuses_zero_pixel_size(tmp_path):
    with pytest.raises(AETInputError):
        io.write_volume(tmp_path / "v.mrc", np.zeros((4, 4, 4)), 0.0)
    assert not (tmp_path / "v.mrc").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "v.mrc"
    io.write_volume(target, np.ones((4, 4, 4)), 0.5)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"]


# --------------------------------------------------------------------- atoms


def _table(n=20, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x": rng.normal(size=n) * 10, "y": rng.normal(size=n) * 10, "z": rng.normal(size=n) * 10,
        "intensity": rng.random(n), "atom": rng.integers(0, 2, n), "species": ["Pt"] * (n - 2) + ["", "Na"],
        "fcc": rng.integers(0, 2, n), "surface": rng.integers(0, 2, n),
        "facet": (["100", "111", "110", ""] * n)[:n], "layer": pd.array([1, 2, None, 4] * (n // 4), dtype="Int64"),
    })
    for c in ("ux", "uy", "uz", "exx", "eyy", "ezz", "exy", "exz", "eyz"):
        df[c] = rng.normal(size=n) * 1e-3
    df.loc[3, "exx"] = np.nan
    df["my_extra"] = 1.5
    return df


def test_atoms_csv_is_lossless_with_sidecar(tmp_path):
    df = _table()
    meta = {"crystal_rotation": np.eye(3).tolist(), "lattice_constant": 3.924}
    io.write_atoms(tmp_path / "a.csv", df, metadata=meta)
    back, bmeta = io.read_atoms(tmp_path / "a.csv")
    pd.testing.assert_frame_equal(back, io._coerce_atoms(df))
    assert list(back.columns[:19]) == io.ATOM_COLUMNS
    assert back.loc[0, "facet"] == "100" and back.loc[19, "species"] == "Na"
    assert bmeta == meta | {"data_file": "a.csv"}  # the sidecar names its table
    assert json.loads((tmp_path / "a.json").read_text())["lattice_constant"] == 3.924


@pytest.mark.parametrize("name", ["a.xyz", "a.extxyz", "a.cif", "POSCAR"])
def test_atoms_through_ase(tmp_path, name):
    df = _table()
    df["species"] = "Pt"
    io.write_atoms(tmp_path / name, df)
    back, _ = io.read_atoms(tmp_path / name)
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), df[["x", "y", "z"]].to_numpy(), atol=1e-5)
    assert set(back["species"]) == {"Pt"}
    if name.endswith("xyz"):
        np.testing.assert_allclose(back["intensity"], df["intensity"])
        assert list(back["facet"]) == list(df["facet"])


def test_atoms_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(AETInputError, match="x, y, z"):
        io.read_atoms(tmp_path / "bad.csv")
    with pytest.raises(AETInputError, match="unknown atoms file type"):
        io.write_atoms(tmp_path / "a.pdbx", _table())


def test_tiff_projections_of_unequal_size(tmp_path):
    import tifffile

    with tifffile.TiffWriter(tmp_path / "uneven.tif") as tw:
        tw.write(np.zeros((10, 12), np.float32))
        tw.write(np.zeros((10, 12), np.float32))
        tw.write(np.zeros((9, 12), np.float32))
    with pytest.raises(AETInputError) as e:
        io.read_tilt_series(tmp_path / "uneven.tif", angles=[-10.0, 0.0, 10.0], pixel_size=0.3)
    assert "unequal size" in _one_line(e) and "page 2 is 9x12" in str(e.value)

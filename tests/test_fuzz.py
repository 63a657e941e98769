"""Property-based and fuzz tests (Hypothesis) over the readers, the command-line parameters
and the atoms table: whatever comes in, the answer is a correct result or a one-line
AETInputError (exit status 2), never a traceback, a NaN in an output or a changed input."""

import json
import math
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_aet.cli import main
from napari_aet.core import io
from napari_aet.core.errors import AETInputError

# derandomize: the same examples on every run, so the README's test command never turns red by chance
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
EXTENSIONS = [".mrc", ".st", ".tif", ".npy", ".mat", ".txt", ".rawtlt", ".csv", ".xyz"]


@FUZZ
@given(payload=st.binary(max_size=2048), ext=st.sampled_from(EXTENSIONS))
def test_readers_never_raise_anything_but_input_errors(tmp_path, payload, ext):
    path = tmp_path / f"f{ext}"
    path.write_bytes(payload)
    for reader in (lambda: io.read_tilt_series(path, angles=np.zeros(1), pixel_size=0.357),
                   lambda: io.read_volume(path, pixel_size=0.357),
                   lambda: io.read_angles(path),
                   lambda: io.read_atoms(path)):
        try:
            out = reader()
        except AETInputError as exc:
            assert "\n" not in str(exc) and str(exc)
            continue
        # whatever a reader accepts is finite
        arr = out.data if hasattr(out, "data") else (out[0][["x", "y", "z"]].to_numpy(float) if isinstance(out, tuple) else out)
        assert np.all(np.isfinite(np.asarray(arr, float)))


@FUZZ
@given(text=st.text(alphabet=string.printable, max_size=300))
def test_angle_text_is_parsed_or_refused(tmp_path, text):
    path = tmp_path / "a.txt"
    path.write_text(text)
    try:
        a = io.read_angles(path)
    except AETInputError as exc:
        assert "\n" not in str(exc)
        return
    assert a.ndim in (1, 2) and np.all(np.isfinite(a)) and len(a) > 0


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True), finite)


@FUZZ
@given(data=arrays(np.float64, st.tuples(st.integers(0, 12), st.just(3)), elements=any_float),
       species=st.lists(st.sampled_from(["Pt", "Pd", "", "X1", "Au"]), min_size=12, max_size=12))
def test_atoms_table_round_trips_or_is_refused(tmp_path, data, species):
    df = pd.DataFrame({"x": data[:, 0], "y": data[:, 1], "z": data[:, 2], "atom": 1,
                       "species": species[: len(data)]})
    try:
        io.write_atoms(tmp_path / "a.csv", df, metadata={"k": 1})
    except AETInputError as exc:
        assert "\n" not in str(exc)
        return
    back, meta = io.read_atoms(tmp_path / "a.csv")
    np.testing.assert_array_equal(back[["x", "y", "z"]].to_numpy(float), data)
    assert meta["k"] == 1 and meta["data_file"] == "a.csv"


@pytest.fixture(scope="module")
def atoms_csv(tmp_path_factory):
    """A small perfect fcc cluster (Pt, 3.924 Å) as an atoms table."""
    from ase.cluster import Octahedron

    d = tmp_path_factory.mktemp("atoms")
    at = Octahedron("Pt", 5, cutoff=1, latticeconstant=3.924)
    pos = at.positions - at.positions.mean(0)
    io.write_atoms(d / "atoms.csv", pd.DataFrame({"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "atom": 1,
                                                   "species": "Pt"}))
    return d / "atoms.csv"


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--lattice-constant", "--tolerance", "--sigma", "--grid-spacing", "--surface-coordination"]),
       value=st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e9", "abc", "1e-9"]),
                       st.floats(-20, 20, allow_nan=False).map(lambda v: f"{v:.6g}")))
def test_analyze_options_give_a_result_or_one_line(tmp_path, atoms_csv, capsys, option, value):
    out = tmp_path / "an.csv"
    out.unlink(missing_ok=True)
    before = atoms_csv.read_bytes()
    try:
        rc = main(["analyze", str(atoms_csv), "-o", str(out), "--overwrite", option, value])
    except SystemExit as exc:  # argparse refuses what is not a number of the right type
        assert exc.code == 2
        return
    err = capsys.readouterr().err.strip().splitlines()
    assert atoms_csv.read_bytes() == before
    if rc == 2:
        assert err and "error" in err[-1] and not out.exists()
        return
    assert rc == 0
    summary = json.loads(out.with_suffix(".json").read_text())  # strict JSON: no NaN written

    def finite_numbers(o):
        if isinstance(o, dict):
            return all(finite_numbers(v) for v in o.values())
        if isinstance(o, list):
            return all(finite_numbers(v) for v in o)
        return not isinstance(o, float) or math.isfinite(o)

    assert finite_numbers(summary["lattice"]) and summary["lattice"]["lattice_constant"] > 0


@FUZZ
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12)),
       scale=st.sampled_from([0.0, -1.0, 1.0, 1e30]), n_angles=st.integers(0, 8))
def test_reconstruct_inputs_refused_up_front_or_reconstructed(shape, scale, n_angles):
    from napari_aet.core.reconstruct import reconstruct

    data = np.abs(np.random.default_rng(0).normal(size=shape)).astype(np.float32) * np.float32(scale)
    angles = np.linspace(-60, 60, n_angles)
    try:
        res = reconstruct(data, angles, 0.357, iterations=3, device="cpu")
    except AETInputError as exc:
        assert "\n" not in str(exc)
        return
    assert np.all(np.isfinite(res.volume)) and np.any(res.volume != 0)


@FUZZ
@given(k=st.integers(1, 5), n=st.integers(3, 9), header=st.sampled_from([None, "euler", "other"]),
       index=st.booleans(), sep=st.sampled_from([",", " ", "\t", ";"]), pick=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_angle_tables_are_read_as_written_or_refused(tmp_path, k, n, header, index, sep, pick, seed):
    """A table is tilts (1 column) or Euler angles (3, not an index first, no other header): any
    other table is read only through a named column, and then gives exactly that column."""
    rng = np.random.default_rng(seed)
    table = np.round(rng.uniform(-80, 80, (n, k)), 3)
    table[:, min(1, k - 1)] = np.round(np.linspace(-60, 60, n), 3)  # a column spans tilts: no radians alarm
    if index:
        table[:, 0] = np.arange(n)
    names = {"euler": ["phi", "theta", "psi"], "other": [f"c{j}" for j in range(k)]}.get(header)
    lines = ([sep.join(names[:k] + [f"x{j}" for j in range(len(names), k)])] if names else [])
    lines += [sep.join(f"{v:g}" for v in row) for row in table]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    ok_whole = k == 1 or (k == 3 and header != "other" and not (header is None and index)
                          and not (header == "euler" and k != 3))
    try:
        a = io.read_angles(path)
        assert ok_whole, f"a {k}-column table read without a named column"
        np.testing.assert_allclose(a, table[:, 0] if k == 1 else table)
    except AETInputError as exc:
        assert "\n" not in str(exc)
        assert not ok_whole or "radians" in str(exc) or "direction" in str(exc), str(exc)
    if pick <= k:
        try:
            col = io.read_angles(path, column=pick)
        except AETInputError as exc:  # the picked column may look like radians (e.g. an index 0, 1, 2)
            assert "radians" in str(exc), str(exc)
        else:
            np.testing.assert_allclose(col, table[:, pick - 1])


@FUZZ
@given(text=st.one_of(st.sampled_from(["1_0", "1__0", "nan", "inf", "-Infinity", "0x1p3", "\uff11", "\u0661",
                                       "1,5", "1e", "--1", "+-2", "1.2.3", "\u00bd", "1 000"]),
                      st.text(alphabet="0123456789_.eE+-", min_size=1, max_size=6)))
def test_angle_text_takes_only_plain_real_numbers(tmp_path, text):
    import re

    path = tmp_path / "a.txt"
    path.write_text(f"-60\n{text}\n60\n")
    plain = re.fullmatch(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text) is not None
    try:
        a = io.read_angles(path)
    except AETInputError as exc:
        assert "\n" not in str(exc)
        overflow = plain and not math.isfinite(float(text))  # e.g. 1E310: a plain number beyond float range
        assert (not plain or overflow and "NaN/Inf" in str(exc) or "direction" in str(exc) or "radians" in str(exc)
                or "±180" in str(exc)), str(exc)
        return
    assert plain and a[1] == float(text)


# ---- sidecar and manifest contents (issue 26): a result or one line, never a traceback

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
SIDECAR_KEYS = {
    "volume": ["tilts", "tilts_read", "preprocessing", "alignment", "angles_deg", "pixel_size"],
    "atoms": ["analysis", "refinement", "data_file"],
    "report": ["alignment", "settings", "enhancement", "n_atoms"],
}


def _consume(kind, path, tmp_path):
    """Read a sidecar as the commands do, then use what they use from it."""
    from napari_aet import cli
    from napari_aet.core.analysis import AnalysisSummary

    if kind == "volume":
        vol = path.with_suffix(".mrc")
        cli._tilts_read_settings(vol, tmp_path / "t.mrc")
        cli._alignment_from_sidecar(vol)
        info = cli._volume_sidecar(vol)
        if info.get("angles_deg") is not None:
            np.asarray(info["angles_deg"], float)
    elif kind == "atoms":
        _, meta = io.read_atoms(path.with_suffix(".csv"))
        found = AnalysisSummary.of(meta)
        found.lattice_constant, found.crystal_rotation, found.layer_axis, found.support_normal  # noqa: B018
    else:
        rep = io.read_sidecar(path, "report")
        angles = (rep.get("alignment") or {}).get("angles_deg") or (rep.get("settings") or {}).get("angles_deg")
        if angles:
            np.asarray(angles, float)


@FUZZ
@given(kind=st.sampled_from(sorted(SIDECAR_KEYS)), data=st.data())
def test_sidecar_contents_give_a_result_or_one_line(tmp_path, kind, data):
    keys = SIDECAR_KEYS[kind]
    content = data.draw(st.dictionaries(st.sampled_from(keys), json_values, max_size=4))
    if kind == "atoms":
        io.write_atoms(tmp_path / "a.csv", pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0]}))
        path = tmp_path / "a.json"
        content["data_file"] = "a.csv"
    else:
        path = tmp_path / ("v.json" if kind == "volume" else "report.json")
    path.write_text(json.dumps(content, allow_nan=True))
    try:
        _consume(kind, path, tmp_path)
    except AETInputError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)


@FUZZ
@given(jobs=st.lists(st.dictionaries(st.sampled_from(["tilts", "name", "output", "pixel_size", "angles", "no_align"]),
                                     json_values, max_size=5), max_size=4),
       wrapped=st.booleans())
def test_manifest_contents_give_jobs_or_one_line(tmp_path, jobs, wrapped):
    import yaml

    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"jobs": jobs} if wrapped else jobs))
    out = tmp_path / "out"
    try:
        result = read_manifest(tmp_path / "m.yaml", out)
    except AETInputError as exc:
        assert "\n" not in str(exc)
        return
    for job in result:  # every accepted job writes inside the output root
        assert job["output"].startswith(str(out.resolve()) + "/")


def _valid_files(tmp_path):
    """A small tilt series in each format whose header a reader trusts, with the header's length."""
    import scipy.io
    import tifffile

    data = np.random.default_rng(0).random((3, 6, 5)).astype(np.float32)
    io.write_tilt_series(tmp_path / "v.mrc", io.TiltSeries(data, None, 0.5))
    np.save(tmp_path / "v.npy", data)
    tifffile.imwrite(tmp_path / "v.tif", data, compression="zlib")
    scipy.io.savemat(tmp_path / "v.mat", {"tilts": data, "other": np.zeros((4, 4))}, do_compression=True)
    scipy.io.savemat(tmp_path / "u.mat", {"tilts": data}, do_compression=False)
    return {name: (tmp_path / name).read_bytes() for name in ("v.mrc", "v.npy", "v.tif", "v.mat", "u.mat")}


@FUZZ
@given(name=st.sampled_from(["v.mrc", "v.npy", "v.tif", "v.mat", "u.mat"]),
       flips=st.lists(st.tuples(st.integers(0, 1279), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_headers_give_a_stack_or_one_line_before_any_large_allocation(tmp_path, monkeypatch, name, flips):
    """Issue 26 item 11: headers are checked before data is read, so a damaged header claiming any
    size gives a result or one line, and never a large allocation (this process may use 64 MiB)."""
    import tracemalloc

    from napari_aet.core import validate

    monkeypatch.setattr(validate, "available_memory", lambda device="cpu": 64 * 2**20)
    raw = bytearray(_valid_files(tmp_path)[name])
    for pos, value in flips:
        raw[pos % len(raw)] = value
    path = tmp_path / f"d{name}"
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        io.read_tilt_series(path, angles=np.zeros(3), pixel_size=0.5)
    except AETInputError as exc:
        assert "\n" not in str(exc) and str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 96 * 2**20, peak

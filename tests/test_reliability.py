"""Regression tests for bad, careless and hostile input (issue: no silent wrong result, no lost
file, no hostile input obeyed). Each case must end in one line on standard error and exit
status 2 (or a correct result), and leave every file it did not own untouched."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_aet.cli import main
from napari_aet.core import io
from napari_aet.core.errors import AETInputError


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message"
    last = err[-1]
    assert "error" in last and "Traceback" not in "\n".join(err), err
    for w in words:
        assert w.lower() in last.lower(), (w, last)
    return last


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    """A small noise-free simulation on disk (48³, ±60° in 15° steps) and its tomogram."""
    d = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(d), "--size", "1.2", "--voxels", "48", "--tilt-range", "60", "--tilt-step", "15",
                 "--dose", "0", "--seed", "3"]) == 0
    assert main(["reconstruct", str(d / "tilts.mrc"), "--iterations", "30", "--device", "cpu",
                 "-o", str(d / "VOL.mrc")]) == 0
    return d


@pytest.fixture
def work(sim_dir, tmp_path):
    """A private copy of the simulation folder, so a test may try to damage it."""
    import shutil

    d = tmp_path / "w"
    shutil.copytree(sim_dir, d)
    return d


# ------------------------------------------------------------------ silent wrong results


@pytest.mark.parametrize("transform, words", [
    (lambda a: np.zeros_like(a), ["zero everywhere"]),
    (lambda a: -a, ["mostly negative"]),
])
def test_zero_or_negated_tilt_series_is_refused(work, capsys, transform, words):
    ts = io.read_tilt_series(work / "tilts.mrc")
    ts.data = transform(ts.data)
    io.write_tilt_series(work / "bad.mrc", ts)
    assert main(["reconstruct", str(work / "bad.mrc"), "--angles", str(work / "angles.txt"), "--device", "cpu",
                 "-o", str(work / "out.mrc")]) == 2
    _one_line_error(capsys, *words)
    assert not (work / "out.mrc").exists()


@pytest.mark.parametrize("argv, words", [
    (["--method", "genfire", "--r-free", "1.5"], ["r-free", "at most 0.5"]),
    (["--thickness", "0"], ["--thickness", "at least 1"]),
    (["--thickness", "-5"], ["--thickness", "at least 1"]),
    (["--thickness", "100000"], ["--thickness", "at most"]),
    (["--iterations", "0"], ["iterations"]),
])
def test_reconstruct_settings_out_of_range(work, capsys, argv, words):
    assert main(["reconstruct", str(work / "tilts.mrc"), "--device", "cpu", "-o", str(work / "o.mrc"), *argv]) == 2
    _one_line_error(capsys, *words)


@pytest.mark.parametrize("angles, words", [
    (lambda n: np.zeros(n), ["same direction"]),
    (lambda n: np.linspace(-650, 650, n), ["±180"]),
    (lambda n: np.where(np.arange(n) % 2, 10.0, -170.0), ["same direction"]),
    (lambda n: np.c_[np.zeros(n), np.linspace(-650, 650, n), np.zeros(n)], ["±360"]),
])
def test_implausible_angles_are_refused(work, capsys, angles, words):
    n = len(io.read_angles(work / "angles.txt"))
    np.savetxt(work / "bad_angles.txt", angles(n))
    assert main(["reconstruct", str(work / "tilts.mrc"), "--angles", str(work / "bad_angles.txt"), "--device", "cpu",
                 "-o", str(work / "o.mrc")]) == 2
    _one_line_error(capsys, *words)


def test_pixel_size_in_nm_is_refused(work, capsys):
    ts = io.read_tilt_series(work / "tilts.mrc")
    import mrcfile

    with mrcfile.new(work / "nm.mrc") as m:
        m.set_data(ts.data)
        m.set_image_stack()
        m.voxel_size = 0.0357  # nm written where Å belongs
    assert main(["reconstruct", str(work / "nm.mrc"), "--angles", str(work / "angles.txt"), "-o", str(work / "o.mrc")]) == 2
    _one_line_error(capsys, "0.0357", "--pixel-size")


def test_species_must_match_the_classes(work, capsys):
    assert main(["trace", str(work / "VOL.mrc"), "--classes", "2", "--species", "Pd", "Pt", "Au",
                 "-o", str(work / "a.csv")]) == 2
    _one_line_error(capsys, "3 species", "--classes 4")


@pytest.mark.parametrize("argv, words", [
    (["--lattice-constant", "-3.9"], ["lattice constant", "at least 2"]),
    (["--support-normal", "0", "0", "0"], ["support normal", "zero"]),
    (["--grid-spacing", "-1"], ["grid spacing"]),
    (["--grid-spacing", "0.001"], ["grid spacing"]),
    (["--sigma", "-2"], ["sigma"]),
    (["--surface-coordination", "-3"], ["surface coordination"]),
    (["--tolerance", "nan"], ["tolerance"]),
])
def test_analyze_settings_out_of_range(work, capsys, argv, words):
    assert main(["analyze", str(work / "truth.csv"), "-o", str(work / "an.csv"), *argv]) == 2
    _one_line_error(capsys, *words)
    assert not (work / "an.csv").exists()


def test_enhance_refuses_a_tilt_series(work, capsys):
    assert main(["enhance", str(work / "tilts.mrc"), "--device", "cpu", "-o", str(work / "e.mrc")]) == 2
    _one_line_error(capsys, "tilt series, not a tomogram")
    assert not (work / "e.mrc").exists()


@pytest.mark.parametrize("tile", ["0", "-16", "8"])
def test_enhance_tile_is_bounded(work, capsys, tile):
    assert main(["enhance", str(work / "VOL.mrc"), "--tile", tile, "--device", "cpu", "-o", str(work / "e.mrc")]) == 2
    _one_line_error(capsys, "tile size")


@pytest.mark.parametrize("argv, words", [
    (["--vacancies", "2"], ["--vacancies", "at most 1"]),
    (["--voxels", "100000"], ["--voxels", "at most 512"]),
    (["--dose=-5"], ["--dose", "0 for noise-free"]),  # 0 is noise-free; a negative dose is a mistake
])
def test_simulate_settings_bounded(tmp_path, capsys, argv, words):
    rc = main(["simulate", str(tmp_path / "s"), "--size", "1.2", "--voxels", "48", "--tilt-step", "30", *argv])
    if words:
        assert rc == 2
        _one_line_error(capsys, *words)
    else:
        assert rc == 0


def test_trace_upsample_bounded(work, capsys):
    assert main(["trace", str(work / "VOL.mrc"), "--upsample", "50", "-o", str(work / "a.csv")]) == 2
    _one_line_error(capsys, "upsampling factor", "at most 4")


# ----------------------------------------------------------------------- weights


def _weights_copy(tmp_path, damage=None, checksum=True):
    from napari_aet.core.enhance import default_weights_path, sha256

    src = default_weights_path()
    dst = tmp_path / "w.pt"
    data = bytearray(src.read_bytes())
    if damage:
        data = damage(data)
    dst.write_bytes(bytes(data))
    if checksum:
        (tmp_path / "w.json").write_text(json.dumps({"sha256": sha256(dst)}))
    return dst


def test_weights_without_checksum_need_trust(work, tmp_path, capsys):
    w = _weights_copy(tmp_path, checksum=False)
    assert main(["enhance", str(work / "VOL.mrc"), "--weights", str(w), "--device", "cpu", "-o", str(work / "e.mrc")]) == 2
    _one_line_error(capsys, "checksum", "--trust-weights")
    assert main(["enhance", str(work / "VOL.mrc"), "--weights", str(w), "--trust-weights", "--device", "cpu",
                 "-o", str(work / "e.mrc")]) == 0
    assert np.isfinite(io.read_volume(work / "e.mrc").data).all()


def test_weights_with_nan_or_huge_tensors_are_refused_even_when_trusted(tmp_path):
    import torch

    from napari_aet.core.enhance import default_weights_path, load_weights

    payload = torch.load(default_weights_path(), weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 10)
    for value, words in ((float("nan"), "NaN"), (3.8e26, "damaged")):
        bad = {**payload, "state_dict": dict(payload["state_dict"])}
        t = bad["state_dict"][key].clone()
        t.view(-1)[3] = value
        bad["state_dict"][key] = t
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(AETInputError, match=words):
            load_weights(tmp_path / "bad.pt", trust=True)


@pytest.mark.parametrize("change, words", [
    ({"depth": 999}, "depth"), ({"base_width": 10**6}, "base_width"), ({"norm": "evil"}, "norm"),
    ({"extra_field": 1}, "unknown"),
])
def test_hostile_architecture_is_refused_before_it_is_built(tmp_path, change, words):
    import torch

    from napari_aet.core.enhance import default_weights_path, load_weights

    payload = torch.load(default_weights_path(), weights_only=True)
    payload["config"] = {**payload["config"], **change}
    torch.save(payload, tmp_path / "h.pt")
    with pytest.raises(AETInputError, match=words):
        load_weights(tmp_path / "h.pt", trust=True)


@pytest.mark.parametrize("sidecar", ["", "{not json", "[1, 2]", '"text"'])
def test_empty_weights_or_broken_sidecar_is_one_line(work, tmp_path, capsys, sidecar):
    w = tmp_path / "w.pt"
    w.write_bytes(b"" if not sidecar else _weights_copy(tmp_path, checksum=False).read_bytes())
    if sidecar:
        (tmp_path / "w.json").write_text(sidecar)
    assert main(["enhance", str(work / "VOL.mrc"), "--weights", str(w), "--trust-weights", "--device", "cpu",
                 "-o", str(work / "e.mrc")]) == 2
    _one_line_error(capsys, "empty" if not sidecar else "w.json")


def test_run_checks_the_weights_before_any_work(work, tmp_path, capsys, monkeypatch):
    import napari_aet.core.reconstruct as rc

    monkeypatch.setattr(rc, "reconstruct", lambda *a, **k: pytest.fail("reconstructed before checking the weights"))
    w = _weights_copy(tmp_path, damage=lambda d: d[: len(d) // 2])
    (tmp_path / "w.json").write_text(json.dumps({"sha256": "0" * 64}))
    assert main(["run", str(work / "tilts.mrc"), "--weights", str(w), "--device", "cpu", "-o", str(work / "r")]) == 2
    _one_line_error(capsys, "checksum")


# ------------------------------------------------------------------------ files lost


def test_trace_never_replaces_the_volumes_sidecar(work, capsys):
    assert main(["reconstruct", str(work / "tilts.mrc"), "--align", "--iterations", "5", "--device", "cpu",
                 "-o", str(work / "A.mrc")]) == 0
    before = _snapshot(work)
    for extra in ([], ["--overwrite"]):
        assert main(["trace", str(work / "A.mrc"), "--tilts", str(work / "tilts.mrc"), "--no-refine",
                     "-o", str(work / "A.csv"), *extra]) == 2
        _one_line_error(capsys, "A.json", "belongs to")
    assert _snapshot(work) == before


def test_reconstruct_never_replaces_a_simulations_meta_json(work, capsys):
    before = _snapshot(work)
    for extra in ([], ["--overwrite"]):
        assert main(["reconstruct", str(work / "tilts.mrc"), "--iterations", "3", "--device", "cpu",
                     "-o", str(work / "meta.mrc"), *extra]) == 2
        _one_line_error(capsys, "meta.json")
    assert _snapshot(work) == before


@pytest.mark.parametrize("cmd", [
    lambda w: ["reconstruct", str(w / "tilts.mrc"), "-o", str(w / "tilts.mrc"), "--overwrite"],
    lambda w: ["enhance", str(w / "VOL.mrc"), "-o", str(w / "VOL.mrc"), "--overwrite"],
    lambda w: ["analyze", str(w / "truth.csv"), "-o", str(w / "truth.csv"), "--overwrite"],
])
def test_output_may_not_be_the_input(work, capsys, cmd):
    before = _snapshot(work)
    assert main(cmd(work)) == 2
    _one_line_error(capsys, "input")
    assert _snapshot(work) == before


def test_output_a_folder_or_unwritable_is_one_line(work, tmp_path, capsys):
    (work / "dir.mrc").mkdir()
    assert main(["reconstruct", str(work / "tilts.mrc"), "-o", str(work / "dir.mrc")]) == 2
    _one_line_error(capsys, "folder")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["reconstruct", str(work / "tilts.mrc"), "--iterations", "2", "--device", "cpu",
                     "-o", str(ro / "o.mrc")]) == 3


def test_os_and_memory_errors_map_to_one_line(monkeypatch, work, capsys):
    import napari_aet.cli as cli

    def boom_os(args):
        raise OSError(28, "No space left on device", str(work / "x.mrc"))

    def boom_mem(args):
        raise MemoryError()

    for fn, code, words in ((boom_os, 3, ["no space left"]), (boom_mem, 4, ["out of memory"])):
        monkeypatch.setattr(cli, "cmd_reconstruct", fn)
        assert main(["reconstruct", str(work / "tilts.mrc"), "-o", str(work / "o.mrc")]) == code
        _one_line_error(capsys, *words)


def test_malformed_alignment_sidecar_is_one_line(work, capsys):
    (work / "VOL.json").write_text(json.dumps({"alignment": {"shifts_px": "abc", "angles_deg": [1, 2]},
                                               "data_file": "VOL.mrc"}))
    assert main(["trace", str(work / "VOL.mrc"), "--tilts", str(work / "tilts.mrc"), "-o", str(work / "t.csv")]) == 2
    _one_line_error(capsys, "alignment", "malformed")
    (work / "VOL.json").write_text("[1, 2, 3]")
    assert main(["trace", str(work / "VOL.mrc"), "--tilts", str(work / "tilts.mrc"), "-o", str(work / "t.csv")]) == 2
    _one_line_error(capsys, "not an object")


def test_outputs_follow_the_umask(work):
    old = os.umask(0o022)
    try:
        io.write_json(work / "m.json", {"a": 1})
        io.write_volume(work / "m.mrc", np.ones((4, 4, 4), np.float32), 0.357)
    finally:
        os.umask(old)
    for name in ("m.json", "m.mrc"):
        assert (work / name).stat().st_mode & 0o777 == 0o644, name


# ------------------------------------------------------------------------ runs as a unit


def _run(ts, out, **kw):
    from napari_aet.core.pipeline import run_pipeline

    kw = {"align_first": False, "enhance": False, "refine": False, "figures": False, "device": "cpu"} | kw
    return run_pipeline(ts, out, **kw)


def test_interrupted_run_leaves_the_folder_alone_and_resumes(work, monkeypatch):
    import napari_aet.core.analysis as an

    ts = io.read_tilt_series(work / "tilts.mrc")
    out = work / "run"
    real = an.analyze_atoms

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(an, "analyze_atoms", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(ts, out)
    # nothing half-done in the results folder: the finished stages wait in the work folder
    assert sorted(p.name for p in out.iterdir()) == [".napari-aet-partial"]
    progress = json.loads((out / ".napari-aet-partial" / "progress.json").read_text())
    assert set(progress["stages"]) == {"reconstruct", "trace_refine"}
    # --resume continues from the analysis without reconstructing again
    import napari_aet.core.reconstruct as rc

    monkeypatch.setattr(an, "analyze_atoms", real)
    monkeypatch.setattr(rc, "reconstruct", lambda *a, **k: pytest.fail("reconstructed again"))
    rep = _run(ts, out, resume=True)
    assert rep["resumed"] and rep["n_atoms"] > 50
    assert sorted(p.name for p in out.iterdir()) == ["atoms.csv", "atoms.json", "report.json", "tomogram.mrc"]
    # resuming with other data is refused
    with pytest.raises(AETInputError, match="no interrupted run"):
        _run(ts, out, resume=True)


def test_resume_refuses_other_settings(work, monkeypatch):
    import napari_aet.core.analysis as an

    ts = io.read_tilt_series(work / "tilts.mrc")
    monkeypatch.setattr(an, "analyze_atoms", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _run(ts, work / "run")
    with pytest.raises(AETInputError, match="other data or settings"):
        _run(ts, work / "run", resume=True, refine=True)


def test_rerun_without_the_network_leaves_no_stale_enhanced_tomogram(work, monkeypatch):
    ts = io.read_tilt_series(work / "tilts.mrc")
    out = work / "run"
    import napari_aet.core.enhance as en

    monkeypatch.setattr(en, "enhance_volume", lambda vol, *a, **k: vol * 1.0)  # fast stand-in for the U-Net
    _run(ts, out, enhance=True)
    assert (out / "tomogram_enhanced.mrc").exists()
    _run(ts, out, enhance=False)
    assert not (out / "tomogram_enhanced.mrc").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["enhance"] is False and "enhancement" not in report


def test_cli_run_changes_nothing_outside_its_folder(work, capsys):
    before = _snapshot(work)
    assert main(["run", str(work / "tilts.mrc"), "--no-align", "--no-enhance", "--no-refine", "--device", "cpu",
                 "-o", str(work / "res")]) == 0
    after = _snapshot(work)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.startswith("res/") for k in changed), changed
    assert {"report.json", "atoms.csv", "tomogram.mrc"} <= {Path(k).name for k in changed}
    assert not (work / "res" / ".napari-aet-partial").exists()


# ------------------------------------------------------------------------------ batch


def test_batch_paths_and_no_overwrite(work, tmp_path, monkeypatch):
    from napari_aet.core.batch import read_manifest, run_job

    (work / "jobs").mkdir()
    (work / "jobs" / "m.csv").write_text("tilts,output\n../tilts.mrc,out1\n")
    monkeypatch.chdir(tmp_path)
    jobs = read_manifest(work / "jobs" / "m.csv", "bt")
    # inputs relative to the manifest, outputs relative to -o (itself relative to the current folder)
    assert jobs[0]["tilts"] == str((work / "tilts.mrc").resolve())
    assert jobs[0]["output"] == str((tmp_path / "bt" / "out1").resolve())
    # a folder holding another run's files is not overwritten without --overwrite
    out = Path(jobs[0]["output"])
    out.mkdir(parents=True)
    (out / "atoms.csv").write_text("precious")
    res = run_job(jobs[0])
    assert res["status"] == "failed" and "--overwrite" in res["reason"]
    assert (out / "atoms.csv").read_text() == "precious"


@pytest.mark.parametrize("text, suffix, words", [
    ("tilts,pixel_size\na.mrc,abc\n", ".csv", "not a number"),
    ("just a string\n", ".yaml", "not a list of jobs"),
    ("- 1\n- 2\n", ".yaml", "not a list of jobs"),
])
def test_bad_manifests_are_one_line(tmp_path, text, suffix, words):
    from napari_aet.core.batch import read_manifest

    m = tmp_path / f"m{suffix}"
    m.write_text(text)
    with pytest.raises(AETInputError, match=words):
        read_manifest(m, tmp_path / "out")


@pytest.mark.parametrize("config, words", [
    ({"unet": {"depth": 999}}, "depth"), ({"voxels": 100000}, "voxels"), ({"batch_size": 0}, "batch_size"),
    ({"lr": float("nan")}, "lr"),
])
def test_hostile_training_configs_are_refused_before_any_work(tmp_path, config, words):
    from napari_aet.core.training import load_config

    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(AETInputError, match=words):
        load_config(tmp_path / "c.json")


def test_refine_iterations_bounded(work, capsys):
    assert main(["trace", str(work / "VOL.mrc"), "--tilts", str(work / "tilts.mrc"), "--refine-iterations", "-1",
                 "-o", str(work / "t.csv")]) == 2
    _one_line_error(capsys, "refinement iterations")


# ------------------------------------------------------------- never worse than no network


def test_data_consistency_accepts_a_faithful_tomogram_and_rejects_erased_atoms(work):
    from napari_aet.core.enhance import data_consistency

    ts = io.read_tilt_series(work / "tilts.mrc")
    rec = io.read_volume(work / "VOL.mrc").data
    same = data_consistency(rec, rec * 3.0, ts.data, ts.angles)  # a scale alone changes nothing
    assert same["network_accepted"] and same["r_factor_enhanced"] == pytest.approx(same["r_factor_reconstruction"], rel=1e-3)
    erased = rec.copy()
    erased[:, :24, :] = 0  # half the particle gone
    bad = data_consistency(rec, erased, ts.data, ts.angles)
    assert not bad["network_accepted"] and bad["r_factor_enhanced"] > 2 * bad["r_factor_reconstruction"]


def test_the_network_is_refused_on_data_noisier_than_it_was_validated_on():
    """The noise ratio grows as the dose falls; a tilt series beyond the validated limit is
    refused (with the reason and the fix), one within it accepted, whatever the R-factors."""
    from napari_aet.core.enhance import NOISE_RATIO_LIMIT, data_consistency, projection_noise_ratio
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import simulate

    ratios, verdicts = [], []
    for dose in (2e4, 1e3, 100):
        sim = simulate(size=1.6, n_voxels=64, pixel_size=0.357, tilt_range=60, tilt_step=15, seed=3, dose=dose)
        ts = sim.tilt_series
        ratios.append(projection_noise_ratio(ts.data, 0.357, 0.357))
        rec = reconstruct(ts.data, ts.angles, 0.357, iterations=20, device="cpu").volume
        verdicts.append(data_consistency(rec, rec, ts.data, ts.angles, pixel_size=0.357, training_pixel_size=0.357))
    assert ratios[0] < ratios[1] < ratios[2]
    assert ratios[0] < NOISE_RATIO_LIMIT < ratios[2]
    assert verdicts[0]["network_accepted"] and verdicts[0]["reason"] is None
    assert not verdicts[2]["network_accepted"] and "--denoise bm3d" in verdicts[2]["reason"]


def test_run_traces_the_plain_tomogram_when_the_network_breaks_consistency(work, monkeypatch):
    import napari_aet.core.enhance as en

    def eraser(vol, *a, **k):
        out = vol.copy()
        out[:, : vol.shape[1] // 2, :] = 0
        return out

    monkeypatch.setattr(en, "enhance_volume", eraser)
    ts = io.read_tilt_series(work / "tilts.mrc")
    rep = _run(ts, work / "run", enhance=True)
    enh = rep["enhancement"]
    assert not enh["consistency"]["network_accepted"] and "plain" in enh["note"]
    assert rep["traced_tomogram"] == "tomogram.mrc"
    assert (work / "run" / "tomogram_enhanced.mrc").exists() and (work / "run" / "tomogram.mrc").exists()
    # the atoms come from the plain tomogram: all of the particle, not half of it
    plain = _run(ts, work / "plain")
    assert abs(rep["n_atoms"] - plain["n_atoms"]) <= 0.02 * plain["n_atoms"]


def test_enhance_reports_the_r_factor_before_and_after(work, capsys):
    assert main(["reconstruct", str(work / "tilts.mrc"), "--iterations", "30", "--device", "cpu",
                 "-o", str(work / "R.mrc")]) == 0
    capsys.readouterr()
    assert main(["enhance", str(work / "R.mrc"), "--device", "cpu", "-o", str(work / "E.mrc")]) == 0
    err = capsys.readouterr().err
    side = json.loads((work / "E.json").read_text())
    c = side["consistency"]
    assert c is not None and side["data_file"] == "E.mrc" and side["tilts"].endswith("tilts.mrc")
    assert f"{c['r_factor_reconstruction']:.4f}" in err and f"{c['r_factor_enhanced']:.4f}" in err


# ------------------------------------------- issue 26: silent wrong results and lost files

_HOLD = """
import sys, time
from napari_aet.core.locks import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Start another process holding the lock on a folder; yields a function folder -> Popen."""
    import subprocess
    import sys

    procs = []

    def start(folder):
        p = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Training pairs of a tiny config (32³, 2 + 1 pairs), and the config file."""
    from napari_aet.core.training import TrainingConfig, generate_dataset

    d = tmp_path_factory.mktemp("tiny")
    cfg = dict(voxels=32, n_train=2, n_val=1, chunk_size=2, size_range=(0.8, 1.0), crop=16, batch_size=2,
               epochs=1, recon_iterations=3, bn_recalibration_batches=0,
               unet={"depth": 2, "base_width": 4, "norm": "batch", "activation": "silu"})
    (d / "cfg.json").write_text(json.dumps(cfg))
    generate_dataset(TrainingConfig(**cfg), d / "data")
    return d


def _analysed_run(work):
    """A folder like run's, with an analysed atoms.csv (enough for 'figures')."""
    from napari_aet.core.analysis import analyze_atoms

    (work / "R").mkdir()
    table, summary = analyze_atoms(io.read_atoms(work / "truth.csv")[0])
    io.write_atoms(work / "R" / "atoms.csv", table, metadata={"analysis": summary})
    return work / "R"


@pytest.mark.parametrize("argv", [
    lambda w, o, d: ["run", str(w / "tilts.mrc"), "--no-align", "--no-enhance", "--no-refine", "-o", str(o)],
    lambda w, o, d: ["run", str(w / "tilts.mrc"), "--resume", "-o", str(o)],
    lambda w, o, d: ["simulate", str(o), "--voxels", "48"],
    lambda w, o, d: ["generate-data", str(d / "cfg.json"), "-o", str(o)],
    lambda w, o, d: ["train", str(d / "cfg.json"), "--data", str(d / "data"), "--device", "cpu", "-o", str(o)],
    lambda w, o, d: ["figures", str(_analysed_run(w)), "--only", "e_fcc_layers", "-o", str(o)],
])
def test_a_second_writer_is_refused_with_the_holders_pid(work, tiny_data, holder, capsys, argv):
    out = work / "OUT"
    out.mkdir()
    (out / "keep.txt").write_text("the first run's")
    cmd = argv(work, out, tiny_data)
    p = holder(out)
    before = _snapshot(out)
    assert main(cmd) == 3
    _one_line_error(capsys, f"PID {p.pid}", "another")
    assert _snapshot(out) == before  # nothing written, nothing removed (the lock file is the holder's)


def test_a_batch_job_in_a_folder_being_written_fails_with_the_pid(work, holder):
    from napari_aet.core.batch import run_job

    p = holder(work / "job")
    job = {"name": "j", "tilts": str(work / "tilts.mrc"), "angles": None, "pixel_size": None,
           "output": str(work / "job"), "align": False, "enhance": False, "refine": False}
    res = run_job(job)
    assert res["status"] == "failed" and f"PID {p.pid}" in res["reason"]


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path, holder, capsys):
    from napari_aet.core.locks import LOCK_NAME

    out = tmp_path / "sim"
    p = holder(out)
    p.kill()  # SIGKILL: no clean-up ran, the lock file with its PID stays
    p.wait()
    assert (out / LOCK_NAME).read_text().split()[0] == str(p.pid)
    assert main(["simulate", str(out), "--size", "0.8", "--voxels", "48", "--tilt-step", "30", "--dose", "0"]) == 0
    assert (out / "tilts.mrc").exists() and not (out / LOCK_NAME).exists()  # released and removed


def test_the_lock_is_one_writer_across_threads_and_reentrant_in_one(tmp_path):
    import threading

    from napari_aet.core.locks import FolderInUse, output_lock

    errors = []
    with output_lock(tmp_path / "o"):
        with output_lock(tmp_path / "o"):  # the command and the stage it calls
            pass
        t = threading.Thread(target=lambda: errors.append(pytest.raises(FolderInUse, output_lock(tmp_path / "o").__enter__)))
        t.start()
        t.join()
    assert errors
    with output_lock(tmp_path / "new" / "deep"):
        pass
    assert not (tmp_path / "new").exists()  # created for the lock, nothing written: removed again


def test_generate_data_refuses_data_of_another_config(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "data", data)
    before = _snapshot(data)
    other = json.loads((tiny_data / "cfg.json").read_text()) | {"seed": 7}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["generate-data", str(tmp_path / "other.json"), "-o", str(data)]) == 2
    _one_line_error(capsys, "another config", "seed", "--overwrite")
    assert _snapshot(data) == before
    # the folder's own config given back to it resumes (nothing new); with --overwrite it may not be replaced
    assert main(["generate-data", str(data / "config.json"), "-o", str(data)]) == 0
    assert _snapshot(data) == before
    assert main(["generate-data", str(data / "config.json"), "-o", str(data), "--overwrite"]) == 2
    _one_line_error(capsys, "input")
    assert _snapshot(data) == before
    # an unrelated config.json is not replaced; chunks with no config are not extended
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "config.json").write_text('{"project": "something else"}')
    (tmp_path / "v").mkdir()
    shutil.copy(data / "train_00000.npz", tmp_path / "v")
    for folder, words in (("u", "no training config"), ("v", "no config.json")):
        snap = _snapshot(tmp_path / folder)
        assert main(["generate-data", str(tiny_data / "cfg.json"), "-o", str(tmp_path / folder)]) == 2
        _one_line_error(capsys, words, "--overwrite")
        assert _snapshot(tmp_path / folder) == snap


def test_generate_data_overwrite_starts_clean(tiny_data, tmp_path):
    import shutil

    from napari_aet.core.training import TrainingConfig, generate_dataset

    data = tmp_path / "data"
    shutil.copytree(tiny_data / "data", data)
    (data / "train_00007.npz").write_bytes(b"a chunk of an older, larger run")
    other = json.loads((tiny_data / "cfg.json").read_text()) | {"seed": 7, "n_train": 1, "chunk_size": 1}
    s = generate_dataset(TrainingConfig(**other), data, overwrite=True)
    assert s["new_chunks"] == s["chunks"] == 2
    assert sorted(p.name for p in data.iterdir()) == ["config.json", "train_00000.npz", "val_00000.npz"]
    assert json.loads((data / "config.json").read_text())["seed"] == 7


@pytest.mark.parametrize("argv, env, words", [
    (["--max-minutes", "inf"], {}, ["--max-minutes", "finite"]),
    (["--max-minutes", "-1"], {}, ["--max-minutes", "above 0"]),
    (["--max-minutes", "0"], {}, ["--max-minutes", "above 0"]),
    (["--max-minutes", "nan"], {}, ["--max-minutes"]),
    ([], {"RANK": "1"}, ["RANK=1", "torchrun"]),
    ([], {"RANK": "abc"}, ["RANK", "whole number"]),
    ([], {"WORLD_SIZE": "2", "RANK": "0"}, ["MASTER_ADDR", "torchrun"]),
    ([], {"WORLD_SIZE": "2", "RANK": "2"}, ["RANK=2", "WORLD_SIZE=2"]),
    ([], {"LOCAL_RANK": "-1"}, ["LOCAL_RANK"]),
])
def test_train_refuses_settings_that_train_nothing(tiny_data, tmp_path, capsys, monkeypatch, argv, env, words):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["train", str(tiny_data / "cfg.json"), "--data", str(tiny_data / "data"), "--device", "cpu",
                 "-o", str(tmp_path / "run"), *argv]) == 2
    _one_line_error(capsys, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, words", [
    ({"max_minutes": float("inf")}, "max_minutes"), ({"max_minutes": -1}, "max_minutes"),
    ({"epochs": 0}, "epochs 0"), ({"weight_decay": -1}, "weight_decay"), ({"tilt_range": [80, 10]}, "tilt_range"),
    ({"dose_range": [0, 1e5]}, "dose_range"), ({"shapes": ["cube"]}, "shapes"), ({"seed": -3}, "seed"),
])
def test_train_config_values_that_train_nothing_are_refused(tiny_data, tmp_path, capsys, change, words):
    cfg = json.loads((tiny_data / "cfg.json").read_text()) | change
    (tmp_path / "c.json").write_text(json.dumps(cfg))  # Python's json writes inf as Infinity, and reads it back
    assert main(["train", str(tmp_path / "c.json"), "--data", str(tiny_data / "data"), "--device", "cpu",
                 "-o", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, words)
    assert not (tmp_path / "run").exists()


def test_training_that_does_not_improve_saves_nothing_and_fails(tiny_data, tmp_path, capsys, monkeypatch):
    import napari_aet.core.training as tr

    monkeypatch.setattr(tr, "_train_step", lambda *a, **k: 0.0)  # steps that change nothing (as lr 0 did)
    assert main(["train", str(tiny_data / "cfg.json"), "--data", str(tiny_data / "data"), "--device", "cpu",
                 "-o", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "did not lower the validation loss", "no weights saved")
    assert not (tmp_path / "run" / "weights.pt").exists() and not (tmp_path / "run" / "weights.json").exists()
    assert (tmp_path / "run" / "log.jsonl").exists()  # the log says what happened


def test_train_never_replaces_its_initial_weights(tiny_data, tmp_path, capsys):
    import shutil

    w = tmp_path / "w"
    w.mkdir()
    from napari_aet.core.enhance import default_weights_path

    shutil.copy(default_weights_path(), w / "weights.pt")
    shutil.copy(default_weights_path().with_suffix(".json"), w / "weights.json")
    before = _snapshot(w)
    assert main(["train", str(tiny_data / "cfg.json"), "--data", str(tiny_data / "data"), "--device", "cpu",
                 "--init-weights", str(w / "weights.pt"), "-o", str(w)]) == 2
    _one_line_error(capsys, "input")
    assert _snapshot(w) == before


def test_an_angles_file_found_beside_the_tilts_is_never_replaced(work, capsys):
    import shutil

    shutil.copy(work / "tilts.mrc", work / "T.mrc")
    shutil.copy(work / "angles.txt", work / "T.csv")  # found beside T.mrc: T.rawtlt/.tlt/.txt/.csv
    before = _snapshot(work)
    for extra in ([], ["--overwrite"]):
        assert main(["trace", str(work / "VOL.mrc"), "--tilts", str(work / "T.mrc"), "--no-refine",
                     "-o", str(work / "T.csv"), *extra]) == 2
        _one_line_error(capsys, "T.csv")
    assert _snapshot(work) == before


def test_run_never_replaces_an_input_it_found_in_its_folder(work, capsys):
    import shutil

    out = work / "OUT"
    out.mkdir()
    shutil.copy(work / "tilts.mrc", out / "atoms.mrc")
    shutil.copy(work / "angles.txt", out / "atoms.csv")  # found beside atoms.mrc, and run writes atoms.csv
    before = _snapshot(work)
    assert main(["run", str(out / "atoms.mrc"), "--no-align", "--no-enhance", "--no-refine", "--device", "cpu",
                 "--overwrite", "-o", str(out)]) == 2
    _one_line_error(capsys, "atoms.csv", "input")
    assert _snapshot(work) == before


def test_simulate_never_replaces_the_angles_it_read(work, capsys):
    out = work / "S"
    out.mkdir()
    (out / "angles.txt").write_text("-60\n-30\n0\n30\n60\n")
    before = _snapshot(out)
    assert main(["simulate", str(out), "--angles", str(out / "angles.txt"), "--overwrite", "--voxels", "32"]) == 2
    _one_line_error(capsys, "input")
    assert _snapshot(out) == before


def test_no_write_lands_on_a_file_read_even_through_a_link(tmp_path):
    from napari_aet.core.locks import tracking_inputs

    io.write_angles(tmp_path / "a.txt", np.linspace(-60, 60, 5))
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    with tracking_inputs():
        io.read_angles(tmp_path / "a.txt")
        for target in (tmp_path / "a.txt", tmp_path / "link.txt"):
            with pytest.raises(AETInputError, match="input"):
                io.write_angles(target, np.zeros(5))
        io.write_angles(tmp_path / "b.txt", np.zeros(5))  # anything else is written
    io.write_angles(tmp_path / "a.txt", np.zeros(5))  # outside a command (the viewer's editor) it may be saved over


def test_figures_refuse_to_replace_figures_without_overwrite(work, capsys):
    run = _analysed_run(work)
    argv = ["figures", str(run), "--only", "e_fcc_layers", "-o", str(work / "F")]
    assert main(argv) == 0
    before = _snapshot(work / "F")
    assert set(before) == {"e_fcc_layers.png", "e_fcc_layers.svg"}
    assert main(argv) == 2
    _one_line_error(capsys, "e_fcc_layers.png", "--overwrite")
    assert _snapshot(work / "F") == before
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("text, words", [
    ("0,-60,2.5\n1,-30,2.5\n2,0,2.5\n3,30,2.5\n4,60,2.5\n", ["first counts 0, 1, 2", "--angle-column"]),
    ("index,angle,dose\n0,-60,2.5\n1,-30,2.5\n2,0,2.5\n3,30,2.5\n4,60,2.5\n", ["index, angle, dose", "--angle-column"]),
    ("1 -60\n2 -30\n3 0\n4 30\n5 60\n", ["2 values", "--angle-column"]),
    ("-60 1 2 3\n-30 1 2 3\n0 1 2 3\n30 1 2 3\n60 1 2 3\n", ["4 values", "--angle-column"]),
    ("-60\n-30\n1_0\n30\n60\n", ["line 3", "plain numbers"]),
    ("-60\n-30\n\uff10\n30\n60\n", ["line 3", "plain numbers"]),
    ("-60\n-30\nnan\n30\n60\n", ["line 3", "plain numbers"]),
    ("-60\n-30\n0x10\n30\n60\n", ["line 3", "plain numbers"]),
])
def test_angle_tables_read_the_wrong_way_are_refused(work, capsys, text, words):
    (work / "A.csv").write_text(text)
    assert main(["reconstruct", str(work / "tilts.mrc"), "--angles", str(work / "A.csv"), "--iterations", "2",
                 "--device", "cpu", "-o", str(work / "o.mrc")]) == 2
    _one_line_error(capsys, *words)
    assert not (work / "o.mrc").exists()


def test_an_angle_column_picks_the_tilts_out_of_a_table(work):
    angles = io.read_angles(work / "angles.txt")
    n = len(angles)
    (work / "t.csv").write_text("index,angle,dose\n" + "".join(f"{k},{a},2.5\n" for k, a in enumerate(angles)))
    (work / "u.txt").write_text("".join(f"{k + 1} {a}\n" for k, a in enumerate(angles)))
    for path, column in ((work / "t.csv", "angle"), (work / "t.csv", "2"), (work / "u.txt", 2)):
        ts = io.read_tilt_series(work / "tilts.mrc", angles=path, angle_column=column)
        np.testing.assert_allclose(ts.angles, angles)
    with pytest.raises(AETInputError, match="no column 'dose2'"):
        io.read_angles(work / "t.csv", column="dose2")
    (work / "e.csv").write_text("phi theta psi\n" + "".join(f"0 {a} 0\n" for a in angles))
    assert io.read_angles(work / "e.csv").shape == (n, 3)  # a header naming Euler angles reads as Euler angles
    assert io.read_angles(work / "u.txt", column="2").shape == (n,)


@pytest.mark.parametrize("arr, words", [
    (np.linspace(-60, 60, 5) + 1j, "complex"),
    (np.ones(5, bool), "boolean"),
    (np.array(["-60", "0", "60"]), "text"),
    (np.c_[np.arange(5), np.linspace(-60, 60, 5)], "--angle-column"),
])
def test_angle_arrays_that_are_not_plain_real_numbers_are_refused(tmp_path, arr, words):
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(AETInputError, match=words):
        io.read_angles(tmp_path / "a.npy")


def _anisotropic_mrc(path, data, sizes, stack=True):
    import mrcfile

    with mrcfile.new(path) as m:
        m.set_data(data)
        if stack:
            m.set_image_stack()
        m.voxel_size = sizes


def test_anisotropic_pixels_are_refused_not_read_with_the_x_size(work, capsys):
    ts = io.read_tilt_series(work / "tilts.mrc")
    _anisotropic_mrc(work / "an.mrc", ts.data, (0.357, 0.5, 0.357))
    import shutil

    shutil.copy(work / "angles.txt", work / "an.txt")
    assert main(["reconstruct", str(work / "an.mrc"), "--iterations", "2", "--device", "cpu",
                 "-o", str(work / "o.mrc")]) == 2
    _one_line_error(capsys, "non-square", "x 0.357", "y 0.5")
    with pytest.warns(UserWarning, match="differ"):  # a given size overrides the header, with a word
        assert io.read_tilt_series(work / "an.mrc", pixel_size=0.357).pixel_size == 0.357
    _anisotropic_mrc(work / "vol.mrc", np.ones((8, 8, 8), np.float32), (0.357, 0.357, 0.8), stack=False)
    with pytest.raises(AETInputError, match="non-square voxels"):
        io.read_volume(work / "vol.mrc")


def test_a_tiff_with_unequal_x_and_y_resolution_is_refused(tmp_path):
    import tifffile

    data = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32) + 0.1
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, resolution=(1 / 0.357, 1 / 0.5),
                     metadata={"unit": "angstrom"})
    with pytest.raises(AETInputError, match="non-square pixels"):
        io.read_tilt_series(tmp_path / "t.tif", angles=np.linspace(-60, 60, 5))
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, resolution=(1 / 0.357, 1 / 0.357),
                     metadata={"unit": "angstrom"})
    assert io.read_tilt_series(tmp_path / "s.tif", angles=np.linspace(-60, 60, 5)).pixel_size == pytest.approx(0.357)


def test_a_planted_link_as_lock_file_is_not_followed(tmp_path):
    from napari_aet.core.locks import LOCK_NAME, output_lock

    (tmp_path / "precious.txt").write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_NAME).symlink_to(tmp_path / "precious.txt")
    with pytest.raises(OSError):
        with output_lock(tmp_path / "out"):
            pass
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("argv", [["--pixel-size", "0_357"], ["--iterations", "1_0"], ["--tilt-axis-angle", "\uff11"]])
def test_number_options_take_only_plain_numbers(work, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", str(work / "tilts.mrc"), "-o", str(work / "o.mrc"), *argv])
    assert exc.value.code == 2
    assert "not a plain number" in capsys.readouterr().err
    assert not (work / "o.mrc").exists()


def test_a_manifest_pixel_size_is_a_plain_number(tmp_path):
    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.csv").write_text("tilts,pixel_size\na.mrc,0_357\n")
    with pytest.raises(AETInputError, match="not a number"):
        read_manifest(tmp_path / "m.csv", tmp_path / "out")


def test_a_tiff_with_unequal_resolutions_in_any_unit_is_refused(tmp_path):
    import tifffile

    data = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32) + 0.1
    tifffile.imwrite(tmp_path / "t.tif", data, resolution=(100, 140))  # no ImageJ unit: the ratio still tells
    with pytest.raises(AETInputError, match="non-square pixels"):
        io.read_tilt_series(tmp_path / "t.tif", angles=np.linspace(-60, 60, 5), pixel_size=None,
                            require_pixel_size=False)


def test_train_never_resumes_another_networks_checkpoint(tiny_data, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["train", str(tiny_data / "cfg.json"), "--data", str(tiny_data / "data"), "--device", "cpu",
                 "-o", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "checkpoint.pt", "cannot be resumed")


# ---- issue 26: manifests (escape, aliases, plain values, size, linear time)

@pytest.mark.parametrize("row", [
    "name,tilts\n../../../x,a.mrc\n",
    "name,tilts\n..,a.mrc\n",
    "tilts,output\na.mrc,../../x\n",
    "tilts,output\na.mrc,/tmp/elsewhere\n",
    "tilts,output\na.mrc,.\n",
    "tilts,output\na.mrc,sub/../../x\n",
])
def test_batch_job_folders_stay_inside_the_output_root(tmp_path, row):
    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.csv").write_text(row)
    with pytest.raises(AETInputError, match="inside the output folder|plain folder name") as info:
        read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_batch_nested_output_inside_the_root_is_fine(tmp_path):
    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.csv").write_text("tilts,output\na.mrc,group1/a\n")
    (job,) = read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert job["output"] == str((tmp_path / "out" / "group1" / "a").resolve())


@pytest.mark.parametrize("text, words", [
    ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
     'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\njobs:\n  - tilts: a.mrc\n    name: *c\n', "aliases"),
    ("- tilts: a.mrc\n  pixel_size: [1, 2]\n", "not a plain value"),
    ("- tilts: {x: 1}\n", "not a plain value"),
    ("- tilts: a.mrc\n  pixel_size: " + "1" * 5001 + "\n", "over 19 digits|cannot read"),
    ("- tilts: a.mrc\n  pixel_size: 1e400\n", "outside"),
    ("- tilts: a.mrc\n  pixel_size: -0.3\n", "outside"),
    ("- tilts: \"a\\0b.mrc\"\n", "NUL"),
], ids=["alias-bomb", "list", "table", "5001-digits", "1e400", "negative", "nul"])
def test_yaml_manifest_values_are_plain_and_bounded(tmp_path, text, words):
    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(AETInputError, match=words) as info:
        read_manifest(tmp_path / "m.yaml", tmp_path / "out")
    assert "\n" not in str(info.value)


def test_a_huge_manifest_is_refused_before_reading(tmp_path, monkeypatch):
    from napari_aet.core import batch

    monkeypatch.setattr(batch, "MANIFEST_MAX_BYTES", 1000)
    (tmp_path / "m.csv").write_text("tilts\n" + "a.mrc\n" * 400)
    with pytest.raises(AETInputError, match="split it"):
        batch.read_manifest(tmp_path / "m.csv", tmp_path / "out")
    fifo = tmp_path / "m2.csv"
    os.mkfifo(fifo)  # a FIFO would block a reader forever
    with pytest.raises(AETInputError, match="not a regular file"):
        batch.read_manifest(fifo, tmp_path / "out")


def test_a_long_manifest_reads_in_near_linear_time(tmp_path):
    """2x10^4 jobs, all named 'tilts' in their own folders: the duplicate checks are sets, not
    a scan per job (19 s before). A bound for a quadratic regression, not a speed target."""
    import time

    from napari_aet.core.batch import read_manifest

    n = 20_000
    (tmp_path / "m.csv").write_text("tilts\n" + "".join(f"d{k}/tilts.mrc\n" for k in range(n)))
    t0 = time.perf_counter()
    jobs = read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert len(jobs) == n and len({j["output"] for j in jobs}) == n
    small = tmp_path / "s.csv"
    small.write_text("tilts\n" + "".join(f"d{k}/tilts.mrc\n" for k in range(n // 10)))
    t1 = time.perf_counter()
    read_manifest(small, tmp_path / "out")
    t_small = time.perf_counter() - t1
    # 10x the jobs: quadratic code takes ~100x as long, linear ~10x; 40x leaves room for noise
    assert (t1 - t0) < 40 * t_small + 1.0, (t1 - t0, t_small)


@pytest.mark.parametrize("evil", ["=cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\",\"y\")", "+1+cmd", "-2+3+cmd|x",
                                  "@SUM(A1:A2)", "\t=1+1"])
def test_atoms_csv_is_safe_to_open_in_a_spreadsheet(tmp_path, evil):
    """Text cells and column names that a spreadsheet would run as formulas are written behind a
    quote (CSV injection) and read back as they were."""
    import pandas as pd

    table = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "z": [0.0, 1.0], "species": [evil, "Pt"],
                          evil: ["a", evil], "note": [evil, "-1.5"]})
    io.write_atoms(tmp_path / "a.csv", table)
    import csv

    with open(tmp_path / "a.csv", newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not any(c[:1] in "=+-@\t\r" and c.strip() not in ("-1.5",) for c in cells if c), cells
    back, _ = io.read_atoms(tmp_path / "a.csv")
    assert back["species"].tolist()[0] == evil and back["note"].tolist() == [evil, "-1.5"]
    name = evil.strip()  # column names are stripped on every read and write
    assert name in back.columns and back[name].tolist() == ["a", evil]


# ---- issue 26 item 15: every JSON read back has a schema, one line naming the file and field

def _run_cli(args):
    import contextlib
    import io as _io

    err = _io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


@pytest.mark.parametrize("sidecar, field", [
    ({"preprocessing": "abc"}, "preprocessing"),
    ({"preprocessing": {"tilt_axis": {"tilt_axis_angle_deg": "left"}}}, "preprocessing.tilt_axis"),
    ({"angles_deg": "0,1,2"}, "angles_deg"),
    ({"angles_deg": [[0, 1], [2, 3, 4]]}, "angles_deg"),
    ({"angles_deg": [0, float("nan")]}, "angles_deg"),
    ({"tilts": 12345}, "tilts"),
    ({"tilts_read": {"stack_axis": "first"}}, "tilts_read.stack_axis"),
    ({"alignment": {"shifts_px": "none"}}, "alignment.shifts_px"),
    ({"alignment": [1, 2]}, "alignment"),
])
def test_a_damaged_tomogram_sidecar_is_one_line(tmp_path, sidecar, field):
    vol = tmp_path / "vol.mrc"
    io.write_volume(vol, np.zeros((8, 8, 8), np.float32), 0.5)
    (tmp_path / "vol.json").write_text(json.dumps(sidecar))
    ts = tmp_path / "t.mrc"
    io.write_tilt_series(ts, io.TiltSeries(np.zeros((3, 8, 8), np.float32), np.array([-10.0, 0, 10]), 0.5),
                         write_angles_file=True)
    for args in (["trace", str(vol), "--tilts", str(ts), "-o", str(tmp_path / "a.csv")],
                 ["enhance", str(vol), "-o", str(tmp_path / "e.mrc")]):
        code, err = _run_cli(args)
        assert code == 2, (args[0], err)
        line = err.strip()
        assert "\n" not in line and "vol.json" in line and field in line, (args[0], line)


@pytest.mark.parametrize("report, atoms_meta, words", [
    ("[1, 2]", None, "not an object"),
    ('{"settings": {"angles_deg": "abc"}}', None, "settings.angles_deg"),
    ('{"alignment": {"angles_deg": [0, "x"]}}', None, "alignment.angles_deg"),
    ("{not json", None, "not valid JSON"),
    (None, {"analysis": "x"}, "analysis"),
    (None, {"analysis": {"lattice": {"lattice_constant": 3.9, "crystal_rotation": [[1, 0], [0, 1]]}}},
     "crystal_rotation"),
    (None, {"refinement": {"r_factor_after": "low"}}, "refinement.r_factor_after"),
])
def test_a_damaged_report_or_atoms_sidecar_is_one_line(tmp_path, report, atoms_meta, words):
    import pandas as pd

    run = tmp_path / "run"
    run.mkdir()
    table = pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0]})
    io.write_atoms(run / "atoms.csv", table, metadata={"analysis": {"lattice": None}})
    if atoms_meta is not None:
        (run / "atoms.json").write_text(json.dumps({**atoms_meta, "data_file": "atoms.csv"}))
    if report is not None:
        (run / "report.json").write_text(report)
    code, err = _run_cli(["figures", str(run), "-o", str(tmp_path / "f")])
    assert code == 2 and "\n" not in err.strip() and words in err, err


def test_schemas_keep_fields_they_do_not_know():
    from napari_aet.core.schemas import check

    info = {"tilts": "a.mrc", "a_newer_field": {"x": [1, 2]}, "angles_deg": [[0, 10, 0], [0, 20, 0]]}
    assert check(info, "volume", "v.json") is info


def test_damaged_weights_provenance_is_one_line(tmp_path):
    from napari_aet.core.enhance import load_weights

    w = tmp_path / "w.pt"
    w.write_bytes(b"0" * 100)
    (tmp_path / "w.json").write_text(json.dumps({"sha256": 12}))
    with pytest.raises(AETInputError, match="sha256") as info:
        load_weights(w)
    assert "\n" not in str(info.value)


# ---- issue 26 item 16: numbers and indices that are not what they claim

@pytest.mark.parametrize("option", [["--tilt-step", "nan"], ["--tilt-range", "nan"], ["--dose", "inf"],
                                    ["--size=-inf"], ["--seed", "-5"], ["--seed", str(2**40)]])
def test_simulate_refuses_non_finite_numbers_and_bad_seeds(tmp_path, option, capsys):
    assert main(["simulate", str(tmp_path / "s"), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and option[0].split("=")[0] in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("column, value", [("layer", "1.5"), ("atom", "0.5"), ("fcc", "x"), ("surface", "inf")])
def test_index_columns_hold_whole_numbers(tmp_path, column, value, capsys):
    (tmp_path / "a.csv").write_text(f"x,y,z,{column}\n0,0,0,{value}\n2,0,0,1\n")
    with pytest.raises(AETInputError, match=f"'{column}' holds") as info:
        io.read_atoms(tmp_path / "a.csv")
    assert "\n" not in str(info.value)
    assert main(["analyze", str(tmp_path / "a.csv"), "-o", str(tmp_path / "b.csv")]) == 2
    assert not (tmp_path / "b.csv").exists()


def test_blank_layers_are_still_blank(tmp_path):
    (tmp_path / "a.csv").write_text("x,y,z,layer,atom\n0,0,0,,1\n2,0,0,3,1\n")
    table, _ = io.read_atoms(tmp_path / "a.csv")
    assert table["layer"].isna().tolist() == [True, False] and int(table["layer"].iloc[1]) == 3


def test_structured_angles_npy_is_one_line(tmp_path):
    angles = np.zeros(5, dtype=[("a", "f8"), ("b", "f8")])
    np.save(tmp_path / "ang.npy", angles)
    with pytest.raises(AETInputError, match="structured") as info:
        io.read_angles(tmp_path / "ang.npy")
    assert "\n" not in str(info.value)


def test_generate_data_workers_are_bounded_by_the_work_and_the_cores(tiny_data, tmp_path, capsys):
    """--workers 12 for the few chunks of a tiny config starts no idle processes; -5 is refused."""
    import json as _json

    from napari_aet.core.threads import usable_cpus
    from napari_aet.core.training import TrainingConfig, generate_dataset

    cfg = TrainingConfig(**_json.loads((tiny_data / "cfg.json").read_text()))
    summary = generate_dataset(cfg, tmp_path / "d", workers=12)
    assert summary["workers"] <= min(summary["chunks"], usable_cpus())
    assert main(["generate-data", str(tiny_data / "cfg.json"), "-o", str(tmp_path / "e"), "--workers", "-5"]) == 2
    assert "--workers" in capsys.readouterr().err


# ------------------------------------- issue 26 items 8, 11, 13: what a file is, where its data lives, its size

_SECRET = np.array([11.125, -22.25, 33.375, -44.5, 55.625], dtype=np.float64)  # bytes of a file nobody named


def _secret_file(tmp_path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.bin"
    secret.parent.mkdir()
    _SECRET.tofile(secret)
    return secret


def _h5_pointing_outside(path: Path, name: str, how: str, secret: Path, shape=(1, 5)) -> None:
    """An HDF5 file (a MAT v7.3 file for ``.mat``, EMD 1.0 for ``.emd``/``.h5``) whose dataset ``name``
    keeps its bytes in ``secret``."""
    import shutil

    import h5py

    n = len(_SECRET)
    if path.suffix != ".mat":
        shutil.copy(Path(__file__).parent / "data" / "vendor" / "example_signal.emd", path)
    with h5py.File(path, "r+" if path.suffix != ".mat" else "w", userblock_size=512 if path.suffix == ".mat" else None) as f:
        if name in f:
            del f[name]
        if how == "external storage":
            f.create_dataset(name, shape=shape, dtype="f8", external=[(str(secret), 0, n * 8)])
            return
        src = secret.with_suffix(".h5")
        with h5py.File(src, "w") as g:
            g["x"] = _SECRET.reshape(shape)
        if how == "virtual dataset":
            layout = h5py.VirtualLayout(shape=shape, dtype="f8")
            layout[...] = h5py.VirtualSource(str(src), "x", shape=shape)
            f.create_virtual_dataset(name, layout)
        else:
            f[name] = h5py.ExternalLink(str(src), "x")


def _holds_secret(root: Path) -> list:
    needle = _SECRET.tobytes()[8:24]
    texts = [f"{v:g}" for v in _SECRET[1:3]]
    return [p for p in root.rglob("*") if p.is_file() and "elsewhere" not in p.parts
            and (needle in p.read_bytes() or any(t in p.read_bytes().decode("latin1") for t in texts))]


@pytest.mark.parametrize("how", ["external storage", "virtual dataset", "external link"])
def test_angles_stored_in_another_file_never_reach_the_outputs(tmp_path, capsys, how):
    """Issue 26 item 8: a MAT v7.3 angles file whose dataset lives in another file is refused in one
    line, and no byte of that file reaches any output (the angles used to land in the sidecar)."""
    secret = _secret_file(tmp_path)
    _h5_pointing_outside(tmp_path / "angles.mat", "angles", how, secret)
    ts = io.TiltSeries(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32), None, 0.5)
    io.write_tilt_series(tmp_path / "tilts.mrc", ts)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["reconstruct", str(tmp_path / "tilts.mrc"), "--angles", str(tmp_path / "angles.mat"),
                 "--iterations", "2", "--device", "cpu", "-o", str(out / "vol.mrc")]) == 2
    _one_line_error(capsys, "outside itself", how.split()[-1])
    assert not any(out.iterdir())
    assert _holds_secret(tmp_path) == []


@pytest.mark.parametrize("how", ["external storage", "virtual dataset", "external link"])
@pytest.mark.parametrize("suffix, name", [(".mat", "tilts"), (".h5", "signals/__unnamed__/data"),
                                          (".emd", "signals/__unnamed__/data")])
def test_every_hdf5_reader_refuses_data_outside_the_file(tmp_path, how, suffix, name):
    """MAT v7.3 stacks and EMD files (checked before rosettasciio sees them) alike."""
    from napari_aet.core.vendor import read_vendor_stack

    path = tmp_path / f"stack{suffix}"
    _h5_pointing_outside(path, name, how, _secret_file(tmp_path), shape=(5, 1, 1))
    with pytest.raises(AETInputError, match="outside itself") as info:
        io.read_tilt_series(path, angles=[0.0] * 5, pixel_size=0.5)
    assert "\n" not in str(info.value)
    if suffix != ".mat":
        with pytest.raises(AETInputError, match="outside itself"):
            read_vendor_stack(path)
        assert io.stack_shape(path) in ((), None)  # a viewer does not claim it either


def _peak_mib(fn) -> tuple:
    """(peak traced allocation in MiB, the exception raised) of ``fn()``."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        error = None
    except AETInputError as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peak, error


@pytest.fixture
def small_memory(monkeypatch):
    """This process may use 48 MiB: the readers must decide from headers that 64 MiB does not fit."""
    from napari_aet.core import validate

    monkeypatch.setattr(validate, "available_memory", lambda device="cpu": 48 * 2**20)


def _zlib_tiff(path: Path, n=16, size=1024):
    import tifffile

    tifffile.imwrite(path, (np.zeros((size, size), np.float32) for _ in range(n)), shape=(n, size, size),
                     dtype="float32", compression="zlib")


def _mat5_decoy(path: Path, tilts):
    import scipy.io

    scipy.io.savemat(path, {"decoy": np.zeros((16, 1024, 1024), np.float32), "tilts": tilts}, do_compression=True)


def _mat73_decoy(path: Path, tilts):
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:  # never written: a few kB on disk, 64 MiB read
        f.create_dataset("decoy", shape=(16, 1024, 1024), dtype="f4", chunks=(1, 256, 256))
        f["tilts"] = np.asarray(tilts).T


def test_a_compressed_tiff_is_sized_from_its_headers(tmp_path, small_memory):
    """Issue 26 item 11: 64 MiB of zeros in a 70 kB TIFF is refused before a page is decoded."""
    _zlib_tiff(tmp_path / "z.tif")
    assert (tmp_path / "z.tif").stat().st_size < 2**20
    peak, error = _peak_mib(lambda: io.read_tilt_series(tmp_path / "z.tif", angles=[0.0] * 16, pixel_size=0.5))
    assert error is not None and "needs about" in str(error) and "\n" not in str(error)
    assert peak < 8, peak


@pytest.mark.parametrize("make", [_mat5_decoy, _mat73_decoy])
def test_a_mat_decoy_variable_is_never_read(tmp_path, make):
    """A 64 MiB decoy beside the stack: only the variable picked is read (the decoy used to be read in full)."""
    tilts = np.random.default_rng(1).random((3, 8, 8)).astype(np.float32)
    make(tmp_path / "d.mat", tilts)
    assert (tmp_path / "d.mat").stat().st_size < 2**20
    got = {}
    peak, error = _peak_mib(lambda: got.update(ts=io.read_tilt_series(tmp_path / "d.mat", angles=[0.0] * 3,
                                                                      pixel_size=0.5)))
    assert error is None and np.allclose(got["ts"].data, tilts)
    assert peak < 8, peak


@pytest.mark.parametrize("make", [_mat5_decoy, _mat73_decoy])
def test_a_mat_variable_too_big_is_refused_from_its_header(tmp_path, make, small_memory):
    make(tmp_path / "d.mat", np.zeros((3, 8, 8)))
    peak, error = _peak_mib(lambda: io.read_tilt_series(tmp_path / "d.mat", angles=[0.0] * 16, pixel_size=0.5,
                                                        variable="decoy"))
    assert error is not None and "needs about" in str(error) and "decoy" in str(error)
    assert peak < 8, peak


def _patched(path: Path, offset: int, fmt: str, value) -> Path:
    import struct

    raw = bytearray(path.read_bytes())
    raw[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("damage", ["mrc nz", "mrc extended header", "npy shape"])
def test_headers_claiming_more_than_the_file_holds_are_refused_before_allocating(tmp_path, damage):
    """A 2 kB MRC whose header claims 2 GiB of extended header (mrcfile allocated it first), or an NPY
    header claiming 64 MiB in a 1 kB file: refused as truncated, nothing allocated."""
    ts = io.TiltSeries(np.zeros((4, 8, 8), np.float32), None, 0.5)
    if damage.startswith("mrc"):
        path = tmp_path / "s.mrc"
        io.write_tilt_series(path, ts)
        _patched(path, 8 if damage == "mrc nz" else 92, "<i", 2**24 if damage == "mrc nz" else 2**31 - 1)
    else:
        path = tmp_path / "s.npy"
        np.save(path, ts.data)
        raw = path.read_bytes()  # the same header length: the padding gives way to the bigger shape
        assert b"(4, 8, 8), }      " in raw
        path.write_bytes(raw.replace(b"(4, 8, 8), }      ", b"(4, 2048, 2048), }"))
    peak, error = _peak_mib(lambda: io.read_tilt_series(path, angles=[0.0] * 4, pixel_size=0.5))
    assert error is not None and "truncated" in str(error) and "\n" not in str(error)
    assert peak < 8, peak


def test_a_vendor_stack_is_sized_before_rosettasciio_reads_it(tmp_path, small_memory):
    import shutil

    import h5py

    path = tmp_path / "big.emd"
    shutil.copy(Path(__file__).parent / "data" / "vendor" / "example_signal.emd", path)
    with h5py.File(path, "r+") as f:
        del f["signals/__unnamed__/data"]
        f["signals/__unnamed__"].create_dataset("data", shape=(16, 1024, 1024), dtype="f4", chunks=(1, 256, 256))
    peak, error = _peak_mib(lambda: io.read_tilt_series(path, angles=[0.0] * 16, pixel_size=0.5))
    assert error is not None and "needs about" in str(error)
    assert peak < 8, peak


_SIDE_FILE_CHILD = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # the old reader ran out of memory here
from napari_aet.core import io
from napari_aet.core.errors import AETInputError
try:
    {call}
except AETInputError as exc:
    print("REFUSED", exc)
"""


def _run_child(call: str) -> str:
    """Run one read in a child with a time and memory bound: a hang or a memory run fails the test."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SIDE_FILE_CHILD.format(call=call)], capture_output=True,
                          text=True, timeout=120)
    return (done.stdout + done.stderr).strip()


@pytest.mark.parametrize("side, kind", [
    ("s.mrc.mdoc", "fifo"), ("s.mdoc", "zero"), ("s.rawtlt", "fifo"), ("s.rawtlt", "zero"),
    ("angles.txt", "zero"), ("angles.npy", "fifo"),
])
def test_a_side_file_that_is_no_regular_file_is_refused_not_read(tmp_path, side, kind):
    """Issue 26 item 13: an mdoc (or angles file) beside the stack that is a FIFO hung forever; one
    linked to /dev/zero read until memory ran out. Regular files only, in one line."""
    io.write_tilt_series(tmp_path / "s.mrc", io.TiltSeries(np.zeros((3, 8, 8), np.float32), None, 0.5))
    if kind == "fifo":
        os.mkfifo(tmp_path / side)
    else:
        os.symlink("/dev/zero", tmp_path / side)
    out = _run_child(f"io.read_tilt_series({str(tmp_path / 's.mrc')!r})")
    assert out.startswith("REFUSED") and "not a regular file" in out and len(out.splitlines()) == 1, out
    assert ("FIFO" if kind == "fifo" else "character device") in out


@pytest.mark.parametrize("call", [
    "io.read_sidecar({p!r})", "io.read_angles({p!r})",
    "__import__('napari_aet.core.vendor', fromlist=['x']).mdoc_tilts(__import__('pathlib').Path({p!r}))",
    "__import__('napari_aet.core.training', fromlist=['x']).load_config({p!r})",
])
@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_every_side_file_reader_takes_regular_files_only(tmp_path, call, kind):
    p = tmp_path / "side.json"
    if kind == "fifo":
        os.mkfifo(p)
    else:
        os.symlink("/dev/zero", p)
    out = _run_child(call.format(p=str(p)))
    assert out.startswith("REFUSED") and "not a regular file" in out, out


def test_a_side_file_over_the_cap_is_refused(tmp_path):
    from napari_aet.core import guards

    (tmp_path / "a.txt").write_text("0\n" * 1000)
    with pytest.raises(AETInputError, match="over the") as info:
        guards.read_side_file(tmp_path / "a.txt", "angles file", max_bytes=1000)
    assert "\n" not in str(info.value)
    big = tmp_path / "angles.txt"
    with open(big, "wb") as f:  # sparse: 65 MiB on paper, nothing on disk
        f.truncate(guards.SIDE_FILE_MAX_BYTES + 2**20)
    with pytest.raises(AETInputError, match="over the"):
        io.read_angles(big)


@pytest.mark.parametrize("damage", ["value type", "element length", "v4 name length"])
def test_a_damaged_mat_variable_is_one_line_not_a_crash_or_a_huge_read(tmp_path, damage):
    """scipy's MAT parser crashed (under tracemalloc) on a variable whose values carry an unknown type,
    and read() allocated a damaged tag's 4 GB length before finding the file shorter: both are
    checked against the file before scipy sees a byte."""
    import scipy.io

    path = tmp_path / "d.mat"
    tilts = np.random.default_rng(2).random((3, 6, 5)).astype(np.float32)
    if damage == "v4 name length":
        scipy.io.savemat(path, {"tilts": tilts[0]}, format="4")
        _patched(path, 16, "<i", 2**31 - 1)
    else:
        scipy.io.savemat(path, {"tilts": tilts}, do_compression=False)
        raw = path.read_bytes()
        _patched(path, raw.index(b"tilts") + 8 if damage == "value type" else 132, "<I",
                 0x7B07 if damage == "value type" else 0xF0000000)
    call = (f"__import__('tracemalloc').start(); io.read_tilt_series({str(path)!r}, angles=[0.0] * 3, "
            "pixel_size=0.5); print('READ')")
    out = _run_child(call + "\n    print('peak', __import__('tracemalloc').get_traced_memory()[1])")
    assert out.startswith("REFUSED") and len(out.splitlines()) == 1 and "MAT" in out, out


# ---- issue 26, variants found by a hostile session: ranges in sidecars, manifest fields

@pytest.mark.parametrize("alignment, words", [
    ({"shifts_px": [[1e6, 0]] * 3, "angles_deg": [-10.0, 0.0, 10.0]}, "alignment.shifts_px"),
    ({"shifts_px": [[0, 0]] * 3, "angles_deg": ["1_0"] * 3}, "alignment.angles_deg"),
    ({"shifts_px": [[True, 0]] * 3, "angles_deg": [-10.0, 0.0, 10.0]}, "alignment.shifts_px"),
    ({"shifts_px": [[0, 0]] * 3, "angles_deg": [[1e300, 0, 0]] * 3}, "alignment.angles_deg"),
])
def test_absurd_alignment_in_a_sidecar_is_refused(alignment, words):
    from napari_aet.core.schemas import check

    with pytest.raises(AETInputError, match=words.replace(".", r"\.")):
        check({"alignment": alignment}, "volume", "v.json")


@pytest.mark.parametrize("analysis, words", [
    ({"settings": {"layer_axis": "abc"}}, "layer_axis"),
    ({"settings": {"support_normal": [0, 0, 0]}}, "support_normal"),
    ({"settings": {"support_normal": [1, 2]}}, "support_normal"),
    ({"lattice": {"lattice_constant": float("nan"), "crystal_rotation": np.eye(3).tolist()}}, "lattice_constant"),
    ({"lattice": {"lattice_constant": 3.9, "crystal_rotation": [[0, 0, 0]] * 3}}, "crystal_rotation"),
])
def test_absurd_analysis_in_an_atoms_sidecar_is_refused(analysis, words):
    from napari_aet.core.schemas import check

    with pytest.raises(AETInputError, match=words):
        check({"analysis": analysis}, "atoms", "a.json")
    assert check({"tilts_read": {"tilt_axis_angle": 3.0}}, "volume", "v.json")
    with pytest.raises(AETInputError, match="tilt_axis_angle"):
        check({"tilts_read": {"tilt_axis_angle": float("nan")}}, "volume", "v.json")


@pytest.mark.parametrize("text, suffix, words", [
    ("tilts,pixel_size,output,no_align\nz.mrc,0.357,a,maybe\n", ".csv", "yes or no"),
    ("- {tilts: z.mrc, output: a, no_enhnace: yes}\n", ".yaml", "unknown field 'no_enhnace'"),
    ("- {tilts: z.mrc, output: a, output: b}\n", ".yaml", "twice"),
    ("tilts,angles,output,output\nz.mrc,,a,b\n", ".csv", "twice"),
    ("- {tilts: z.mrc, output: batch_summary.csv}\n", ".yaml", "the batch's own file"),
    ("- {tilts: z.mrc, name: .napari-aet.lock}\n", ".yaml", "the batch's own file"),
])
def test_manifest_fields_are_known_and_meant(tmp_path, text, suffix, words):
    from napari_aet.core.batch import read_manifest

    (tmp_path / f"m{suffix}").write_text(text)
    with pytest.raises(AETInputError, match=words):
        read_manifest(tmp_path / f"m{suffix}", tmp_path / "out")


def test_a_manifest_with_a_byte_order_mark_reads(tmp_path):
    from napari_aet.core.batch import read_manifest

    (tmp_path / "m.csv").write_text("\ufefftilts,no_align\nz.mrc,no\n", encoding="utf-8")
    (job,) = read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert job["tilts"].endswith("z.mrc") and job["align"]


@pytest.mark.parametrize("option", [["--dose=-1"], ["--tilt-step", "1e-4"]])
def test_simulate_refuses_a_negative_dose_and_a_vanishing_step(tmp_path, option, capsys):
    assert main(["simulate", str(tmp_path / "s"), *option]) == 2
    assert not (tmp_path / "s").exists()


def test_a_broken_angles_link_beside_the_stack_is_not_skipped(tmp_path):
    ts = io.TiltSeries(np.ones((3, 8, 8), np.float32), np.array([-10.0, 0.0, 10.0]), 0.5)
    io.write_tilt_series(tmp_path / "t.mrc", ts)
    io.write_angles(tmp_path / "angles.txt", [-20.0, 0.0, 20.0])  # another file that would be used instead
    (tmp_path / "t.rawtlt").symlink_to(tmp_path / "missing.rawtlt")
    with pytest.raises(AETInputError, match="broken link"):
        io.read_tilt_series(tmp_path / "t.mrc")


def test_positions_far_outside_any_sample_and_control_characters_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("x,y,z\n1e300,0,0\n1,1,1\n")
    with pytest.raises(AETInputError, match="positions are in Å"):
        io.read_atoms(tmp_path / "a.csv")
    import pandas as pd

    table = pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0], "species": ["\rX"]})
    with pytest.raises(AETInputError, match="control character"):
        io.write_atoms(tmp_path / "b.csv", table)
    assert not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("value", ["-5", "200", "1e308", "0"])
def test_figures_refuses_an_impossible_tilt_range(tmp_path, value, capsys):
    import pandas as pd

    run = tmp_path / "run"
    run.mkdir()
    io.write_atoms(run / "atoms.csv", pd.DataFrame({"x": [0.0], "y": [0.0], "z": [0.0]}),
                   metadata={"analysis": {"lattice": None}})
    assert main(["figures", str(run), "--tilt-range=" + value, "-o", str(tmp_path / "f")]) == 2
    assert "--tilt-range" in capsys.readouterr().err

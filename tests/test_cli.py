import json
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest

from napari_aet.cli import main
from napari_aet.core import io


def test_simulate_writes_contract_files(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["simulate", str(out), "--seed", "4", "--size", "2", "--voxels", "80", "--tilt-step", "13",
               "--strain", "0.01", "--substrate"])
    assert rc == 0
    for name in ("tilts.mrc", "angles.txt", "truth.csv", "truth.json", "ideal.mrc", "meta.json"):
        assert (out / name).stat().st_size > 0
    ts = io.read_tilt_series(out / "tilts.mrc")  # angles.txt found beside, pixel size from header
    assert ts.data.shape == (11, 80, 80) and ts.pixel_size == pytest.approx(0.357)
    vol = io.read_volume(out / "ideal.mrc")
    assert vol.pixel_size == pytest.approx(0.357) and vol.data.shape == (80, 80, 80)
    truth, meta = io.read_atoms(out / "truth.csv")
    assert np.array(meta["crystal_rotation"]).shape == (3, 3)
    assert {"x", "fcc", "surface", "facet", "exx"} <= set(truth.columns)
    full = json.loads((out / "meta.json").read_text())
    assert full["config"]["seed"] == 4 and full["config"]["substrate"] is True
    assert "simulated" in capsys.readouterr().err


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--size", "1.5", "--voxels", "64"]) == 0
    before = (out / "tilts.mrc").read_bytes()
    assert main(["simulate", str(out), "--size", "1.5", "--voxels", "64", "--seed", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--overwrite" in err
    assert (out / "tilts.mrc").read_bytes() == before
    assert main(["simulate", str(out), "--size", "1.5", "--voxels", "64", "--seed", "9", "--overwrite"]) == 0
    assert (out / "tilts.mrc").read_bytes() != before


def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "x"), "--size", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not fit" in err
    assert not (tmp_path / "x").exists()


def test_help_documents_units():
    out = subprocess.run([sys.executable, "-m", "napari_aet.cli", "simulate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for text in ("--pixel-size Å", "--tilt-step DEG", "--dose E/Å²", "--size NM", "--b-factor Å²"):
        assert text in out.stdout


def test_demo_without_display(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo", "-o", str(tmp_path / "d"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "built-in sample" in out and "recall" in out
    truth, _ = io.read_atoms(tmp_path / "d" / "sample" / "truth.csv")
    atoms, meta = io.read_atoms(tmp_path / "d" / "atoms.csv")
    assert len(truth) > 1000
    from napari_aet.core.metrics import match_atoms

    metal = truth[truth["atom"] == 1]  # the support's atoms are neither misses nor false atoms
    m = match_atoms(atoms.loc[atoms["atom"] == 1, ["x", "y", "z"]].to_numpy(), metal[["x", "y", "z"]].to_numpy())
    assert m.recall >= 0.998 and m.precision >= 0.998
    assert "off-site atoms: " in out and " of the " in out and "support" in out
    # the off-site atoms are found off their sites (figure e's black)
    traced = atoms[atoms["atom"] == 1]
    assert 0 < (traced["fcc"] == 0).sum() < 0.05 * len(metal) and (metal["fcc"] == 0).any()
    assert meta["refinement"]["r_factor_after"] < meta["refinement"]["r_factor_before"]
    assert io.read_volume(tmp_path / "d" / "tomogram_enhanced.mrc").pixel_size > 0
    import json as _json

    report = _json.loads((tmp_path / "d" / "report.json").read_text())
    # R-free: 10% of the projections held out, the model's R on them beside R-work; every atom's confidence
    assert len(report["settings"]["free_projections"]) == 2 and report["validation"]["n_free_projections"] == 2
    assert 0 < report["r_work"] < 0.3 and 0 < report["r_free"] < 0.3 and "R-free" in captured.err
    assert report["enhancement"]["consistency"]["measured_on"].startswith("held-out")
    m_all = match_atoms(traced[["x", "y", "z"]].to_numpy(), metal[["x", "y", "z"]].to_numpy())
    d = traced[["x", "y", "z"]].to_numpy()[m_all.found_index] - metal[["x", "y", "z"]].to_numpy()[m_all.true_index]
    d -= d.mean(0)
    sigma = traced[["sigma_x_pm", "sigma_y_pm", "sigma_z_pm"]].to_numpy()[m_all.found_index] / 100
    coverage = (np.abs(d) <= 1.645 * sigma).mean(0)  # of the 90% intervals, against the sample's truth
    # x and z hold; y (the tilt axis, errors under 1 pm here) shows the chain's sub-pm floor (BENCHMARKS.md)
    assert coverage[0] > 0.85 and coverage[2] > 0.85 and coverage[1] > 0.7, coverage
    assert (traced["presence"] > 0.5).mean() > 0.99 and (atoms.loc[atoms["atom"] == 0, "presence"] < 0.5).mean() > 0.9
    assert report["settings"]["support_normal"] == [0.0, 0.0, -1.0]  # the support, given: drawn in figure (a)
    assert set(report["stages"]) == {"align", "reconstruct", "enhance", "trace_refine", "analyze", "figures"}
    assert report["share_assigned_fcc"] > 0.95 and abs(report["lattice_constant"] / 3.924 - 1) < 0.01
    figs = set(report["figures"])
    for name in ("tomogram_slices", "fourier_intensity", "a_particle_on_support", "bcd_facets", "e_fcc_layers",
                 "f_layer_displacements", "g_layer_strain", "tomograms_3d", "fourier_3d"):
        assert {f"{name}.png", f"{name}.svg"} <= figs, name
    png = tmp_path / "d" / "figures" / "tomogram_slices.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 1500 and im.getextrema()[0][1] > 0  # 300 dpi, not blank
    assert not any(f.startswith("layers_") for f in figs)  # every layer's maps only with --layer-maps
    # the figures again for another layer, and all layer maps, from the finished run
    layers = sorted(int(v) for v in atoms["layer"].dropna().unique())
    assert main(["figures", str(tmp_path / "d"), "--layer", str(layers[1]), "--only", "g_layer_strain",
                 "--layer-maps", "-o", str(tmp_path / "f")]) == 0
    assert {p.name for p in (tmp_path / "f").iterdir()} == {"g_layer_strain.png", "g_layer_strain.svg"}
    assert main(["figures", str(tmp_path / "d"), "--only", "layers_uz", "-o", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "layers_uz.png").exists()
    assert main(["figures", str(tmp_path / "d"), "--layer", "999", "-o", str(tmp_path / "f")]) == 2
    # the demo's folder is the demo's own; a folder holding anything else is refused, untouched
    (tmp_path / "d" / "notes.txt").write_text("mine")
    before = (tmp_path / "d" / "atoms.csv").read_bytes()
    assert main(["demo", "-o", str(tmp_path / "d"), "--device", "cpu"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (tmp_path / "d" / "atoms.csv").read_bytes() == before


def test_demo_folder_is_the_demos_own(tmp_path):
    """A rerun replaces an earlier demo, an interrupted one (crashed in a stage) and one from a
    version that left no mark included; it refuses a folder holding anything else."""
    from napari_aet.cli import DEMO_MARK, _claim_demo_folder
    from napari_aet.core.errors import AETInputError

    interrupted = tmp_path / "interrupted"
    (interrupted / "sample").mkdir(parents=True)
    (interrupted / "sample" / "tilts.mrc").write_bytes(b"x")
    (interrupted / ".napari-aet-partial").mkdir()
    (interrupted / DEMO_MARK).write_text("{}")
    _claim_demo_folder(interrupted, overwrite=False)
    unmarked = tmp_path / "unmarked"  # an earlier version's finished demo
    (unmarked / "sample").mkdir(parents=True)
    (unmarked / "sample" / "meta.json").write_text("{}")
    (unmarked / "atoms.csv").write_text("x")
    _claim_demo_folder(unmarked, overwrite=False)
    assert (unmarked / DEMO_MARK).is_file()
    other_run = tmp_path / "run"  # 'napari-aet run -o run': not the demo's
    other_run.mkdir()
    (other_run / "atoms.csv").write_text("mine")
    with pytest.raises(AETInputError, match="another command"):
        _claim_demo_folder(other_run, overwrite=False)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / DEMO_MARK).write_text("{}")
    (mixed / "thesis.tex").write_text("mine")
    with pytest.raises(AETInputError, match="thesis.tex"):
        _claim_demo_folder(mixed, overwrite=False)
    _claim_demo_folder(mixed, overwrite=True)
    assert (mixed / "thesis.tex").read_text() == "mine" and (other_run / "atoms.csv").read_text() == "mine"
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(AETInputError, match="not a folder"):
        _claim_demo_folder(a_file, overwrite=True)


def test_figures_render_writes_every_job_from_both_processes(tmp_path):
    from napari_aet.core import figures as fg

    def line(k):
        plt = fg._plt()
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, k])
        return fig

    jobs = [(f"f{k}", line, (k,)) for k in range(5)] + [("none", lambda: None, ())]
    paths = fg.render(jobs, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"f{k}.{e}" for k in range(5) for e in ("png", "svg"))
    assert sorted(Path(p).name for p in paths) == names
    assert fg.render(jobs[:2], tmp_path / ".", workers=1)  # serial path


def test_run_names_the_support_option_only_where_a_support_may_be_missed(tmp_path, capsys):
    """Figure a carries no command-line hint (issue 27); the command line says how to draw the support."""
    sim = tmp_path / "s"
    assert main(["simulate", str(sim), "--size", "1.5", "--voxels", "64", "--substrate", "--seed", "4"]) == 0
    common = ["--pixel-size", "0.357", "--no-align", "--no-enhance", "--no-refine", "--device", "cpu"]
    capsys.readouterr()
    assert main(["run", str(sim / "tilts.mrc"), *common, "-o", str(tmp_path / "r1")]) == 0
    assert "--support-normal X Y Z" in capsys.readouterr().err
    assert main(["run", str(sim / "tilts.mrc"), *common, "--support-normal", "0", "0", "-1", "-o",
                 str(tmp_path / "r2")]) == 0
    assert "--support-normal" not in capsys.readouterr().err


def test_analyze_leaves_out_atoms_below_a_presence(tmp_path, small_sim):
    table = small_sim.truth_table()
    table = table[table["atom"] == 1][["x", "y", "z", "atom"]].reset_index(drop=True)
    table["presence"] = 0.99
    table.loc[:4, "presence"] = 0.1  # five atoms the data barely wants
    io.write_atoms(tmp_path / "a.csv", table)
    assert main(["analyze", str(tmp_path / "a.csv"), "--min-presence", "0.5", "-o", str(tmp_path / "b.csv")]) == 0
    out, meta = io.read_atoms(tmp_path / "b.csv")
    assert meta["settings"]["min_presence"] == 0.5 and meta["settings"]["n_left_out_low_presence"] == 5
    assert len(out) == len(table) and (out["atom"].iloc[:5] == 1).all()  # rows and the atom flag kept as given
    assert out["fcc"].iloc[:5].isna().all() or (out["fcc"].iloc[:5] != 1).all()  # not analysed
    assert main(["analyze", str(tmp_path / "a.csv"), "--min-presence", "1.5", "-o", str(tmp_path / "c.csv")]) == 2

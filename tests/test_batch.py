import csv

import pytest

from napari_aet.cli import main
from napari_aet.core.batch import read_manifest


def _small_case(root, name, seed):
    assert main(["simulate", str(root / name), "--size", "1.2", "--voxels", "48", "--tilt-step", "13",
                 "--seed", str(seed)]) == 0


def test_batch_on_local_cluster_with_a_corrupt_job(tmp_path, capsys):
    for k, name in enumerate(("a", "b", "c")):
        _small_case(tmp_path, name, 80 + k)
    raw = (tmp_path / "c" / "tilts.mrc").read_bytes()
    (tmp_path / "c" / "tilts.mrc").write_bytes(raw[: len(raw) // 3])  # truncated: corrupt
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("name,tilts,no_enhance,no_refine\n" + "".join(
        f"{n},{n}/tilts.mrc,yes,yes\n" for n in ("a", "b", "c")))
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "2"]) == 1  # one job failed
    rows = {r["name"]: r for r in csv.DictReader(open(out / "batch_summary.csv"))}
    assert rows["a"]["status"] == rows["b"]["status"] == "done"
    assert rows["c"]["status"] == "failed" and "truncated or corrupt" in rows["c"]["reason"]
    assert (out / "a" / "report.json").exists() and (out / "b" / "atoms.csv").exists()
    before = (out / "a" / "atoms.csv").stat().st_mtime_ns
    assert main(["batch", str(manifest), "-o", str(out), "--workers", "2"]) == 1
    rows = {r["name"]: r for r in csv.DictReader(open(out / "batch_summary.csv"))}
    assert rows["a"]["status"] == rows["b"]["status"] == "skipped (done)"
    assert (out / "a" / "atoms.csv").stat().st_mtime_ns == before  # not redone


def test_yaml_manifest(tmp_path):
    (tmp_path / "m.yaml").write_text("jobs:\n  - tilts: x/tilts.mrc\n    pixel_size: 0.4\n    no_align: true\n")
    jobs = read_manifest(tmp_path / "m.yaml", tmp_path / "out")
    assert jobs[0]["pixel_size"] == 0.4 and jobs[0]["align"] is False and jobs[0]["output"].endswith("out/tilts")


# ---- species (issue 24): a manifest column, lightest first, checked per job, passed to run_pipeline

def test_manifest_species_column_csv_and_yaml(tmp_path):
    (tmp_path / "m.csv").write_text('name,tilts,species\na,a.mrc,Ni Pt\nb,b.mrc,"Ni, Pt"\nc,c.mrc,\nd,d.mrc,Pt\n')
    jobs = {j["name"]: j for j in read_manifest(tmp_path / "m.csv", tmp_path / "out")}
    assert jobs["a"]["species"] == jobs["b"]["species"] == ("Ni", "Pt")
    assert jobs["c"]["species"] == ()  # empty: one species, as before
    assert jobs["d"]["species"] == ("Pt",)
    (tmp_path / "m.yaml").write_text("- tilts: a.mrc\n  species: Ni Pt\n- tilts: b.mrc\n  species: Pd,Pt\n"
                                     "- tilts: c.mrc\n")
    assert [j["species"] for j in read_manifest(tmp_path / "m.yaml", tmp_path / "out")] == [("Ni", "Pt"),
                                                                                          ("Pd", "Pt"), ()]


@pytest.mark.parametrize("suffix, bad, words", [
    (".csv", "b.mrc,Pt Ni", "not lightest first; give 'Ni Pt'"),
    (".csv", "b.mrc,Ni;Pt", "'Ni;Pt' is not a name"),
    (".csv", "b.mrc,ni Pt", "write it 'Ni'"),
    (".csv", "b.mrc,Ni Ni", "given twice"),
    (".csv", "b.mrc,Ni,Pt", "more cells than the header"),  # a comma list needs quotes in a CSV
    (".csv", "b.mrc,A B C D E F G H", "over the 7"),
    (".yaml", "- tilts: b.mrc\n  species: [Ni, Pt]", "not one text"),
    (".yaml", "- tilts: b.mrc\n  species: no", "not one text"),  # YAML reads a bare no as false
    (".yaml", "- tilts: b.mrc\n  species: 3", "'3' is not a name"),
])
def test_a_bad_species_entry_names_the_job_and_the_fix(tmp_path, suffix, bad, words):
    from napari_aet.core.errors import AETInputError

    m = tmp_path / f"m{suffix}"
    good = "tilts,species\na.mrc,Ni Pt\n" if suffix == ".csv" else "- tilts: a.mrc\n  species: Ni Pt\n"
    m.write_text(good + bad + "\n")
    with pytest.raises(AETInputError) as info:
        read_manifest(m, tmp_path / "out")
    line = str(info.value)
    assert "\n" not in line and f"{m} job 2" in line and words in line, line


def test_run_job_passes_the_species_to_run_pipeline(tmp_path, monkeypatch):
    from napari_aet.core import io, pipeline
    from napari_aet.core.batch import run_job

    calls = []

    def fake_run_pipeline(ts, out, **kwargs):
        calls.append(kwargs)
        return {"n_atoms": 10, "share_assigned_fcc": 1.0, "lattice_constant": 3.9}

    monkeypatch.setattr(io, "read_tilt_series", lambda *a, **k: "tilt series")
    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    (tmp_path / "m.csv").write_text("name,tilts,species\nalloy,a.mrc,\"Ni,Pt\"\npure,b.mrc,\n")
    jobs = read_manifest(tmp_path / "m.csv", tmp_path / "out")
    assert [run_job(j)["status"] for j in jobs] == ["done", "done"]
    assert calls[0]["species"] == ("Ni", "Pt") and isinstance(calls[0]["species"], tuple)
    assert calls[1].get("species", ()) == ()

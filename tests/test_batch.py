import csv

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

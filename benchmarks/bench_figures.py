"""Time every figure of a run: building (rendering) and saving (PNG 300 dpi + SVG), one
process, and the whole figure stage as `run` does it (two processes).

    python benchmarks/bench_figures.py RUN_DIR [--out results/figures_bench.json]

RUN_DIR is the OUT_DIR of `napari-aet run` or `napari-aet demo` (atoms.csv, tomograms,
report.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from napari_aet.core import figures as fg
    from napari_aet.core import io
    from napari_aet.core.geometry import tilt_range

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    table, meta = io.read_atoms(args.run_dir / "atoms.csv")
    summary = meta["analysis"]
    vols = {"RESIRE": io.read_volume(args.run_dir / "tomogram.mrc")}
    if (args.run_dir / "tomogram_enhanced.mrc").exists():
        vols["U-Net"] = io.read_volume(args.run_dir / "tomogram_enhanced.mrc")
    px = vols["RESIRE"].pixel_size
    volumes = {k: v.data for k, v in vols.items()}
    angles = json.loads((args.run_dir / "report.json").read_text())["settings"]["angles_deg"]
    wedge = tilt_range(np.asarray(angles, float))
    jobs = [("tomogram_slices", fg.orthoslices, (volumes, px)),
            ("fourier_intensity", fg.fourier_intensity, (volumes, wedge, px))]
    jobs += fg.reference_jobs(table, summary, volumes, px, wedge)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, builder, fargs in jobs:
            t0 = time.perf_counter()
            fig = builder(*fargs)
            t1 = time.perf_counter()
            fg.save(fig, Path(tmp), name)
            rows[name] = {"build_s": round(t1 - t0, 2), "save_s": round(time.perf_counter() - t1, 2)}
            print(f"{name:24s} build {rows[name]['build_s']:5.2f} s  save {rows[name]['save_s']:5.2f} s")
        t0 = time.perf_counter()
        fg.write_figures(Path(tmp) / "stage", table, summary, volumes, px, wedge)
        stage = round(time.perf_counter() - t0, 2)
    print(f"figure stage as run makes it (two processes): {stage} s; "
          f"{int((table['atom'] == 1).sum())} atoms, {len(table)} rows")
    result = {"figures": rows, "stage_two_processes_s": stage, "n_rows": int(len(table)),
              "n_atoms": int((table["atom"] == 1).sum()), "machine": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d")}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Scaling of each stage with the volume size (issue 18, point 4).

Run:  python benchmarks/bench_scaling.py [--sizes 96 144 192 256] [--out results.json]
      python benchmarks/bench_scaling.py --atoms 3.5 7.5 12 [--out results.json]

``--atoms D ...``: tracing and refinement against the atom count instead: Pt Wulff particles
of diameter D nm (3.5, 7.5 and 12 nm, the simulator's largest: 1,385, 14,559 and 61,587 atoms) in a box 1.15 D wide, traced on their
ideal tomogram, refined against their noise-free projections (21 at ±65°) for 20 steps
(seconds per step reported; the default run takes 150).

For each edge N (voxels, 0.357 Å): a Pt Wulff particle filling about half the box
(diameter 0.45 N x 0.357 Å), 21 projections at ±65°, 1e4 e/Å²; each N runs in a fresh
process so that peak memory belongs to it. Stages timed on the CPU: RESIRE 100 iterations
(single-axis path), the same with Euler angles (shear-warp), the U-Net (shipped weights,
tiled), tracing, refinement (150 steps), analysis. Memory: the process's peak RSS after each
stage (monotone: a stage's own peak shows as a rise).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int) -> dict:
    import numpy as np

    from napari_aet.core.analysis import analyze_atoms
    from napari_aet.core.enhance import enhance_volume, load_weights
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.refine import refine_positions
    from napari_aet.core.simulate import reference_config, simulate
    from napari_aet.core.trace import trace_atoms

    def peak_gib():
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)

    sim = simulate(reference_config(seed=3, n_voxels=n, size=0.45 * n * 0.357 / 10, dose=1e4))
    ts = sim.tilt_series
    row = {"voxels": n, "n_atoms": int(len(sim.particle.positions)), "stages": {}}

    def stage(name, fn):
        t0 = time.perf_counter()
        out = fn()
        row["stages"][name] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_gib": peak_gib()}
        return out

    rec = stage("reconstruct", lambda: reconstruct(ts, device="cpu").volume)
    euler = np.c_[np.full(len(ts.angles), 23.0), ts.angles, np.full(len(ts.angles), -23.0)]
    stage("reconstruct_euler", lambda: reconstruct(ts.data, euler, ts.pixel_size, device="cpu"))
    model, meta = load_weights()
    enh = stage("enhance", lambda: enhance_volume(rec, model, ts.pixel_size, meta["training_pixel_size"]))
    table = stage("trace", lambda: trace_atoms(enh, ts.pixel_size).atoms)
    xyz = table[["x", "y", "z"]].to_numpy()
    ref = stage("refine", lambda: refine_positions(xyz, np.zeros(len(xyz), int), ts.data, ts.angles, ts.pixel_size,
                                                   iterations=150, device="cpu"))
    table[["x", "y", "z"]] = ref.positions
    stage("analyze", lambda: analyze_atoms(table))
    row["n_traced"] = int(len(table))
    return row


def one_atoms(d_nm: float) -> dict:
    import numpy as np

    from napari_aet.core.refine import refine_positions
    from napari_aet.core.simulate import reference_config, simulate
    from napari_aet.core.trace import trace_atoms

    def peak_gib():
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)

    n = int(np.ceil(1.15 * d_nm * 10 / 0.357 / 16) * 16)
    t0 = time.perf_counter()
    sim = simulate(reference_config(seed=3, n_voxels=n, size=d_nm, dose=None))
    row = {"diameter_nm": d_nm, "voxels": n, "n_atoms": int(len(sim.particle.positions)),
           "simulate_seconds": round(time.perf_counter() - t0, 1), "stages": {}}
    t0 = time.perf_counter()
    table = trace_atoms(sim.ideal.data, 0.357).atoms
    row["stages"]["trace"] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_gib": peak_gib()}
    xyz = table[["x", "y", "z"]].to_numpy()
    t0 = time.perf_counter()
    refine_positions(xyz, np.zeros(len(xyz), int), sim.tilt_series.data, sim.tilt_series.angles, 0.357,
                     iterations=20, device="cpu")
    dt = time.perf_counter() - t0
    row["stages"]["refine_20_steps"] = {"seconds": round(dt, 2), "seconds_per_step": round(dt / 20, 3),
                                        "peak_rss_gib": peak_gib()}
    row["n_traced"] = int(len(table))
    return row


def _fresh_process(flag: str, value) -> dict:
    """One measurement in a new interpreter, so that its peak memory is its own."""
    out = subprocess.run([sys.executable, __file__, flag, str(value)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 144, 192, 256])
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--atoms", type=float, nargs="+", default=None, metavar="D_NM")
    ap.add_argument("--one-atoms", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    if args.one_atoms:
        print(json.dumps(one_atoms(args.one_atoms)))
        return
    rows = []
    if args.atoms:
        for d in args.atoms:
            rows.append(_fresh_process("--one-atoms", d))
            print(json.dumps(rows[-1]), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
        return
    for n in args.sizes:
        rows.append(_fresh_process("--one", n))
        print(json.dumps(rows[-1]), flush=True)
    names = list(rows[0]["stages"])
    print("\n| voxels | atoms | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{r['stages'][k]['seconds']:.1f} s / {r['stages'][k]['peak_rss_gib']:.2f}" for k in names)
        print(f"| {r['voxels']}³ | {r['n_atoms']} | {cells} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

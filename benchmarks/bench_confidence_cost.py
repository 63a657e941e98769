"""What validation costs (issue 23): each step on the built-in sample, timed.

Run:  python benchmarks/bench_confidence_cost.py [--threads 2] [--out results.json]

The built-in sample (1359 Pt atoms on an amorphous Si support, 21 projections of 144² at
0.357 Å, Gaussian-atom forward model), reconstructed (RESIRE) from the 19 work projections
and traced; then timed one by one: refinement on the work projections (150 iterations), the
model's R-work and R-free, the refit on all projections (30 iterations), every peak's
confidence, the residual tomogram (10 SIRT iterations) and completion (up to 5 rounds).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from napari_aet.core.threads import configure_threads

    configure_threads(args.threads)
    from napari_aet.core import confidence as C
    from napari_aet.core.completion import complete_atoms
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.refine import refine_positions
    from napari_aet._sample_data import simulate_sample
    from napari_aet.core.trace import trace_atoms

    sim = simulate_sample()
    ts = sim.tilt_series
    angles = np.asarray(ts.angles)
    times = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t0, 2)
        print(name, times[name], flush=True)
        return out

    free = timed("split_free_projections", lambda: C.split_free_projections(angles, 0.1))
    vol = timed("reconstruct (19 projections)", lambda: reconstruct(ts.data[~free], angles[~free], ts.pixel_size,
                                                                     device="cpu").volume)
    table = timed("trace", lambda: trace_atoms(vol, ts.pixel_size).table)
    atoms = table["atom"].to_numpy() == 1
    pos = table.loc[atoms, ["x", "y", "z"]].to_numpy()
    cls = np.zeros(len(pos), int)
    ref = timed("refine on work projections (150 it.)", lambda: refine_positions(
        pos, cls, ts.data[~free], angles[~free], ts.pixel_size, iterations=150))
    proj = timed("R-work and R-free", lambda: C.atom_model_projections(
        ref.positions, cls, ref.heights, ref.b_factors, angles, ts.data.shape[1:], ts.pixel_size))
    final = timed("refit on all projections (30 it.)", lambda: refine_positions(
        ref.positions, cls, ts.data, angles, ts.pixel_size, iterations=30, step_size=0.003))
    every = np.zeros(len(table), int)
    timed(f"confidence ({len(table)} peaks)", lambda: C.atom_confidence(
        table[["x", "y", "z"]].to_numpy(), every, final.heights, final.b_factors, ts.data, angles, ts.pixel_size,
        in_model=atoms, free=free, free_model=proj[free]))
    timed("residual tomogram (10 SIRT it.)", lambda: C.residual_tomogram(
        final.positions, cls, final.heights, final.b_factors, ts.data, angles, ts.pixel_size, vol.shape))
    res = timed("completion (work projections)", lambda: complete_atoms(
        ref.positions, cls, ref.heights, ref.b_factors, ts.data, angles, ts.pixel_size, vol.shape, free=free))
    print(res.summary())
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"command": "python benchmarks/bench_confidence_cost.py", "threads": args.threads,
                       "machine": platform.processor() or platform.machine(), "seconds": times,
                       "completion": res.summary()}, fh, indent=1)


if __name__ == "__main__":
    main()

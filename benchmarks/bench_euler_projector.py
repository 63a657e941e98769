"""The general-Euler projector: shear-warp against the direct splat (issue 18, point 2).

Run:  python benchmarks/bench_euler_projector.py [--iterations 100] [--seeds 21 22] [--out results.json]

1. Speed, the film-sized case of the issue: a 151 x 77 x 151 volume, 46 projections with
   general Z-Y-Z Euler angles (tilts -60..60°, phi and psi scattered by 2° about a 23° tilt
   axis, as refined measured angles are), RESIRE for ``--iterations`` iterations on the CPU,
   each general path; the single-axis path on the same volume for reference.
2. Accuracy: reference-regime particles (Pt Wulff, 0.357 Å, 96³ to save time) projected by the
   simulator's analytic Gaussian atoms at the same kind of Euler angles (±65°, 21
   projections), noise-free and at 2e3 e/Å²; RESIRE (100 iterations) through each path, the
   project's tracer: recall, precision, RMSD (pm) against the true atoms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import psutil
import torch

from napari_aet.core.metrics import match_atoms
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import add_poisson_noise, atom_weights, project_atoms, reference_config, simulate
from napari_aet.core.trace import trace_atoms


def euler_series(tilts: np.ndarray, rng, axis: float = 23.0, scatter: float = 2.0) -> np.ndarray:
    return np.c_[axis + rng.normal(0, scatter, len(tilts)), tilts, -axis + rng.normal(0, scatter, len(tilts))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "threads": torch.get_num_threads(), "speed": [], "accuracy": []}
    shape, n_proj = (151, 77, 151), 46
    eul = euler_series(np.linspace(-60, 60, n_proj), rng)
    film = rng.random((n_proj, 77, 151)).astype(np.float32)  # speed does not depend on the content
    for label, angles, path in (("sheared", eul, "sheared"), ("splat", eul, "splat"),
                                ("single-axis (reference)", eul[:, 1], "sheared")):
        t0 = time.perf_counter()
        reconstruct(film, angles, 1.0, iterations=args.iterations, volume_shape=shape, device="cpu",
                    euler_projector=path)
        dt = time.perf_counter() - t0
        row = {"path": label, "volume": list(shape), "projections": n_proj, "iterations": args.iterations,
               "seconds": round(dt, 1), "seconds_per_iteration": round(dt / args.iterations, 3),
               "rss_gib": round(psutil.Process().memory_info().rss / 2**30, 2)}
        result["speed"].append(row)
        print(json.dumps(row), flush=True)
    if not args.skip_accuracy:
        for seed in args.seeds:
            sim = simulate(reference_config(seed=seed, n_voxels=96, size=2.4, dose=None))
            p = sim.particle
            angles = euler_series(np.arange(-65, 66, 6.5), np.random.default_rng(seed))
            clean = project_atoms(p.positions, atom_weights(p.species), angles, (96, 96), 0.357)
            for dose in (None, 2e3):
                tilts = clean if dose is None else add_poisson_noise(clean, dose, 0.02, np.random.default_rng(seed))
                for path in ("sheared", "splat"):
                    t0 = time.perf_counter()
                    vol = reconstruct(tilts, angles, 0.357, device="cpu", euler_projector=path).volume
                    dt = time.perf_counter() - t0
                    m = match_atoms(trace_atoms(vol, 0.357).atoms[["x", "y", "z"]].to_numpy(), p.positions)
                    row = {"seed": seed, "dose": dose, "path": path, "n_atoms": len(p.positions), "recall": m.recall,
                           "precision": m.precision, "rmsd_pm": round(m.rmsd_pm, 2), "seconds": round(dt, 1)}
                    result["accuracy"].append(row)
                    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

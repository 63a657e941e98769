"""CUDA check of atom refinement (run where a GPU is present).

Run:  PYTHONPATH=src python benchmarks/gpu_check_trace.py [--out DIR]

Reference regime: RESIRE + trace, then refinement on the CPU and on CUDA from the same
start: positions agree within float32 tolerance, same figures; both timed. Then 11,907
atoms (7 nm particle, 256³, 60 projections) refined on CUDA, timed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from napari_aet.core.metrics import match_atoms
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.refine import refine_positions
from napari_aet.core.simulate import reference_config, simulate
from napari_aet.core.trace import trace_atoms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    assert torch.cuda.is_available()
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    sim = simulate(reference_config(seed=201))
    rec = reconstruct(sim.tilt_series, device="cuda")
    atoms = trace_atoms(rec.volume, 0.357).atoms
    pos = atoms[["x", "y", "z"]].to_numpy()
    out = {}
    for dev in ("cpu", "cuda"):
        t0 = time.perf_counter()
        ref = refine_positions(pos, np.zeros(len(pos), int), sim.tilt_series.data, sim.tilt_series.angles, 0.357, device=dev)
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        m = match_atoms(ref.positions, sim.particle.positions)
        out[dev] = ref.positions
        report[f"refine_{dev}"] = {"seconds": dt, "r_after": ref.r_factor_after, **m.as_dict()}
    report["refine_cuda_vs_cpu_max_pm"] = float(np.abs(out["cuda"] - out["cpu"]).max() * 100)
    print(report, flush=True)
    big = simulate(reference_config(seed=300, n_voxels=256, size=7.0, tilt_range=70, tilt_step=140 / 59))
    rec = reconstruct(big.tilt_series, device="cuda")
    t0 = time.perf_counter()
    atoms = trace_atoms(rec.volume, 0.357).atoms
    t_trace = time.perf_counter() - t0
    pos = atoms[["x", "y", "z"]].to_numpy()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    ref = refine_positions(pos, np.zeros(len(pos), int), big.tilt_series.data, big.tilt_series.angles, 0.357, device="cuda")
    torch.cuda.synchronize()
    m = match_atoms(ref.positions, big.particle.positions)
    report["big"] = {"atoms_true": int(big.particle.is_particle.sum()), "trace_s": t_trace,
                     "refine_s": time.perf_counter() - t0, "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
                     **m.as_dict()}
    print(report["big"], flush=True)
    with open(os.path.join(args.out, "gpu_trace.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

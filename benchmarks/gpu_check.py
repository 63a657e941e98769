"""CUDA check and timings (run where a GPU is present).

Run:  PYTHONPATH=src python benchmarks/gpu_check.py [--out DIR]

1. The projector on CUDA equals the CPU one within float32 tolerance (single-axis fast path
   and general Euler path, forward and adjoint).
2. RESIRE on the reference regime (144³, 21 projections): CUDA volume equals the CPU volume
   within float32 tolerance, same tracer figures; both timed.
3. 256³ x 60 projections, 100 iterations, RESIRE / SIRT / GENFIRE-style: wall time and peak
   GPU memory (target: within 4 GiB).
4. Projection-matching alignment of a misaligned reference-regime series on CUDA, timed.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from napari_aet.core.align import align
from napari_aet.core.metrics import match_atoms, normalized_error
from napari_aet.core.projector import Projector
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import reference_config, simulate
from napari_aet.core.trace import local_maxima


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max())


def timed_cuda(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(report, flush=True)

    # 1. projector equality
    g = torch.Generator().manual_seed(0)
    x = torch.rand((96, 100, 96), generator=g)
    y = torch.rand((21, 100, 96), generator=g)
    for name, angles in (("single-axis", np.linspace(-65, 65, 21)),
                         ("euler", np.stack([np.linspace(0, 90, 21), np.linspace(-65, 65, 21), np.zeros(21)], 1))):
        pc, pg = Projector(x.shape, angles), Projector(x.shape, angles, device="cuda")
        report[f"projector_{name}_forward_rel_diff"] = rel(pg.forward(x.cuda()), pc.forward(x))
        report[f"projector_{name}_adjoint_rel_diff"] = rel(pg.adjoint(y.cuda()), pc.adjoint(y))
    print({k: v for k, v in report.items() if k.startswith("projector")}, flush=True)

    # 2. reference regime CPU vs CUDA
    sim = simulate(reference_config(seed=101))
    for dev in ("cpu", "cuda"):
        t0 = time.perf_counter()
        res = reconstruct(sim.tilt_series, device=dev)
        dt = time.perf_counter() - t0
        xyz, _ = local_maxima(res.volume, 0.357)
        m = match_atoms(xyz, sim.particle.positions)
        report[f"ref_{dev}"] = {"seconds": dt, "error": normalized_error(res.volume, sim.ideal.data), **m.as_dict()}
        report[f"ref_{dev}_volume"] = res.volume
    a, b = report.pop("ref_cpu_volume"), report.pop("ref_cuda_volume")
    report["ref_cuda_vs_cpu_rel_diff"] = float(np.abs(a - b).max() / np.abs(a).max())
    print({k: v for k, v in report.items() if k.startswith("ref")}, flush=True)

    # 3. 256³ x 60 projections
    big = simulate(reference_config(seed=102, n_voxels=256, size=6.0, tilt_range=70, tilt_step=140 / 59))
    assert big.tilt_series.data.shape == (60, 256, 256)
    for method in ("genfire", "resire", "sirt"):
        reconstruct(big.tilt_series, method=method, iterations=2, device="cuda")  # warm-up
        res, dt, gib = timed_cuda(lambda: reconstruct(big.tilt_series, method=method, iterations=100, device="cuda"))
        entry = {"seconds": dt, "peak_gpu_gib": gib, "r_factor": res.r_factors[-1],
                 "error": normalized_error(res.volume, big.ideal.data)}
        if method == "resire":
            xyz, _ = local_maxima(res.volume, 0.357)
            entry.update(match_atoms(xyz, big.particle.positions).as_dict())
        report[f"big_{method}"] = entry
        print(method, entry, flush=True)

    # 4. alignment on CUDA
    mis = simulate(reference_config(seed=103, shift_error=3.0, angle_error=1.0))
    t0 = time.perf_counter()
    al = align(mis.tilt_series.data, mis.tilt_series.angles, pixel_size=0.357, device="cuda")
    t = np.deg2rad(mis.tilt_series.angles)
    err = al.shifts - mis.shifts
    d = np.stack([np.cos(t), np.sin(t)], 1)
    c, *_ = np.linalg.lstsq(d, err[:, 0], rcond=None)
    da = al.angles - mis.true_angles[:, 1]
    report["align_cuda"] = {"seconds": time.perf_counter() - t0,
                            "max_shift_err_px": float(max(np.abs(err[:, 0] - d @ c).max(), np.abs(err[:, 1] - err[:, 1].mean()).max())),
                            "max_angle_err_deg": float(np.abs(da - da.mean()).max())}
    print(report["align_cuda"], flush=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
    main()

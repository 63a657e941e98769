"""Reconstruction quality, speed and memory, side by side with peers on the same data.

Run:  python benchmarks/bench_reconstruct.py [--seeds 101 102 103] [--peers astra svmbir]
Peers are benchmark-only extras: ``pip install astra-toolbox svmbir``.

Data: the simulator's reference regime (Pt Wulff particle, 144³, 0.357 Å, ±65° in 6.5°
steps = 21 projections, Poisson noise at 1e5 e/Å²), seeds not used while tuning. For
each method: wall time, time per iteration, normalized error against the ideal tomogram,
time to reach a normalized error of 0.35, peak memory above the process baseline, and the
figures of the same plain local-maximum tracer (recall, precision, RMSD within 1 Å).

Geometry hand-over to peers (checked on a point object: the projected centroids agree):
ASTRA 2D parallel beam per y-slice, image (rows=z, cols=x), angles -t; svmbir image
(slices=y, rows=x, cols=z), angles -t. Both put the centre at (n-1)/2, so volumes and
detectors are padded to an odd size (centre index n//2, as the contract) and cropped back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import psutil
import torch  # noqa: F401  (imported before the memory baseline: its libraries are not the method's memory)
import resource
import subprocess
import sys

from napari_aet.core.metrics import match_atoms, normalized_error
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import reference_config, simulate
from napari_aet.core.trace import local_maxima

TARGET_ERROR = 0.35


class PeakMemory:
    """Peak resident memory of this process above its level at entry (each method runs in a
    fresh process, so the peak is the method's own)."""

    def __enter__(self):
        self.base = psutil.Process().memory_info().rss
        return self

    def __exit__(self, *exc):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.gib = max(0, peak - self.base) / 2**30


def _pad_odd(data):
    a, nv, nu = data.shape
    out = np.zeros((a, nv, nu + 1), np.float32)
    out[:, :, :nu] = data
    return out


def run_astra(data, angles, n_iter, errors_every=None, ideal=None):
    import astra

    a, nv, nu = data.shape
    m = nu + 1
    sino = _pad_odd(data)
    vol_geom = astra.create_vol_geom(m, m)
    proj_geom = astra.create_proj_geom("parallel", 1.0, m, np.deg2rad(-np.asarray(angles)))
    proj_id = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.zeros((nu, nv, nu), np.float32)
    history = []
    chunk = errors_every or n_iter
    slices = []
    for j in range(nv):
        sid = astra.data2d.create("-sino", proj_geom, sino[:, j, :])
        rid = astra.data2d.create("-vol", vol_geom, 0)
        cfg = astra.astra_dict("SIRT")
        cfg.update(ProjectorId=proj_id, ProjectionDataId=sid, ReconstructionDataId=rid,
                   option={"MinConstraint": 0.0})
        alg = astra.algorithm.create(cfg)
        slices.append((sid, rid, alg))
    done = 0
    t0 = time.perf_counter()
    while done < n_iter:
        for sid, rid, alg in slices:
            astra.algorithm.run(alg, chunk)
        done += chunk
        if errors_every:
            for j, (_, rid, _) in enumerate(slices):
                out[:, j, :] = astra.data2d.get(rid)[:nu, :nu]
            history.append((done, time.perf_counter() - t0, normalized_error(out, ideal)))
    for j, (sid, rid, alg) in enumerate(slices):
        out[:, j, :] = astra.data2d.get(rid)[:nu, :nu]
        astra.algorithm.delete(alg)
        astra.data2d.delete([sid, rid])
    astra.projector.delete(proj_id)
    return out, history


def run_svmbir(data, angles):
    import svmbir

    a, nv, nu = data.shape
    m = nu + 1
    rec = svmbir.recon(_pad_odd(data), np.deg2rad(-np.asarray(angles)), num_rows=m, num_cols=m,
                       positivity=True, verbose=0, num_threads=os.cpu_count())
    # svmbir image (slices=y, rows=x, cols=z) -> (z, y, x)
    return np.ascontiguousarray(np.transpose(rec[:, :nu, :nu], (2, 0, 1))).astype(np.float32)


def figures(volume, sim):
    xyz, _ = local_maxima(volume, sim.config.pixel_size)
    m = match_atoms(xyz, sim.particle.positions)
    return {"error": normalized_error(volume, sim.ideal.data), "recall": m.recall,
            "precision": m.precision, "rmsd_pm": m.rmsd_pm}


def time_to_error(sim, method, iteration_grid):
    """Seconds to reach TARGET_ERROR (our methods: rerun at increasing iteration counts)."""
    for it in iteration_grid:
        t0 = time.perf_counter()
        res = reconstruct(sim.tilt_series, method=method, iterations=it, device="cpu")
        dt = time.perf_counter() - t0
        if normalized_error(res.volume, sim.ideal.data) <= TARGET_ERROR:
            return dt, it
    return float("nan"), None


def run_one(method: str, seed: int) -> dict:
    """One method on one seed (called in a fresh process)."""
    sim = simulate(reference_config(seed=seed))
    angles = sim.tilt_series.angles
    if method in ("resire", "sirt", "genfire"):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            res = reconstruct(sim.tilt_series, method=method, iterations=100, device="cpu")
            dt = time.perf_counter() - t0
        row = {"seed": seed, "method": f"napari-aet {method}", "iterations": 100, "seconds": dt,
               "s_per_iter": dt / 100, "peak_gib": mem.gib, **figures(res.volume, sim)}
        if method in ("resire", "sirt"):
            grid = [10, 20, 30, 40, 60, 80, 100, 150, 200, 300]
            row["s_to_error"], row["iters_to_error"] = time_to_error(sim, method, grid)
        return row
    if method == "astra":
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            vol, _ = run_astra(sim.tilt_series.data, angles, 100)
            dt = time.perf_counter() - t0
        row = {"seed": seed, "method": "ASTRA SIRT (CPU, 2D slices)", "iterations": 100, "seconds": dt,
               "s_per_iter": dt / 100, "peak_gib": mem.gib, **figures(vol, sim)}
        _, hist = run_astra(sim.tilt_series.data, angles, 300, errors_every=10, ideal=sim.ideal.data)
        hit = next((h for h in hist if h[2] <= TARGET_ERROR), None)
        row["iters_to_error"] = hit[0] if hit else None
        row["s_to_error"] = hit[0] * row["s_per_iter"] if hit else float("nan")
        return row
    if method == "svmbir":
        run_svmbir(sim.tilt_series.data[:, 70:72], angles)  # builds svmbir's system-matrix cache
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            vol = run_svmbir(sim.tilt_series.data, angles)
            dt = time.perf_counter() - t0
        return {"seed": seed, "method": "svmbir (MBIR, qGGMRF)", "iterations": None, "seconds": dt,
                "s_per_iter": None, "peak_gib": mem.gib, **figures(vol, sim)}
    raise ValueError(method)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--methods", nargs="*", default=["resire", "sirt", "genfire", "astra", "svmbir"])
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            out = subprocess.run([sys.executable, __file__, "--one", method, str(seed)], capture_output=True, text=True)
            if out.returncode:
                print(f"{method} seed {seed} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"mean over seeds {args.seeds}")
    print("| method | iterations | time (s) | s/iter | time to error ≤ 0.35 (s) | peak memory (GiB) | norm. error | recall | precision | RMSD (pm) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == name]

        def mean(k):
            vals = [r.get(k) for r in sel if r.get(k) is not None]
            return np.nanmean(vals) if vals else float("nan")

        it = sel[0]["iterations"]
        print(f"| {name} | {it if it else '-'} | {mean('seconds'):.1f} | "
              f"{mean('s_per_iter'):.3f} | {mean('s_to_error'):.1f} | {mean('peak_gib'):.2f} | {mean('error'):.3f} | "
              f"{mean('recall'):.4f} | {mean('precision'):.4f} | {mean('rmsd_pm'):.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

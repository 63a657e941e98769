"""Missing-wedge recovery by the shipped U-Net: figures of merit with and without the network.

Run:  python benchmarks/bench_enhance.py [--seeds 501 502 503]

Held-out particles (simulated with seeds never used in training), 144³, 0.357 Å, RESIRE
reconstruction, then the shipped weights (resources/unet_pt.pt) on the CPU:
1. normalized error to the ideal tomogram at ±60° and ±50° (21 projections);
2. inside the missing wedge: Pearson correlation of Fourier amplitudes with the ideal's
   (all radii), and the shell-averaged complex correlation over atomic-resolution shells
   (0.3-1.0 1/Å, lattice fringes; each shell weighted equally), also for an unconstrained
   SIRT reconstruction (no positivity: the "empty wedge" baseline);
3. tracer recall/precision at ±50° with 11 projections and low dose (2e4 e/Å², and a
   harder 5e3 e/Å²), overall and for the top/bottom quarter of the particle along the beam;
4. off-site atoms (5% moved 1 Å) and amorphous particles: recall of those atoms with and
   without the network; the same atoms for the input scaled by 0.1 and 10;
5. inference time and peak memory at 144³ and 256³ on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
import psutil

from napari_aet.core.enhance import enhance_volume, load_weights
from napari_aet.core.fourier import wedge_correlation, wedge_shell_correlation
from napari_aet.core.metrics import match_atoms, normalized_error
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import (
    add_poisson_noise, atom_weights, ideal_tomogram, project_atoms, reference_config, simulate,
)
from napari_aet.core.trace import trace_atoms
from napari_aet.core.training import _amorphous


def traced(vol):
    return trace_atoms(vol, 0.357).atoms[["x", "y", "z"]].to_numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[501, 502, 503])
    ap.add_argument("--out", default=None)
    ap.add_argument("--weights", default=None, help="weights to test (default: the shipped ones)")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    model, meta = load_weights(args.weights)
    rows = []
    for seed in args.seeds:
        for name, kw in (("pm60", dict(tilt_range=60, tilt_step=6.0)), ("pm50", dict(tilt_range=50, tilt_step=5.0)),
                         ("pm50_11_lowdose", dict(tilt_range=50, tilt_step=10.0, dose=2e4)),
                         ("pm50_11_5e3", dict(tilt_range=50, tilt_step=10.0, dose=5e3)),
                         ("offsite", dict(tilt_range=60, tilt_step=6.0, offsite_fraction=0.05))):
            sim = simulate(reference_config(seed=seed, **kw))
            rec = reconstruct(sim.tilt_series, device="cpu").volume
            out = enhance_volume(rec, model, 0.357, meta["training_pixel_size"])
            truth = sim.particle.positions
            mb, ma = match_atoms(traced(rec), truth), match_atoms(traced(out), truth)
            row = {"seed": seed, "case": name, "error_before": normalized_error(rec, sim.ideal.data),
                   "error_after": normalized_error(out, sim.ideal.data),
                   "wedge_corr_before": wedge_correlation(rec, sim.ideal.data, kw["tilt_range"]),
                   "wedge_corr_after": wedge_correlation(out, sim.ideal.data, kw["tilt_range"]),
                   "wedge_complex_corr_before": wedge_correlation(rec, sim.ideal.data, kw["tilt_range"], True),
                   "wedge_complex_corr_after": wedge_correlation(out, sim.ideal.data, kw["tilt_range"], True),
                   "wedge_shell_corr_before": wedge_shell_correlation(rec, sim.ideal.data, kw["tilt_range"], 0.357),
                   "wedge_shell_corr_after": wedge_shell_correlation(out, sim.ideal.data, kw["tilt_range"], 0.357),
                   "recall_before": mb.recall, "precision_before": mb.precision,
                   "recall_after": ma.recall, "precision_after": ma.precision}
            # atoms at the top and bottom along the beam (z): the wedge elongates them
            z = truth[:, 2]
            ends = (z < np.percentile(z, 25)) | (z > np.percentile(z, 75))
            row["recall_ends_before"] = match_atoms(traced(rec), truth[ends]).recall
            row["recall_ends_after"] = match_atoms(traced(out), truth[ends]).recall
            if name == "pm60":
                sirt = reconstruct(sim.tilt_series, method="sirt", positivity=False, device="cpu").volume
                row["wedge_corr_sirt"] = wedge_correlation(sirt, sim.ideal.data, kw["tilt_range"])
                row["wedge_shell_corr_sirt"] = wedge_shell_correlation(sirt, sim.ideal.data, kw["tilt_range"], 0.357)
                row["error_sirt"] = normalized_error(sirt, sim.ideal.data)
            if name == "offsite":
                off = sim.particle.is_particle & ~sim.particle.on_site
                fb = match_atoms(traced(rec), truth).true_index
                fa = match_atoms(traced(out), truth).true_index
                row["offsite_found_before"] = int(np.isin(np.flatnonzero(off), fb).sum())
                row["offsite_found_after"] = int(np.isin(np.flatnonzero(off), fa).sum())
                row["offsite_total"] = int(off.sum())
                for f in (0.1, 10.0):
                    o2 = enhance_volume(rec * f, model, 0.357, meta["training_pixel_size"])
                    row[f"recall_after_scale_{f}"] = match_atoms(traced(o2), truth).recall
            rows.append(row)
            print(json.dumps(row), flush=True)
        # amorphous particle (no lattice)
        rng = np.random.default_rng(seed)
        pos = _amorphous(15.0, rng)
        w = atom_weights(["Pt"] * len(pos))
        ang = np.linspace(-60, 60, 21)
        tilts = add_poisson_noise(project_atoms(pos, w, ang, (144, 144), 0.357, 5.0), 1e5, 0.02, rng)
        ideal = ideal_tomogram(pos, w, (144, 144, 144), 0.357, 5.0)
        rec = reconstruct(tilts, ang, 0.357, device="cpu").volume
        out = enhance_volume(rec, model, 0.357, meta["training_pixel_size"])
        mb, ma = match_atoms(traced(rec), pos), match_atoms(traced(out), pos)
        row = {"seed": seed, "case": "amorphous", "error_before": normalized_error(rec, ideal),
               "error_after": normalized_error(out, ideal), "recall_before": mb.recall, "precision_before": mb.precision,
               "recall_after": ma.recall, "precision_after": ma.precision}
        rows.append(row)
        print(json.dumps(row), flush=True)
    # inference time and memory on the CPU
    timing = {}
    for n in (() if args.no_timing else (144, 256)):
        vol = np.random.default_rng(0).random((n, n, n)).astype(np.float32)
        base = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        enhance_volume(vol, model, tile=144)
        timing[n] = {"seconds": time.perf_counter() - t0,
                     "peak_rss_above_start_gib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / 2**30}
    print(json.dumps(timing))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; seeds {args.seeds}")
    print("| case | norm. error before -> after | wedge amplitude corr. before -> after | wedge complex corr. before -> after | wedge shell corr. 0.3-1 1/Å before -> after | recall before -> after | precision before -> after | recall top/bottom quarter before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        sel = [r for r in rows if r["case"] == case]
        m = lambda k: np.mean([r[k] for r in sel]) if k in sel[0] else float("nan")  # noqa: E731
        print(f"| {case} | {m('error_before'):.3f} -> {m('error_after'):.3f} | {m('wedge_corr_before'):.2f} -> {m('wedge_corr_after'):.2f} | "
              f"{m('wedge_complex_corr_before'):.2f} -> {m('wedge_complex_corr_after'):.2f} | "
              f"{m('wedge_shell_corr_before'):.2f} -> {m('wedge_shell_corr_after'):.2f} | "
              f"{m('recall_before'):.4f} -> {m('recall_after'):.4f} | {m('precision_before'):.4f} -> {m('precision_after'):.4f} | "
              f"{m('recall_ends_before'):.4f} -> {m('recall_ends_after'):.4f} |")
    sel = [r for r in rows if "wedge_corr_sirt" in r]
    if sel:
        print(f"unconstrained SIRT (±60°): norm. error {np.mean([r['error_sirt'] for r in sel]):.3f}, wedge amplitude "
              f"corr. {np.mean([r['wedge_corr_sirt'] for r in sel]):.2f}, wedge shell corr. "
              f"{np.mean([r['wedge_shell_corr_sirt'] for r in sel]):.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "timing": timing}, f, indent=1)


if __name__ == "__main__":
    main()

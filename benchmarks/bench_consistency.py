"""Choosing the data-consistency tolerance of the network (issue 12, point 5), on validation
particles of the training family only (the project's own simulator, seeds 701-704 by
default; the test seeds 601-603 and the abTEM family are never used here).

Run:  python benchmarks/bench_consistency.py [--seeds 701 702 703 704] [--doses 2e4 1e3 5e2]

For each case: the re-projection R-factor of the RESIRE tomogram and of the network's
tomogram against the noisy tilt series, their ratio, and recall/precision of tracing with and
without the network, plus the same for a damaged network (weights scaled by 1.5 in the last
layer) that must be rejected. The tolerance is the smallest ratio - 1 that accepts every
case where the network did not lower recall, rounded up.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from napari_aet.core.enhance import data_consistency, enhance_volume, load_weights
from napari_aet.core.metrics import match_atoms
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import reference_config, simulate
from napari_aet.core.trace import trace_atoms

GEOMETRIES = {"50/11": (50.0, 10.0), "65/21": (65.0, 6.5)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[701, 702, 703, 704])
    ap.add_argument("--doses", type=float, nargs="+", default=[2e4, 1e3, 5e2])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    net, meta = load_weights(args.weights)
    import copy

    import torch

    damaged = copy.deepcopy(net)
    with torch.no_grad():
        last = [m for m in damaged.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        last.weight.mul_(4.0)
    rows = []
    for seed in args.seeds:
        for geo, (rng_range, step) in GEOMETRIES.items():
            for dose in args.doses:
                sim = simulate(reference_config(seed=seed, tilt_range=rng_range, tilt_step=step, dose=dose,
                                                offsite_fraction=0.05, vacancy_fraction=0.05))
                ts = sim.tilt_series
                rec = reconstruct(ts, device="cpu").volume
                truth = sim.particle.positions
                row = {"seed": seed, "geometry": geo, "dose": dose}
                for tag, model in (("net", net), ("damaged", damaged)):
                    out = enhance_volume(rec, model, 0.357, meta["training_pixel_size"])
                    c = data_consistency(rec, out, ts.data, ts.angles)
                    row[f"ratio_{tag}"] = c["r_factor_enhanced"] / c["r_factor_reconstruction"]
                    row["r_rec"] = c["r_factor_reconstruction"]
                    m = match_atoms(trace_atoms(out, 0.357).atoms[["x", "y", "z"]].to_numpy(), truth)
                    row[f"recall_{tag}"], row[f"precision_{tag}"] = m.recall, m.precision
                m = match_atoms(trace_atoms(rec, 0.357).atoms[["x", "y", "z"]].to_numpy(), truth)
                row["recall_plain"], row["precision_plain"] = m.recall, m.precision
                rows.append(row)
                print(json.dumps(row), flush=True)
    good = [r["ratio_net"] for r in rows if r["recall_net"] >= r["recall_plain"] - 0.002]
    bad = [r["ratio_damaged"] for r in rows if r["recall_damaged"] < r["recall_plain"] - 0.002]
    print(f"\nnetwork did not lower recall in {len(good)} of {len(rows)} cases; their R ratio: "
          f"max {max(good) if good else float('nan'):.3f}, median {np.median(good) if good else float('nan'):.3f}")
    print(f"damaged network lowered recall in {len(bad)} cases; their R ratio: min {min(bad) if bad else float('nan'):.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

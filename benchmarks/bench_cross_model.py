"""Cross-model benchmark: tracing with and without the U-Net on tilt series made by a forward
model the network was not trained on (issue 12, point 3).

Run:  python benchmarks/bench_cross_model.py [--seeds 601 602 603] [--doses 2e4 1e3 5e2]
          [--models own abtem] [--weights W.pt] [--out results.json]

Particles: the project's particle generator (reference regime: Pt Wulff particles, 3.5 nm,
0.357 Å, 144³) with 5% of the atoms moved 1 Å off their sites and 5% of the surface atoms
removed, held-out seeds.
Forward models (columns):
- ``own``: the project's Gaussian-atom simulator, which made the network's training data;
- ``abtem``: :mod:`napari_aet.core.forward_abtem`, abTEM's Lobato projected potentials with
  a 300 kV, 25 mrad probe at 20 Å defocus and B = 8 Å² (training used Gaussian atoms with
  B = 5 Å² and no probe).
Geometries: ±50° with 11 projections and ±65° with 21. Poisson noise at each dose (e/Å²,
cross-section 0.02 Å² per Pt atom). RESIRE (100 iterations) on the CPU, then the shipped
weights; the project's tracer on both. Recall, precision and RMSD (pm) against the true
atoms, and the share of off-site atoms (true ``fcc`` = 0) found.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_aet.core.enhance import enhance_volume, load_weights
from napari_aet.core.metrics import match_atoms
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import add_poisson_noise, reference_config, simulate
from napari_aet.core.trace import trace_atoms

GEOMETRIES = {"50/11": (50.0, 10.0), "65/21": (65.0, 6.5)}


def projections(model: str, sim, angles):
    p = sim.particle
    if model == "own":
        from napari_aet.core.simulate import atom_weights, project_atoms

        return project_atoms(p.positions, atom_weights(p.species), angles, (144, 144), 0.357, b_factor=5.0)
    from napari_aet.core.forward_abtem import ProbeSettings, abtem_projections

    return abtem_projections(p.positions, p.species, angles, (144, 144), 0.357, b_factor=8.0,
                             probe=ProbeSettings(defocus=20.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[601, 602, 603])
    ap.add_argument("--doses", type=float, nargs="+", default=[2e4, 1e3, 5e2])
    ap.add_argument("--models", nargs="+", default=["own", "abtem"])
    ap.add_argument("--geometries", nargs="+", default=list(GEOMETRIES))
    ap.add_argument("--weights", default=None, help="weights to test (default: the shipped ones)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    net, meta = load_weights(args.weights)
    rows = []
    for seed in args.seeds:
        for geo in args.geometries:
            rng_range, step = GEOMETRIES[geo]
            sim = simulate(reference_config(seed=seed, tilt_range=rng_range, tilt_step=step, dose=None,
                                            offsite_fraction=0.05, vacancy_fraction=0.05))
            truth = sim.particle.positions
            offsite = np.flatnonzero(sim.truth_table()["fcc"].to_numpy() == 0)
            angles = sim.tilt_series.angles
            for model in args.models:
                t0 = time.perf_counter()
                clean = projections(model, sim, angles)
                t_forward = time.perf_counter() - t0
                for dose in args.doses:
                    noisy = add_poisson_noise(clean, dose, 0.02, np.random.default_rng(seed + int(dose)))
                    rec = reconstruct(noisy, angles, 0.357, device="cpu").volume
                    out = enhance_volume(rec, net, 0.357, meta["training_pixel_size"])
                    row = {"seed": seed, "geometry": geo, "model": model, "dose": dose, "n_atoms": len(truth),
                           "n_offsite": len(offsite), "forward_seconds_per_projection": round(t_forward / len(angles), 2)}
                    for tag, vol in (("without", rec), ("with", out)):
                        xyz = trace_atoms(vol, 0.357).atoms[["x", "y", "z"]].to_numpy()
                        m = match_atoms(xyz, truth)
                        row[f"recall_{tag}"], row[f"precision_{tag}"], row[f"rmsd_pm_{tag}"] = m.recall, m.precision, m.rmsd_pm
                        row[f"offsite_found_{tag}"] = float(np.isin(offsite, m.true_index).mean()) if len(offsite) else None
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| model | geometry | dose (e/Å²) | recall without -> with | precision without -> with | RMSD pm without -> with | off-site found without -> with |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for geo in args.geometries:
            for dose in args.doses:
                sel = [r for r in rows if r["model"] == model and r["geometry"] == geo and r["dose"] == dose]
                if not sel:
                    continue
                m = lambda k: np.mean([r[k] for r in sel if r[k] is not None])  # noqa: E731
                print(f"| {model} | ±{geo} | {dose:g} | {m('recall_without'):.4f} -> {m('recall_with'):.4f} | "
                      f"{m('precision_without'):.4f} -> {m('precision_with'):.4f} | {m('rmsd_pm_without'):.1f} -> "
                      f"{m('rmsd_pm_with'):.1f} | {m('offsite_found_without'):.3f} -> {m('offsite_found_with'):.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

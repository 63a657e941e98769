"""Extended objects: reconstruction of a box inside a sample that leaves the field of view
(issue 18, point 3).

Run:  python benchmarks/bench_extended_object.py [--doses 0 5e3] [--out results.json]

Cases (the project's Gaussian-atom projector, B = 5 Å², 0.357 Å, a 64-pixel field of view,
single-axis tilts ±60° in 6° steps, volumes 96 voxels thick):
- ``film``: a Pt(001) film 85 x 85 x 10 Å (5,808 atoms), 5 pm position noise;
- ``supported``: a Pt Wulff particle (seed 7, 2 nm) on an amorphous carbon film 85 x 85 x 6 Å
  (0.10 atoms/Å³, contrast (6/78)^1.7 per atom) that leaves the field of view.
Three reconstructions (RESIRE, 100 iterations), each traced by the project's tracer:
- ``all inside``: a detector 320 pixels wide and a 320-voxel-wide volume that hold the whole
  sample at every tilt, cut to the central box afterwards: the reference;
- ``box``: the 64-pixel field of view reconstructed into a 96 x 64 x 64 box (signal from outside is
  folded into it);
- ``extended``: the same field of view with ``extended_object=True``.
Scored on the heavy atoms whose true positions lie inside the central box (2 voxels in from
its x and y faces): recall, precision, RMSD (pm) within 1 Å.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_aet.core.metrics import match_atoms
from napari_aet.core.reconstruct import reconstruct
from napari_aet.core.simulate import (
    SimulationConfig,
    _amorphous_slab,
    add_poisson_noise,
    atom_weights,
    make_particle,
    project_atoms,
)
from napari_aet.core.trace import trace_atoms

PX, N, NZ, WIDE = 0.357, 64, 96, 320
TILTS = np.arange(-60, 61, 6.0)


def film():
    from ase.build import bulk

    a = 3.92
    pos = bulk("Pt", "fcc", a=a, cubic=True).repeat((21, 21, 3)).get_positions()
    pos = pos - pos.mean(0) + np.random.default_rng(0).normal(0, 0.05, (len(pos), 3))
    return pos, np.ones(len(pos)), np.ones(len(pos), bool)


def supported():
    rng = np.random.default_rng(7)
    p = make_particle(SimulationConfig(size=2.0, seed=7), rng)
    top = p.positions[:, 2].min() - 2.0
    sub = _amorphous_slab(np.array([-42.5, -42.5, top - 6.0]), np.array([42.5, 42.5, top]), 0.10, 1.4, rng)
    pos = np.vstack([p.positions, sub])
    pos = pos - np.r_[p.positions[:, :2].mean(0), (pos[:, 2].min() + pos[:, 2].max()) / 2]  # all of it in z
    weights = np.r_[atom_weights(p.species), atom_weights(["C"] * len(sub))]
    return pos, weights, np.r_[np.ones(len(p.positions), bool), np.zeros(len(sub), bool)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--doses", type=float, nargs="+", default=[0.0, 5e3], help="e/Å² (0: noise-free)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    half = (N // 2 - 2) * PX
    rows = []
    for case, make in (("film", film), ("supported", supported)):
        pos, weights, heavy = make()
        inside = heavy & (np.abs(pos[:, 0]) < half) & (np.abs(pos[:, 1]) < half)

        def score(vol):
            xyz = trace_atoms(vol, PX).atoms[["x", "y", "z"]].to_numpy()
            keep = (np.abs(xyz[:, 0]) < half) & (np.abs(xyz[:, 1]) < half)
            m = match_atoms(xyz[keep], pos[inside])
            return {"recall": round(m.recall, 4), "precision": round(m.precision, 4), "rmsd_pm": round(m.rmsd_pm, 1)}

        whole0 = project_atoms(pos, weights, TILTS, (N, WIDE), PX)
        field0 = project_atoms(pos, weights, TILTS, (N, N), PX)
        for dose in args.doses:
            whole = whole0 if not dose else add_poisson_noise(whole0, dose, 0.02, np.random.default_rng(1))
            field = field0 if not dose else add_poisson_noise(field0, dose, 0.02, np.random.default_rng(1))
            row = {"case": case, "dose": dose or None, "n_atoms": int(len(pos)), "n_scored": int(inside.sum())}
            t0 = time.perf_counter()
            lo = WIDE // 2 - N // 2
            row["all_inside"] = score(reconstruct(whole, TILTS, PX, volume_shape=(NZ, N, WIDE), device="cpu").volume[:, :, lo:lo + N])
            t1 = time.perf_counter()
            row["box"] = score(reconstruct(field, TILTS, PX, volume_shape=(NZ, N, N), device="cpu").volume)
            t2 = time.perf_counter()
            ext = reconstruct(field, TILTS, PX, volume_shape=(NZ, N, N), device="cpu", extended_object=True)
            row["extended"] = score(ext.volume)
            row["extended_padding_yx"] = ext.settings["extended_padding_yx"]
            row["seconds"] = {"all_inside": round(t1 - t0, 1), "box": round(t2 - t1, 1), "extended": round(ext.seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| case | dose (e/Å²) | all inside | box only | extended |")
    print("|---|---|---|---|---|")
    for r in rows:
        cell = lambda k: f"{r[k]['recall']:.3f} / {r[k]['precision']:.3f} / {r[k]['rmsd_pm']:.1f}"  # noqa: E731
        print(f"| {r['case']} | {r['dose'] or 'noise-free'} | {cell('all_inside')} | {cell('box')} | {cell('extended')} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""Crystal analysis figures of merit against the simulator's ground truth, and speed.

Run:  python benchmarks/bench_analysis.py [--seeds 701 702 703]

Random orientations, 15 pm RMS (3D) of position noise added to the true positions:
* volumetric strain (exx + eyy + ezz) of interior atoms vs the imposed field: Pearson r and
  RMSE after removing the mean (the fitted lattice absorbs the mean dilation), for strain
  smoothing sigma = 1.0 and 1.5 lattice constants;
* off-site atoms (3% moved 1 Å): flagged not-fcc (recall) and on-site atoms flagged (false);
  lattice constant error on unstrained particles;
* {100}/{111} facet atoms of Wulff particles and truncated octahedra labelled with the right
  family;
* an ASE decahedron: share assigned;
* speed: ~20,000 atoms.
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
from ase.cluster import Decahedron

from napari_aet.core.analysis import analyze_atoms
from napari_aet.core.lattice import (
    assign_sites, coordination, displacements, fit_fcc_lattice, interior_atoms, strain_tensor,
)
from napari_aet.core.simulate import SimulationConfig, make_particle, particle_table


def noisy(pos, seed):
    return pos + np.random.default_rng(seed).normal(scale=0.15 / np.sqrt(3), size=pos.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[701, 702, 703])
    args = ap.parse_args()
    rows = {}
    for seed in args.seeds:
        p = make_particle(SimulationConfig(size=4.0, strain=0.01, seed=seed, n_voxels=200))
        pos = noisy(p.positions, seed)
        lat = fit_fcc_lattice(pos)
        site, ok = assign_sites(pos, lat)
        u = displacements(pos, site, ok, lat)
        surface = coordination(pos, lat.lattice_constant) < 12
        groups = {"deep": ok & interior_atoms(pos, surface, lat.lattice_constant), "non-surface": ok & ~surface}
        for f in (1.0, 1.25, 1.5):
            eps = strain_tensor(site, u, lat, sigma=f * lat.lattice_constant)
            for name, inner in groups.items():
                tv, ev = p.strain[inner, :3].sum(1), eps[inner, :3].sum(1)
                d = (tv - tv.mean()) - (ev - ev.mean())
                rows.setdefault(f"strain_{name}_sigma_{f}a", []).append((np.corrcoef(tv, ev)[0, 1], 100 * np.sqrt((d**2).mean())))
        q = make_particle(SimulationConfig(size=4.0, offsite_fraction=0.03, seed=seed, n_voxels=200))
        pos = noisy(q.positions, seed + 1)
        lat = fit_fcc_lattice(pos)
        _, ok = assign_sites(pos, lat)
        off = ~q.on_site
        rows.setdefault("offsite", []).append(((~ok[off]).mean(), (~ok[~off]).mean(), 100 * abs(lat.lattice_constant / 3.924 - 1)))
        for shape in ("wulff", "octahedron"):
            cfg = SimulationConfig(size=3.5, shape=shape, seed=seed)
            t = particle_table(make_particle(cfg), cfg)
            out, _ = analyze_atoms(pd.DataFrame(noisy(t[["x", "y", "z"]].to_numpy(), seed + 2), columns=["x", "y", "z"]))
            for fam in ("100", "111"):
                sel = t["facet"].to_numpy() == fam
                if sel.sum():
                    rows.setdefault(f"facet_{fam}_{shape}", []).append(((out["facet"].to_numpy()[sel] == fam).mean(), int(sel.sum())))
    d = Decahedron("Pt", p=6, q=2, r=1, latticeconstant=3.924)
    _, m = analyze_atoms(pd.DataFrame(d.positions, columns=["x", "y", "z"]))
    big = make_particle(SimulationConfig(size=8.4, n_voxels=320, seed=5, strain=0.003))
    t0 = time.perf_counter()
    analyze_atoms(pd.DataFrame(big.positions, columns=["x", "y", "z"]))
    speed = time.perf_counter() - t0
    for k, v in rows.items():
        a = np.array(v, float)
        print(k, "mean", np.round(a.mean(0), 4).tolist(), "min", np.round(a.min(0), 4).tolist(), "max", np.round(a.max(0), 4).tolist())
    print(json.dumps({"decahedron_atoms": len(d), "decahedron_share_assigned": m["share_assigned"],
                      "speed_atoms": len(big.positions), "speed_seconds": speed}))


if __name__ == "__main__":
    main()

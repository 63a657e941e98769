"""Crystal analysis at scale (issue 14, point 3): time, peak memory and share assigned on
perfect f.c.c. octahedra (ASE) with 15 pm position noise, 10^3 to 10^6 atoms.

Run:  python benchmarks/bench_analysis_scale.py [--lengths 11 25 59 115] [--lattice auto]

Each size runs in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, pandas as pd, psutil
from ase.cluster import Octahedron
from napari_aet.core.analysis import analyze_atoms
length, lattice = int(sys.argv[1]), sys.argv[2]
at = Octahedron("Pt", length, cutoff=0, latticeconstant=3.924)
pos = at.positions - at.positions.mean(0)
pos = pos + np.random.default_rng(0).normal(scale=0.15 / np.sqrt(3), size=pos.shape)
df = pd.DataFrame({"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "atom": 1, "species": "Pt"})
t0 = time.perf_counter()
out, s = analyze_atoms(df, lattice=lattice)
sec = time.perf_counter() - t0
info = psutil.Process().memory_info()
peak = getattr(info, "peak_wset", None) or __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"atoms": len(pos), "seconds": round(sec, 1), "peak_gib": round(peak / 2**30, 2),
                  "share_assigned": round(s["share_assigned"], 5), "lattice": s["lattice"]["kind"],
                  "a": round(s["lattice"]["lattice_constant"], 5)}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[11, 25, 59, 115],
                    help="ASE octahedron lengths (11: 891 atoms, 25: 10,425, 59: 136,939, 115: 1,013,955)")
    ap.add_argument("--lattice", default="auto")
    args = ap.parse_args()
    rows = []
    for n in args.lengths:
        res = subprocess.run([sys.executable, "-c", CHILD, str(n), args.lattice], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| atoms | seconds | peak memory (GiB) | share assigned | lattice | a (Å) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['atoms']:,} | {r['seconds']} | {r['peak_gib']} | {r['share_assigned']:.5f} | {r['lattice']} | {r['a']} |")


if __name__ == "__main__":
    main()

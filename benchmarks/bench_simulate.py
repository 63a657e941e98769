"""Simulator speed in the reference regime (Pt, 0.357 Å, 144³, ±65° in 6.5° steps, Poisson noise).

Run: python benchmarks/bench_simulate.py [--repeats 5]
Target (issue 2): tilt series + ideal tomogram in under 10 s on 2 CPU cores.
"""

import argparse
import os
import platform
import time

import numpy as np

from napari_aet.core.simulate import reference_config, simulate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for shape, size in (("wulff", 3.5), ("octahedron", 4.0), ("spheres", 4.0)):
        times = []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            sim = simulate(reference_config(seed=seed, shape=shape, size=size))
            times.append(time.perf_counter() - t0)
        rows.append((shape, size, int(sim.particle.is_particle.sum()), np.median(times), max(times)))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print("| shape | size (nm) | atoms (last seed) | median (s) | max (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} |")


if __name__ == "__main__":
    main()

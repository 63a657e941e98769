"""What one full multislice HAADF-STEM projection costs with abTEM on this machine: PRISM
(interpolation 2), frozen phonons, an annular detector; a small Pt particle.

    python benchmarks/bench_multislice_cost.py [--size 1.2] [--phonons 2] [--voxels 64]

The physics it adds over ``core.forward.AbtemPotential`` (projected potential x probe
intensity): dynamical scattering and channelling along zone axes, thermal diffuse scattering
(frozen phonons), the detector's angular range. Prints seconds per projection.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import abtem
    import ase

    from napari_aet.core.simulate import SimulationConfig, make_particle

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=1.2, help="particle diameter, nm")
    ap.add_argument("--voxels", type=int, default=64, help="scan positions per edge (0.357 Å apart)")
    ap.add_argument("--phonons", type=int, default=2, help="frozen-phonon configurations")
    args = ap.parse_args()
    abtem.config.set({"device": "cpu"})
    p = make_particle(SimulationConfig(size=args.size, n_voxels=args.voxels, pixel_size=0.357, seed=3))
    extent = args.voxels * 0.357
    atoms = ase.Atoms(["Pt"] * len(p.positions), positions=p.positions + extent / 2,
                      cell=[extent] * 3, pbc=True)
    t0 = time.perf_counter()
    frozen = abtem.FrozenPhonons(atoms, num_configs=args.phonons, sigmas=0.08, seed=1)
    potential = abtem.Potential(frozen, sampling=0.04, slice_thickness=2.0, projection="infinite",
                                parametrization="lobato")
    smatrix = abtem.SMatrix(potential=potential, energy=300e3, semiangle_cutoff=25.0, interpolation=2)
    scan = abtem.GridScan(start=(0, 0), end=(extent, extent), sampling=0.357)
    image = np.asarray(smatrix.scan(scan=scan, detectors=abtem.AnnularDetector(inner=60, outer=150))
                       .compute(progress_bar=False).array)
    seconds = time.perf_counter() - t0
    print(f"{len(p.positions)} Pt atoms, {image.shape[0]}x{image.shape[1]} scan, {args.phonons} frozen phonons: "
          f"{seconds:.1f} s per projection")


if __name__ == "__main__":
    main()

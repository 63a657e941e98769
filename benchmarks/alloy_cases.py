"""Real alloy shapes as benchmark cases (issue 24): the published Pt-Ni nanocatalyst models of
``AET-nanocatalysts/Pt-Alloy`` (``3_Final_coordinates``: positions in
``atom_model/model_S*.mat``, types in ``atom_type/atoms_S*.mat``, 1 = Ni, 2 = Pt), projected
through the abTEM forward model (:mod:`napari_aet.core.forward_abtem`: Lobato projected
potentials, 300 kV 25 mrad probe at 20 Å defocus, B = 8 Å², per-atom intensity
``(Z/78)^1.7``), never the project's own Gaussian atoms.

Build:  python benchmarks/alloy_cases.py REPO_DIR S1 [--geometry 65/21] [--dose 1e5]
            [--out /tmp/aet-bench/alloy]

REPO_DIR is a checkout or the bare mirror ``fetch`` brings (files are read with ``git show``
when it is one). The case folder holds ``tilts.npy`` (noisy, Pt-atom units), ``angles.txt``,
``truth.csv`` (x, y, z in Å, sample frame, species) and ``case.json``.

Atoms the published model places closer than 1 Å to another (two in S1, S5: a site counted
twice) are merged into one, the heavier species kept; the count is recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
from pathlib import Path

import numpy as np

GEOMETRIES = {"65/21": (65.0, 6.5), "50/11": (50.0, 10.0)}
PIXEL_SIZE = 0.357  # Å, the reference regime
CROSS_SECTION = 0.02  # Å² per Pt atom, as the simulator's Poisson noise
SPECIES = {1: "Ni", 2: "Pt"}


def _read_mat(repo: Path, rel: str) -> dict:
    import scipy.io as sio

    path = repo / rel
    if path.exists():
        return sio.loadmat(path)
    raw = subprocess.run(["git", "--git-dir", str(repo), "show", f"HEAD:{rel}"], check=True,
                         capture_output=True).stdout
    return sio.loadmat(io.BytesIO(raw))


def load_model(repo, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Published positions (n, 3) Å centred on the particle, species symbols, atoms merged."""
    from scipy.spatial import cKDTree

    repo = Path(repo)
    m = _read_mat(repo, f"3_Final_coordinates/atom_model/model_{name}.mat")
    t = _read_mat(repo, f"3_Final_coordinates/atom_type/atoms_{name}.mat")
    pos = next(v for k, v in m.items() if not k.startswith("__")).T.astype(float)
    types = next(v for k, v in t.items() if not k.startswith("__")).ravel().astype(int)
    pos -= pos.mean(0)
    keep = np.ones(len(pos), bool)
    for i, j in sorted(cKDTree(pos).query_pairs(1.0)):
        if keep[i] and keep[j]:
            drop = j if types[i] >= types[j] else i
            keep[drop] = False
    species = np.array([SPECIES[k] for k in types[keep]])
    return pos[keep], species, int((~keep).sum())


def build_case(repo, name: str, geometry: str, dose: float, out: Path, seed: int = 0) -> Path:
    """Write the case folder (cached: the clean projections are reused across doses)."""
    import pandas as pd

    from napari_aet.core.forward_abtem import ProbeSettings, abtem_projections
    from napari_aet.core.simulate import add_poisson_noise, tilt_angles

    pos, species, merged = load_model(repo, name)
    rng_deg, step = GEOMETRIES[geometry]
    angles = tilt_angles(rng_deg, step)
    n = int(np.ceil(2 * np.linalg.norm(pos, axis=1).max() / PIXEL_SIZE)) + 16
    n += n % 2
    case = out / f"{name}_{geometry.replace('/', '-')}_{dose:g}"
    case.mkdir(parents=True, exist_ok=True)
    clean_path = out / f"{name}_{geometry.replace('/', '-')}_clean.npy"
    t0 = time.perf_counter()
    if clean_path.exists():
        clean = np.load(clean_path)
    else:
        clean = abtem_projections(pos, species, angles, (n, n), PIXEL_SIZE, b_factor=8.0,
                                  probe=ProbeSettings(defocus=20.0))
        np.save(clean_path, clean)
    seconds = time.perf_counter() - t0
    noisy = add_poisson_noise(clean, dose, CROSS_SECTION, np.random.default_rng(seed))
    np.save(case / "tilts.npy", noisy)
    np.savetxt(case / "angles.txt", angles, fmt="%.4f")
    pd.DataFrame({"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "species": species}).to_csv(
        case / "truth.csv", index=False)
    info = {"particle": name, "source": "AET-nanocatalysts/Pt-Alloy 3_Final_coordinates", "geometry": geometry,
            "dose": dose, "seed": seed, "pixel_size": PIXEL_SIZE, "shape": [len(angles), n, n],
            "n_atoms": len(pos), "n_by_species": {s: int((species == s).sum()) for s in np.unique(species)},
            "merged_duplicates": merged, "forward_model": "abtem lobato, 300 kV 25 mrad, defocus 20 A, B 8 A2",
            "forward_seconds": round(seconds, 1)}
    (case / "case.json").write_text(json.dumps(info, indent=1))
    return case


def load_case(case: Path):
    """(TiltSeries, truth positions (n, 3), truth species)."""
    import pandas as pd

    from napari_aet.core.io import TiltSeries

    info = json.loads((case / "case.json").read_text())
    ts = TiltSeries(np.load(case / "tilts.npy"), np.loadtxt(case / "angles.txt"), info["pixel_size"])
    truth = pd.read_csv(case / "truth.csv")
    return ts, truth[["x", "y", "z"]].to_numpy(), truth["species"].astype(str).to_numpy()


def score(table, truth_pos, truth_species, max_distance: float = 1.0) -> dict:
    """Recall, precision, RMSD (pm) overall and per species; species accuracy of matched atoms."""
    from napari_aet.core.metrics import match_atoms

    atoms = table[table["atom"] == 1] if "atom" in table else table
    found = atoms[["x", "y", "z"]].to_numpy()
    m = match_atoms(found, truth_pos, max_distance)
    out = {"recall": round(m.recall, 4), "precision": round(m.precision, 4), "rmsd_pm": round(m.rmsd_pm, 1),
           "n_found": len(found), "n_true": len(truth_pos)}
    fi, ti = np.asarray(m.found_index), np.asarray(m.true_index)
    named = atoms["species"].astype(str).to_numpy() if "species" in atoms else np.full(len(found), "")
    d = np.linalg.norm(found[fi] - truth_pos[ti], axis=1) * 100
    for s in np.unique(truth_species):
        sel = truth_species[ti] == s
        out[f"recall_{s}"] = round(sel.sum() / max((truth_species == s).sum(), 1), 4)
        out[f"rmsd_pm_{s}"] = round(float(np.sqrt(np.mean(d[sel] ** 2))), 1) if sel.any() else None
    if np.any(named != ""):
        out["species_accuracy"] = round(float(np.mean(named[fi] == truth_species[ti])), 4)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--geometry", default="65/21", choices=list(GEOMETRIES))
    ap.add_argument("--dose", type=float, default=1e5)
    ap.add_argument("--out", default="/tmp/aet-bench/alloy")
    args = ap.parse_args()
    for name in args.names:
        print(build_case(args.repo, name, args.geometry, args.dose, Path(args.out)))


if __name__ == "__main__":
    main()

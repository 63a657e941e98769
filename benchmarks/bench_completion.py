"""A model the data completes (issue 23, item 3): recall and precision of the traced and
refined atoms before and after :func:`napari_aet.core.completion.complete_atoms`.

Run:  python benchmarks/bench_completion.py sim [--models own abtem] [--seeds 4 5] [--dose 1e4]
      python benchmarks/bench_completion.py ta CASE_DIR START_DIR SCORER [--out-dir DIR]

``sim``: Pt Wulff particles 3 nm, 112³ at 0.357 Å, ±50° in 10° steps (11 projections), Poisson
noise, projected by the project's Gaussian atoms (``own``, B = 5 Å²) or by abTEM
(``abtem``: Lobato projected potentials, B = 8 Å²). One projection is held out
(:func:`~napari_aet.core.confidence.split_free_projections`, 10 %); RESIRE on the others,
``pipeline.trace_volume(..., free=free)`` traces, refines and refits on all projections: the
"before" model. Completion starts from those atoms and the refinement's heights and B-factors
and ends, like the pipeline, with a 30-iteration refit on every projection: "after". Scored
against the simulated truth (``metrics.match_atoms``, 1 Å); ``missed_recovered`` is the share
of the atoms the chain missed that completion found.

``ta``: the measured Ta film, sub-area 22 (46 general-Euler projections; a case folder with
tilts.mrc, angles.txt, truth.csv). The start is a ``napari-aet run --no-align
--extended-object`` result folder (atoms.csv); its atoms are refined on the working
projections (5 held out) first, then completed with ``extended_object=True``, refitted on all
46 and scored by SCORER (``real_ta_score.py``: interior recall and precision against the
published model). The same refit of the start model without completion is scored too.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np

from napari_aet.core import confidence as C
from napari_aet.core.completion import complete_atoms
from napari_aet.core.metrics import match_atoms
from napari_aet.core.refine import refine_positions

VARIANTS = {  # name -> complete_atoms settings
    "add+drop(z<-2)": dict(drop=True, drop_significance=2.0),
    "add only": dict(drop=False),
    "add+drop(occ<0.5)": dict(drop=True, drop_significance=0.0),
    "add only, step 0.003": dict(drop=False, refine_step=0.003),
}
REFIT = dict(iterations=30, step_size=0.003)  # as pipeline._validate_atoms


def simulated_baseline(seed: int, model: str, dose: float, cache: Path | None):
    """The simulation, held-out flags, reconstruction shape and trace_volume's table and metadata."""
    from napari_aet.core.io import Volume
    from napari_aet.core.pipeline import trace_volume
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import reference_config, simulate

    path = cache / f"completion_{seed}_{model}_{int(dose)}.pkl" if cache else None
    if path and path.exists():
        return pickle.loads(path.read_bytes())
    cfg = reference_config(seed=seed, dose=dose, tilt_range=50, tilt_step=10, size=3.0, n_voxels=112)
    forward = None
    if model == "abtem":
        from napari_aet.core.forward import AbtemPotential

        forward = AbtemPotential(b_factor=8.0)
    sim = simulate(cfg, model=forward)
    ts = sim.tilt_series
    free = C.split_free_projections(ts.angles, 0.1)
    rec = reconstruct(ts.data[~free], np.asarray(ts.angles)[~free], ts.pixel_size, device="cpu").volume
    table, meta = trace_volume(Volume(rec, ts.pixel_size), ts, device="cpu", free=free)
    out = (sim, free, rec.shape, table, meta)
    if path:
        path.write_bytes(pickle.dumps(out))
    return out


def _score(found, truth, before=None) -> dict:
    m = match_atoms(found, truth)
    rec = {"recall": round(m.recall, 4), "precision": round(m.precision, 4), "rmsd_pm": round(m.rmsd_pm, 1),
           "n_found": m.n_found, "n_matched": m.n_matched, "n_true": m.n_true}
    if before is not None:
        missed = before["n_true"] - before["n_matched"]
        rec["missed_recovered"] = round((m.n_matched - before["n_matched"]) / max(missed, 1), 3)
    return rec


def run_simulated(seed: int, model: str, dose: float, cache, variants) -> dict:
    """Before/after completion for one simulated case."""
    t0 = time.perf_counter()
    sim, free, shape, table, meta = simulated_baseline(seed, model, dose, cache)
    ts = sim.tilt_series
    angles = np.asarray(ts.angles)
    truth = sim.particle.positions[sim.particle.is_particle]
    atoms = table["atom"].to_numpy() == 1
    pos = table.loc[atoms, ["x", "y", "z"]].to_numpy()
    cls = np.zeros(len(pos), int)
    ref = meta["refinement"]
    heights = {int(k): v for k, v in ref["heights"].items()}
    b_factors = {int(k): v for k, v in ref["b_factors_A2"].items()}
    before = _score(pos, truth)
    out = {"seed": seed, "forward_model": model, "dose": dose, "n_projections": len(angles),
           "n_free": int(free.sum()), "before": before, "baseline_seconds": round(time.perf_counter() - t0, 1)}
    for name in variants:
        t = time.perf_counter()
        res = complete_atoms(pos, cls, heights, b_factors, ts.data, angles, ts.pixel_size, shape, free=free,
                             device="cpu", **VARIANTS[name])
        fin = refine_positions(res.positions, res.classes, ts.data, angles, ts.pixel_size, device="cpu", **REFIT)
        out[name] = {"after": _score(fin.positions, truth, before), "completion": res.summary(),
                     "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps({k: out[k] for k in ("seed", "forward_model", "before")} | {name: out[name]["after"]}),
              flush=True)
    return out


def run_ta(case: Path, start: Path, scorer: Path, out_dir: Path, variants, max_rounds: int = 5) -> dict:
    """Completion on the measured Ta film from a pipeline result folder."""
    import runpy

    import pandas as pd

    from napari_aet.core import io

    score = runpy.run_path(str(scorer))["score"]
    ts = io.read_tilt_series(case / "tilts.mrc", angles=case / "angles.txt")
    data, angles, pix = ts.data, np.asarray(ts.angles), ts.pixel_size
    table = pd.read_csv(start / "atoms.csv")
    pos = table.loc[table["atom"] == 1, ["x", "y", "z"]].to_numpy()
    cls = np.zeros(len(pos), int)
    free = C.split_free_projections(angles, 0.1)
    b0 = float(np.median(list(json.loads((start / "atoms.json").read_text())["refinement"]["b_factors_A2"].values())))
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    cached = out_dir / "start_refined_on_work.pkl"  # the slow part of a rerun
    if cached.exists():
        work = pickle.loads(cached.read_bytes())
    else:
        work = refine_positions(pos, cls, data[~free], angles[~free], pix, iterations=150, initial_b=b0, device="cpu")
        cached.write_bytes(pickle.dumps(work))
    out = {"case": str(case), "start": str(start), "n_free": int(free.sum()),
           "start_refit_seconds": round(time.perf_counter() - t0, 1)}

    def write_and_score(positions, classes, name):
        fin = refine_positions(positions, classes, data, angles, pix, initial_b=b0, device="cpu", **REFIT)
        csv = out_dir / f"atoms_{name.replace(' ', '_').replace('(', '').replace(')', '').replace('<', 'lt')}.csv"
        pd.DataFrame({"x": fin.positions[:, 0], "y": fin.positions[:, 1], "z": fin.positions[:, 2],
                      "atom": 1}).to_csv(csv, index=False)
        s = score(case, csv)
        return {"interior": s["interior"], "all": s["all"], "atoms_csv": str(csv)}

    out["before"] = write_and_score(work.positions, cls, "start")
    print(json.dumps({"before": out["before"]["interior"]}), flush=True)
    for name in variants:
        t = time.perf_counter()
        res = complete_atoms(work.positions, cls, work.heights, work.b_factors, data, angles, pix, (151, 77, 151),
                             free=free, extended_object=True, device="cpu", max_rounds=max_rounds,
                             progress=lambda d, n, m: print(f"  {name}: {m}", flush=True), **VARIANTS[name])
        out[name] = write_and_score(res.positions, res.classes, name) | {
            "completion": res.summary(), "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps({name: out[name]["interior"], "completion": res.summary()}), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sim")
    s.add_argument("--models", nargs="+", default=["own", "abtem"])
    s.add_argument("--seeds", nargs="+", type=int, default=[4, 5])
    s.add_argument("--dose", type=float, default=1e4)
    s.add_argument("--cache", type=Path)
    t = sub.add_parser("ta")
    t.add_argument("case", type=Path)
    t.add_argument("start", type=Path)
    t.add_argument("scorer", type=Path)
    t.add_argument("--out-dir", type=Path, default=Path("completion_ta"))
    t.add_argument("--max-rounds", type=int, default=5)
    for p in (s, t):
        p.add_argument("--variants", nargs="+", default=list(VARIANTS))
        p.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.what == "sim":
        results = [run_simulated(seed, model, a.dose, a.cache, a.variants) for model in a.models for seed in a.seeds]
    else:
        results = [run_ta(a.case, a.start, a.scorer, a.out_dir, a.variants, a.max_rounds)]
    record = {"benchmark": "completion", "date": "2026-12-07", "device": "cpu", "settings": vars(a) | {
        "variants": {k: VARIANTS[k] for k in a.variants}}, "results": results}
    text = json.dumps(record, indent=1, default=str)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

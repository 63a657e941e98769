"""Real alloy shapes (issue 24): the chain on the published Pt-Ni nanocatalyst models of
``AET-nanocatalysts/Pt-Alloy`` projected through abTEM (:mod:`benchmarks.alloy_cases`), with
and without the species given, and against an outside reconstruction (ASTRA SIRT).

Run:  python benchmarks/bench_alloy.py [REPO] [--particles S1 S2 S6] [--geometries 65/21 50/11]
          [--variants plain species astra] [--dose 1e5] [--cases-dir /tmp/aet-bench/alloy]
          [--runs-dir DIR] [--device auto] [--threads N] [--no-enhance] [--no-probe-tail]
          [--out results.json]

REPO is the Pt-Alloy checkout or the bare mirror ``fetch`` brings (default
``/work/.mirror/AET-nanocatalysts+Pt-Alloy/repo``). Each case (particle, geometry, dose; Poisson
noise at the dose, 0.357 Å pixels) is built once into ``--cases-dir`` and reused. The real
particles hold 7k+ atoms: there is no tiny mode; limit ``--particles``/``--variants`` instead.

Variants (rows):
- ``plain``: ``run_pipeline(ts, out, align_first=False, figures=False)``, the chain as a user
  without ``--species`` runs it (RESIRE on the work projections, the U-Net unless
  ``--no-enhance``, trace, refine, R-free). When the report holds ``second_population`` the
  atoms are named ``light``/``heavy``; they are scored as light = Ni, heavy = Pt
  (``species_mapped`` records it). Without it the atoms carry no species and no species
  figures are given.
- ``species``: the same with ``species=("Ni", "Pt")``.
- ``astra``: ASTRA SIRT (astra-toolbox, 2D parallel beam per y slice, 100 iterations,
  ``MinConstraint`` 0, CUDA where ASTRA finds a GPU) on the work projections only (the same
  held-out split as ``run``: ``split_free_projections(angles, 0.1)``), then the project's
  tracer, refinement and species: ``trace_volume(Volume(vol, px), ts, species=("Ni", "Pt"),
  free=free)``. Its geometry is the contract's (``u = x cos t + z sin t``, ``v = y``, FFT
  centre convention), checked by :func:`check_astra_orientation`.

Figures (each row; ``score`` of :mod:`alloy_cases`, atoms matched within 1 Å):
- ``recall``, ``precision``: true atoms found / found atoms that are true;
- ``recall_Ni``, ``recall_Pt``: share of each species' true atoms matched (whatever species
  the match was given);
- ``species_accuracy``: of the matched atoms, the share given the true species;
- ``rmsd_pm`` (overall), ``rmsd_pm_Ni``, ``rmsd_pm_Pt``: position error of the matched atoms, pm;
- ``r_work``, ``r_free``: the refined model's R-factor on the work and held-out projections;
- ``species_counts``: the species step's counts (``species`` record), ``n_by_species``: the
  found atoms per (scored) species, ``truth_by_species`` the published model's;
- ``seconds``: wall time of the variant (for ``astra``: reconstruction + tracing chain, the
  reconstruction's share in ``reconstruct_seconds``); ``machine``, ``date``.

Rows go to ``--out`` (default ``benchmarks/results/alloy_<date>.json``) after each one (written
to a temporary file, then moved into place); a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alloy_cases import GEOMETRIES, build_case, load_case, score  # noqa: E402

DEFAULT_REPO = "/work/.mirror/AET-nanocatalysts+Pt-Alloy/repo"
VARIANTS = ("plain", "species", "astra")
SPECIES = ("Ni", "Pt")  # lightest first
SECOND_POPULATION_NAMES = {"light": "Ni", "heavy": "Pt"}
R_FREE = 0.1  # as run_pipeline's default


# --------------------------------------------------------------------------- ASTRA


def _astra_geometry(nu: int, angles):
    """ASTRA 2D geometries of one y slice ``vol[:, j, :]`` (rows z, columns x) in the contract's
    frame: column i at x = i - nu // 2, row k at z = k - nu // 2 (voxel units), and a detector
    whose pixel n sits at u = n - nu // 2 with u = x cos t + z sin t.

    ASTRA's rows run downwards (row 0 at the window's top, its y = -z here), hence the window
    and the sign of the tilt in the detector vector; a parallel_vec geometry places the detector
    centre where the FFT centre convention wants it (half a pixel off ASTRA's own for even nu).
    """
    import astra

    c = nu // 2
    vol_geom = astra.create_vol_geom(nu, nu, -c - 0.5, nu - c - 0.5, c + 0.5 - nu, c + 0.5)
    t = np.deg2rad(np.asarray(angles, float))
    u = np.stack([np.cos(t), -np.sin(t)], 1)  # detector direction in ASTRA (X, Y) = (x, -z)
    ray = np.stack([np.sin(t), np.cos(t)], 1)  # perpendicular to it
    centre = ((nu - 1) / 2 - c) * u
    proj_geom = astra.create_proj_geom("parallel_vec", nu, np.hstack([ray, centre, u]))
    return vol_geom, proj_geom


def astra_sirt(data, angles, iterations: int = 100, gpu=None, progress=None) -> np.ndarray:
    """ASTRA SIRT with positivity, slice by slice along the tilt axis y.

    Parameters
    ----------
    data : (a, nv, nu) array
        Projections ``[a, v, u]`` (single tilt about y).
    angles : (a,) array
        Tilts, degrees.
    iterations : int
    gpu : bool, optional
        SIRT_CUDA (True) or CPU SIRT with the ``linear`` (Joseph) projector (False); None: CUDA
        where ASTRA finds a GPU.

    Returns
    -------
    (nu, nv, nu) float32 array
        The volume ``[z, y, x]`` in voxel units (its projections sum voxels, as the contract's).
    """
    import astra

    data = np.asarray(data, np.float32)
    a, nv, nu = data.shape
    if gpu is None:
        gpu = bool(astra.use_cuda())
    vol_geom, proj_geom = _astra_geometry(nu, angles)
    out = np.zeros((nu, nv, nu), np.float32)
    projector = None if gpu else astra.create_projector("linear", proj_geom, vol_geom)
    try:
        for j in range(nv):
            sino = np.ascontiguousarray(data[:, j, :])
            if not sino.any():
                continue
            sino_id = astra.data2d.create("-sino", proj_geom, sino)
            rec_id = astra.data2d.create("-vol", vol_geom, 0)
            cfg = astra.astra_dict("SIRT_CUDA" if gpu else "SIRT")
            cfg["ReconstructionDataId"], cfg["ProjectionDataId"] = rec_id, sino_id
            cfg["option"] = {"MinConstraint": 0.0}
            if projector is not None:
                cfg["ProjectorId"] = projector
            alg = astra.algorithm.create(cfg)
            try:
                astra.algorithm.run(alg, iterations)
                out[:, j, :] = astra.data2d.get(rec_id)
            finally:
                astra.algorithm.delete(alg)
                astra.data2d.delete([sino_id, rec_id])
            if progress:
                progress(j + 1, nv)
    finally:
        if projector is not None:
            astra.projector.delete(projector)
    return out


def check_astra_orientation(seed: int = 1, gpu=None) -> dict:
    """ASTRA's volume against the project's RESIRE on a small simulated particle: correlation
    of the two volumes as they are, with ASTRA's flipped along x, along z, with the tilt sign
    reversed and shifted by one voxel (a wrong frame correlates clearly worse), and the
    sub-voxel offset between them (phase correlation; 0 when the centres agree)."""
    from napari_aet.core.reconstruct import reconstruct
    from napari_aet.core.simulate import reference_config, simulate

    sim = simulate(reference_config(size=1.5, n_voxels=64, seed=seed))
    ts = sim.tilt_series
    angles = np.asarray(ts.angles)
    own = reconstruct(ts.data, angles, ts.pixel_size, device="cpu").volume
    ours = astra_sirt(ts.data, angles, gpu=gpu)
    reversed_tilt = astra_sirt(ts.data, -angles, gpu=gpu)

    from skimage.registration import phase_cross_correlation

    def corr(a, b):
        return round(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), 4)

    offset = phase_cross_correlation(own, ours, upsample_factor=20)[0]  # (z, y, x) voxels
    return {"as_is": corr(own, ours), "offset_zyx_voxels": [round(float(v), 3) for v in offset],
            "x_flipped": corr(own, ours[:, :, ::-1]),
            "z_flipped": corr(own, ours[::-1]), "tilt_reversed": corr(own, reversed_tilt),
            "shifted_1_voxel_x": corr(own, np.roll(ours, 1, axis=2)),
            "sum_ratio_astra_to_resire": round(float(ours.sum() / own.sum()), 4)}


# --------------------------------------------------------------------------- variants


def _species_column(table, mapping=None):
    """The atoms' species as text ('' unknown), mapped where asked."""
    names = table["species"].fillna("").astype(str) if "species" in table else None
    table = table.copy()
    table["species"] = "" if names is None else (names.map(lambda s: mapping.get(s, s)) if mapping else names)
    return table


def run_variant(variant: str, ts, case: Path, runs_dir: Path, device: str, enhance: bool, gpu=None,
                probe_tail: bool = True) -> dict:
    """One chain on one case: the found atoms' table and what the row records."""
    from napari_aet.core import io
    from napari_aet.core.confidence import split_free_projections
    from napari_aet.core.pipeline import run_pipeline, trace_volume

    rec: dict = {}
    t0 = time.perf_counter()
    if variant in ("plain", "species"):
        out = runs_dir / f"{case.name}_{variant}"
        report = run_pipeline(ts, out, align_first=False, enhance=enhance, device=device, figures=False,
                              species=SPECIES if variant == "species" else (), probe_tail=probe_tail)
        table, _ = io.read_atoms(out / "atoms.csv")
        second = report.get("second_population")
        mapping = SECOND_POPULATION_NAMES if (variant == "plain" and second) else None
        rec |= {"results_dir": str(out), "r_work": report.get("r_work"), "r_free": report.get("r_free"),
                "species_record": report.get("species"), "second_population": second,
                "probe_tail": (report.get("refinement") or {}).get("probe_tail"),
                "species_mapped": mapping, "traced_tomogram": report.get("traced_tomogram"),
                "stages_seconds": {k: v.get("seconds") for k, v in (report.get("stages") or {}).items()}}
    elif variant == "astra":
        angles = np.asarray(ts.angles)
        free = split_free_projections(angles, R_FREE)
        if gpu is None:
            import astra

            gpu = bool(astra.use_cuda())
        t = time.perf_counter()
        vol = astra_sirt(ts.data[~free], angles[~free], gpu=gpu)
        rec["reconstruct_seconds"] = round(time.perf_counter() - t, 1)
        table, meta = trace_volume(io.Volume(vol, ts.pixel_size), ts, species=SPECIES, n_classes=len(SPECIES) + 1,
                                   probe_tail=probe_tail,
                                   free=free, device=device)
        val = meta.get("validation") or {}
        rec |= {"r_work": val.get("r_work"), "r_free": val.get("r_free"), "species_record": meta.get("species"),
                "second_population": meta.get("second_population"), "species_mapped": None,
                "astra": "SIRT_CUDA" if gpu else "SIRT (CPU, linear projector)", "free_projections": np.flatnonzero(free).tolist()}
        mapping = None
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    table = _species_column(table, mapping)
    return table, rec


def _atomic_write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _fmt(v, digits=4):
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(rows) -> str:
    lines = ["| particle | geometry | variant | recall | precision | recall Ni | recall Pt | species accuracy | "
             "RMSD Ni / Pt (pm) | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("score") or {}
        if "error" in r:
            lines.append(f"| {r['particle']} | ±{r['geometry']} | {r['variant']} | error: {r['error']} |||||||")
            continue
        variant = r["variant"] + (" (light=Ni, heavy=Pt)" if r.get("species_mapped") else "")
        lines.append(
            f"| {r['particle']} | ±{r['geometry']} | {variant} | {_fmt(s.get('recall'))} | {_fmt(s.get('precision'))} "
            f"| {_fmt(s.get('recall_Ni'))} | {_fmt(s.get('recall_Pt'))} | {_fmt(s.get('species_accuracy'))} | "
            f"{_fmt(s.get('rmsd_pm_Ni'), 1)} / {_fmt(s.get('rmsd_pm_Pt'), 1)} | {_fmt(r.get('seconds'), 0)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("repo", nargs="?", default=DEFAULT_REPO)
    ap.add_argument("--particles", nargs="+", default=["S1", "S2", "S6"])
    ap.add_argument("--geometries", nargs="+", default=["65/21"], choices=list(GEOMETRIES))
    ap.add_argument("--variants", nargs="+", default=["plain", "species"], choices=list(VARIANTS))
    ap.add_argument("--dose", type=float, default=1e5)
    ap.add_argument("--cases-dir", type=Path, default=Path("/tmp/aet-bench/alloy"))
    ap.add_argument("--runs-dir", type=Path, default=None, help="results folders of run (default CASES_DIR/runs)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--astra-device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-enhance", action="store_true", help="run without the U-Net (plain, species)")
    ap.add_argument("--check-astra", action="store_true",
                    help="only the ASTRA orientation check on a small simulated particle")
    ap.add_argument("--no-probe-tail", action="store_true", help="Gaussian atoms alone (run --no-probe-tail)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from napari_aet.core.threads import configure_threads

    plan = configure_threads(args.threads)
    gpu = {"auto": None, "cpu": False, "cuda": True}[args.astra_device]
    if args.check_astra:
        print(json.dumps(check_astra_orientation(gpu=gpu), indent=1))
        return
    date = datetime.date.today().isoformat()
    out = args.out or Path(__file__).resolve().parent / "results" / f"alloy_{date}.json"
    runs_dir = args.runs_dir or args.cases_dir / "runs"
    machine = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "threads": plan.as_dict(), "platform": platform.platform()}
    record = {"benchmark": "alloy", "date": date, "settings": vars(args) | {"repo": str(args.repo)},
              "machine": machine, "rows": []}
    rows = record["rows"]
    for name in args.particles:
        for geo in args.geometries:
            case = args.cases_dir / f"{name}_{geo.replace('/', '-')}_{args.dose:g}"
            if not (case / "case.json").exists():
                t = time.perf_counter()
                case = build_case(args.repo, name, geo, args.dose, args.cases_dir)
                print(f"built {case} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            info = json.loads((case / "case.json").read_text())
            ts, truth_pos, truth_species = load_case(case)
            for variant in args.variants:
                row = {"particle": name, "geometry": geo, "dose": args.dose, "variant": variant,
                       "forward_model": info.get("forward_model", "abtem").split(",")[0].split()[0],
                       "forward_model_detail": info.get("forward_model"), "case": str(case),
                       "n_projections": int(len(ts.angles)), "shape": list(ts.data.shape),
                       "truth_by_species": info.get("n_by_species"), "machine": machine, "date": date}
                try:
                    table, rec = run_variant(variant, ts, case, runs_dir, args.device, not args.no_enhance, gpu,
                                             probe_tail=not args.no_probe_tail)
                except Exception as exc:  # one failed variant does not lose the others' rows
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    print(f"{name} {geo} {variant}: {row['error']}", file=sys.stderr, flush=True)
                else:
                    atoms = table[table["atom"] == 1]
                    row |= rec
                    row["n_atoms"] = int(len(atoms))
                    row["n_by_species"] = {str(k): int(v) for k, v in atoms["species"].value_counts().items()}
                    row["species_counts"] = (rec.get("species_record") or {}).get("counts")
                    row["score"] = score(table, truth_pos, truth_species)
                rows.append(row)
                _atomic_write(out, record)
                print(json.dumps({k: row.get(k) for k in ("particle", "geometry", "variant", "score", "r_work",
                                                          "r_free", "seconds", "error") if k in row}), flush=True)
    print(f"\nrows written to {out}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

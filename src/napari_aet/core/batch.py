"""Batch processing of many tilt series on a Dask distributed cluster.

A manifest (CSV with a header, or YAML: a list of jobs or ``{jobs: [...]}``) lists one tilt
series per job: ``tilts`` (required), ``angles``, ``pixel_size``, ``output`` (default
``OUT_ROOT/<stem of tilts>``), and options ``no_align``, ``no_enhance``, ``no_refine``. Input
paths (``tilts``, ``angles``) are relative to the manifest's folder; ``OUT_ROOT`` is relative to
the current folder, like every other command's ``-o``, and a relative ``output`` is relative to
``OUT_ROOT``. Each job runs :func:`run_pipeline` into its own folder, locked while the job
checks and writes it (a folder another process is writing fails that job). Without ``overwrite`` a
job whose folder already holds ``report.json`` is skipped, an interrupted job resumes from its
last finished stage, and a folder holding other results is refused; with it every job runs
again and replaces its earlier results. A failing job is reported with its one-line reason and
does not stop the others. A summary table (``batch_summary.csv``) ends the run.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Optional

from .errors import AETInputError

__all__ = ["read_manifest", "run_batch"]

_TRUE = {"1", "true", "yes", "y"}


def read_manifest(path, out_root) -> list:
    """Jobs from a CSV or YAML manifest (``tilts``, ``angles``, ``pixel_size``, ``output``,
    ``no_align``, ``no_enhance``, ``no_refine``), checked.

    Parameters
    ----------
    path : path
        The manifest.
    out_root : path
        Folder that relative ``output`` entries are taken in.

    Returns
    -------
    list of dict
    """
    path = Path(path)
    from .locks import note_input

    note_input(path)
    if not path.exists():
        raise AETInputError(f"manifest {path} does not exist; give a CSV or YAML listing tilt series")
    if path.suffix.lower() in (".yml", ".yaml"):
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise AETInputError(f"manifest {path} is not valid YAML ({str(exc).splitlines()[0]})")
        rows = raw.get("jobs", []) if isinstance(raw, dict) else raw
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise AETInputError(f"manifest {path} is YAML but not a list of jobs (tables with 'tilts'); "
                                "write '- tilts: a.mrc' per job, or 'jobs:' above such a list")
    else:
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise AETInputError(f"manifest {path} is not a readable CSV ({str(exc).splitlines()[0][:60]}); "
                                "give a CSV with a header row (tilts, angles, pixel_size, output)")
    if not rows:
        raise AETInputError(f"manifest {path} lists no jobs; give one row per tilt series (column 'tilts')")
    out_root = Path(out_root).resolve()
    jobs = []
    for k, row in enumerate(rows, 1):
        row = {str(key).strip(): ("" if v is None else str(v).strip()) for key, v in dict(row).items()}
        pixel_size = None
        if row.get("pixel_size"):
            try:
                pixel_size = float(row["pixel_size"])
            except ValueError:
                raise AETInputError(f"manifest {path} job {k}: pixel_size {row['pixel_size']!r} is not a number; "
                                    "give it in Å, e.g. 0.357")
        if not row.get("tilts"):
            raise AETInputError(f"manifest {path} job {k} has no 'tilts'; every job needs its tilt series")
        tilts = (path.parent / row["tilts"]).resolve()
        name = row.get("name") or tilts.stem
        if any(j["name"] == name for j in jobs):  # e.g. many 'tilts.mrc' in their own folders
            name = f"{tilts.parent.name}_{tilts.stem}"
        out = (out_root / row["output"]) if row.get("output") else out_root / name
        jobs.append({
            "name": name, "tilts": str(tilts),
            "angles": str((path.parent / row["angles"]).resolve()) if row.get("angles") else None,
            "pixel_size": pixel_size,
            "output": str(out.resolve()),
            "align": row.get("no_align", "").lower() not in _TRUE,
            "enhance": row.get("no_enhance", "").lower() not in _TRUE,
            "refine": row.get("no_refine", "").lower() not in _TRUE,
        })
    outputs = [j["output"] for j in jobs]
    dup = sorted({o for o in outputs if outputs.count(o) > 1})
    if dup:
        raise AETInputError(f"manifest {path}: several jobs write to {dup[0]}; give each job its own 'name' or 'output'")
    return jobs


def run_job(job: dict, device: str = "cpu", overwrite: bool = False) -> dict:
    """Run one job in its locked folder; never raises: returns its status, reason, seconds and
    key figures (a folder another process is writing fails the job with that process's PID)."""
    from .locks import output_lock, tracking_inputs

    t0 = time.perf_counter()
    out = Path(job["output"])
    try:
        with tracking_inputs(), output_lock(out, "job folder"):  # checked and written by one process only
            return _run_job_locked(job, out, device, overwrite, t0)
    except Exception as exc:  # a failing job is reported, the others go on
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"name": job["name"], "status": "failed", "reason": reason, "seconds": round(time.perf_counter() - t0, 1),
                "output": str(out)}


def _run_job_locked(job: dict, out: Path, device: str, overwrite: bool, t0: float) -> dict:
    from .io import read_tilt_series
    from .pipeline import RUN_OUTPUTS, WORK_DIR, run_pipeline

    if (out / "report.json").exists() and not overwrite:
        return {"name": job["name"], "status": "skipped (done)", "reason": "", "seconds": 0.0, "output": str(out)}
    resume = (out / WORK_DIR / "progress.json").exists() and not overwrite
    existing = [n for n in RUN_OUTPUTS if (out / n).exists()]
    if existing and not overwrite and not resume:
        return {"name": job["name"], "status": "failed", "seconds": 0.0, "output": str(out),
                "reason": f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"}
    ts = read_tilt_series(job["tilts"], angles=job["angles"], pixel_size=job["pixel_size"])
    rep = run_pipeline(ts, out, align_first=job["align"], enhance=job["enhance"], device=device, refine=job["refine"],
                       resume=resume)
    return {"name": job["name"], "status": "done", "reason": "", "seconds": round(time.perf_counter() - t0, 1),
            "output": str(out), "n_atoms": rep["n_atoms"], "share_assigned_fcc": round(rep["share_assigned_fcc"], 4),
            "lattice_constant": round(rep["lattice_constant"], 4)}


def run_batch(manifest, out_root, scheduler: Optional[str] = None, workers: int = 2, device: str = "cpu",
              progress=None, overwrite: bool = False) -> list:
    """Run every job of a manifest on a Dask cluster: finished jobs skipped, interrupted ones
    resumed, failures reported with their reason.

    Parameters
    ----------
    manifest : path
    out_root : path
        Results root; gets ``batch_summary.csv``.
    scheduler : str, optional
        Address of an existing Dask scheduler; default a LocalCluster of ``workers``.
    workers : int
    device : {"cpu", "cuda", "auto"}
        Device inside the workers.
    progress : callback, optional
    overwrite : bool
        Run finished jobs again.

    Returns
    -------
    list of dict
        One row per job: name, status, seconds, atoms, fcc share, reason.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise AETInputError("batch runs need Dask distributed; install it with pip install \"napari-aet[batch]\"")

    from .io import atomic_path

    from .validate import check_int

    workers = check_int(workers, "--workers", 1, 256)
    jobs = read_manifest(manifest, out_root)
    summary = Path(out_root) / "batch_summary.csv"
    from .locks import check_not_input

    check_not_input([summary], what="the batch summary")
    Path(out_root).mkdir(parents=True, exist_ok=True)
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    results = []
    try:
        futures = [client.submit(run_job, job, device, overwrite, key=f"napari-aet-{k}-{job['name']}", pure=False)
                   for k, job in enumerate(jobs)]
        for done, fut in enumerate(as_completed(futures), 1):
            results.append(fut.result())
            if progress:
                progress(done, len(jobs), f"{results[-1]['name']}: {results[-1]['status']}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    order = {j["name"]: k for k, j in enumerate(jobs)}
    results.sort(key=lambda r: order.get(r["name"], 0))
    keys = ["name", "status", "reason", "seconds", "n_atoms", "share_assigned_fcc", "lattice_constant", "output"]
    with atomic_path(summary) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(results)
    return results

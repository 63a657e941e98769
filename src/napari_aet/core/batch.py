"""Batch processing of many tilt series on a Dask distributed cluster.

A manifest (CSV with a header, or YAML: a list of jobs or ``{jobs: [...]}``) lists one tilt
series per job: ``tilts`` (required), ``angles``, ``pixel_size``, ``output`` (default
``OUT_ROOT/<stem of tilts>``), ``species`` (the atoms' names, lightest first, separated by spaces
or commas, e.g. ``Ni Pt``: one intensity class each; empty, one species as before), and options
``no_align``, ``no_enhance``, ``no_refine``. Input
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
import re
import time
from pathlib import Path
from typing import Optional

from .errors import AETInputError

__all__ = ["read_manifest", "run_batch"]



MANIFEST_MAX_BYTES = 16 * 2**20  # a manifest lists jobs: 16 MiB is about 10^5 of them
_FIELD_MAX_CHARS = 4096  # a path or a number; longer is not a manifest field


def _unique_key_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """YAML's safe loader refusing a key given twice in one table (the last would win)."""

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dup = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dup:
            raise AETInputError(f"manifest: a job gives '{dup[0]}' twice; give each field once")
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _yaml_rows(path: Path, text: str) -> list:
    """Rows of a YAML manifest: aliases refused before anything is built (an anchor "bomb"
    expands to gigabytes), a list of tables of plain values."""
    import yaml

    try:
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise AETInputError(f"manifest {path} uses YAML aliases (*name); write each job's fields out in full")
        raw = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except AETInputError:
        raise
    except yaml.YAMLError as exc:
        raise AETInputError(f"manifest {path} is not valid YAML ({str(exc).splitlines()[0]})")
    except ValueError as exc:  # e.g. a number of thousands of digits (Python's int-to-str limit)
        raise AETInputError(f"manifest {path} holds a value YAML cannot read ({str(exc).splitlines()[0][:80]}); "
                            "give plain paths and numbers of a few digits")
    rows = raw.get("jobs", []) if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise AETInputError(f"manifest {path} is YAML but not a list of jobs (tables with 'tilts'); "
                            "write '- tilts: a.mrc' per job, or 'jobs:' above such a list")
    return rows


def _manifest_rows(path: Path) -> list:
    """The manifest's rows as read (CSV or YAML), size checked before reading."""
    if not path.is_file():
        raise AETInputError(f"manifest {path} does not exist or is not a regular file; give a CSV or YAML "
                            "listing tilt series")
    if path.stat().st_size > MANIFEST_MAX_BYTES:
        raise AETInputError(f"manifest {path} is {path.stat().st_size / 2**20:.0f} MiB, over the "
                            f"{MANIFEST_MAX_BYTES // 2**20} MiB a list of jobs needs; split it into several manifests")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of a name
    except UnicodeDecodeError:
        raise AETInputError(f"manifest {path} is not text; give a CSV or YAML listing tilt series")
    if path.suffix.lower() in (".yml", ".yaml"):
        return _yaml_rows(path, text)
    import io as _io

    try:
        reader = csv.DictReader(_io.StringIO(text, newline=""))
        names = [str(n).strip() for n in (reader.fieldnames or [])]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AETInputError(f"manifest {path} has the column '{dup[0]}' twice; give each column once")
        return list(reader)
    except csv.Error as exc:
        raise AETInputError(f"manifest {path} is not a readable CSV ({str(exc).splitlines()[0][:60]}); "
                            "give a CSV with a header row (tilts, angles, pixel_size, output)")


def _field_text(where: str, key: str, value) -> str:
    """A manifest field as text: plain values only (no lists, tables, NUL bytes or huge numbers)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:  # str() of a 5,000-digit int raises
        raise AETInputError(f"{where}: {key} is a number of over 19 digits; give a plain value")
    if not isinstance(value, (str, int, float)):
        raise AETInputError(f"{where}: {key} is a {type(value).__name__}, not a plain value; give one path, "
                            "number or yes/no per field")
    text = str(value).strip()
    if len(text) > _FIELD_MAX_CHARS or "\x00" in text:
        raise AETInputError(f"{where}: {key} is over {_FIELD_MAX_CHARS} characters or holds a NUL byte; give a "
                            "plain path or number")
    return text


def _pixel_size(where: str, text: str) -> Optional[float]:
    from .io import _PLAIN_NUMBER

    if not text:
        return None
    if not _PLAIN_NUMBER.fullmatch(text):  # float() would read "0_357" as 357
        raise AETInputError(f"{where}: pixel_size {text[:20]!r} is not a number; give it in Å, e.g. 0.357")
    value = float(text)
    if not 0.001 <= value <= 100:
        raise AETInputError(f"{where}: pixel_size {text[:20]} Å is outside 0.001-100 Å; give the pixel size in Å")
    return value


FIELDS = ("tilts", "angles", "pixel_size", "output", "name", "species", "no_align", "no_enhance", "no_refine")
_YES_NO = {"": False, "0": False, "false": False, "no": False, "n": False,
           "1": True, "true": True, "yes": True, "y": True}


_SPECIES_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,15}")


def species_names(text: str, where: str = "species") -> tuple:
    """Atom species from one text, lightest first (``"Ni Pt"``, ``"Ni, Pt"``); ``()`` when empty.

    Each name is a chemical symbol or a class label (a letter, then letters, digits, ``_`` or
    ``-``; at most 16 characters), given once; chemical symbols are written as such (``Ni``,
    not ``ni``) and, when every name is one, lightest first (HAADF brightness grows with Z).
    Errors are one line starting with ``where``.
    """
    from ase.data import atomic_numbers

    from .trace import MAX_CLASSES

    text = str(text).strip()
    names = tuple(n for n in re.split(r"[\s,]+", text) if n) if text else ()
    example = "give the names lightest first, separated by spaces or commas, e.g. 'Ni Pt'"
    if len(names) > MAX_CLASSES - 1:
        raise AETInputError(f"{where}: {len(names)} species, over the {MAX_CLASSES - 1} the tracer tells apart; "
                            "give fewer names")
    for n in names:
        if not _SPECIES_NAME.fullmatch(n):
            raise AETInputError(f"{where}: species name {n[:20]!r} is not a name; {example}")
        symbol = next((s for s in atomic_numbers if s.lower() == n.lower()), None)
        if symbol is not None and symbol != n and len(n) <= 2:
            raise AETInputError(f"{where}: species {n!r} reads as the element {symbol}; write it {symbol!r} "
                                "(or give a longer class label)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AETInputError(f"{where}: species {dup[0]!r} is given twice; give each species once, lightest first")
    z = [atomic_numbers.get(n) for n in names]
    if names and all(z) and any(a >= b for a, b in zip(z, z[1:])):
        light = " ".join(sorted(names, key=atomic_numbers.get))
        raise AETInputError(f"{where}: species {' '.join(names)} are not lightest first; give {light!r} (lowest "
                            "atomic number, the faintest atoms, first)")
    return names


def _check_fields(where: str, row: dict) -> None:
    """Known fields only, and yes/no fields saying yes or no: a misspelt option must not run
    the job with the option the user did not ask for."""
    unknown = sorted(k for k in row if k not in FIELDS)
    if unknown:
        raise AETInputError(f"{where}: unknown field '{unknown[0][:40]}'; the fields are {', '.join(FIELDS)}")
    for key in ("no_align", "no_enhance", "no_refine"):
        if row.get(key, "").lower() not in _YES_NO:
            raise AETInputError(f"{where}: {key} is {row[key][:20]!r}; give yes or no (or leave it empty)")


def _job_folder(where: str, out_root: Path, name: str, output: str) -> Path:
    """The job's folder, which must lie inside the output root (a name is one folder name)."""
    if not output and (name in (".", "..") or any(c in name for c in "/\\")):
        raise AETInputError(f"{where}: name {name!r} is not a plain folder name; give a name without '/', "
                            "'\\' or '..'")
    folder = (out_root / (output or name)).resolve()
    if folder == out_root or not folder.is_relative_to(out_root):
        raise AETInputError(f"{where}: the job's folder {folder} is not inside the output folder {out_root}; give "
                            "an 'output' relative to -o without '..'")
    top = folder.relative_to(out_root).parts[0]
    if top == "batch_summary.csv" or top.startswith(".napari-aet"):
        raise AETInputError(f"{where}: '{top}' is the batch's own file; give the job another 'name' or 'output'")
    return folder


def read_manifest(path, out_root) -> list:
    """Jobs from a CSV or YAML manifest (``tilts``, ``angles``, ``pixel_size``, ``output``,
    ``no_align``, ``no_enhance``, ``no_refine``), checked: plain values only (YAML aliases,
    lists and tables refused), at most :data:`MANIFEST_MAX_BYTES`, every job folder inside
    ``out_root`` and its own.

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
    rows = _manifest_rows(path)
    if not rows:
        raise AETInputError(f"manifest {path} lists no jobs; give one row per tilt series (column 'tilts')")
    out_root = Path(out_root).resolve()
    jobs, names, outputs = [], set(), set()
    for k, raw in enumerate(rows, 1):
        where = f"manifest {path} job {k}"
        if None in raw:  # a CSV row with more cells than the header: csv files the rest under None
            raise AETInputError(f"{where} has more cells than the header has columns; put a value holding commas in "
                                "quotes (\"Ni,Pt\") or separate species names with spaces (Ni Pt)")
        if isinstance(raw.get("species"), (bool, list)):  # YAML's 'no'/'yes', or a list of names
            raise AETInputError(f"{where}: species is not one text; write the names in quotes, lightest first, "
                                "e.g. species: \"Ni Pt\"")
        row = {_field_text(where, "a column name", key): _field_text(where, str(key)[:40], v)
               for key, v in dict(raw).items()}
        _check_fields(where, row)
        if not row.get("tilts"):
            raise AETInputError(f"{where} has no 'tilts'; every job needs its tilt series")
        tilts = (path.parent / row["tilts"]).resolve()
        name = row.get("name") or tilts.stem
        if name in names:  # e.g. many 'tilts.mrc' in their own folders
            name = f"{tilts.parent.name}_{tilts.stem}"
        names.add(name)
        out = str(_job_folder(where, out_root, name, row.get("output", "")))
        if out in outputs:
            raise AETInputError(f"manifest {path}: several jobs write to {out}; give each job its own 'name' or 'output'")
        outputs.add(out)
        jobs.append({
            "name": name, "tilts": str(tilts),
            "angles": str((path.parent / row["angles"]).resolve()) if row.get("angles") else None,
            "pixel_size": _pixel_size(where, row.get("pixel_size", "")),
            "species": species_names(row.get("species", ""), where),
            "output": out,
            "align": not _YES_NO[row.get("no_align", "").lower()],
            "enhance": not _YES_NO[row.get("no_enhance", "").lower()],
            "refine": not _YES_NO[row.get("no_refine", "").lower()],
        })
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
    species = {"species": tuple(job["species"])} if job.get("species") else {}  # none: as before
    rep = run_pipeline(ts, out, align_first=job["align"], enhance=job["enhance"], device=device, refine=job["refine"],
                       resume=resume, **species)
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
        from .threads import usable_cpus

        workers = max(1, min(workers, len(jobs), usable_cpus()))  # no idle processes: bounded by work and cores
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
            from .io import _spreadsheet_safe

            w.writerows({k: _spreadsheet_safe(v) for k, v in r.items()} for r in results)
    return results

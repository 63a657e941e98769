"""The pipeline end to end: tilt series to atoms, facets, strain, report and figures.

Plain functions used by the command line (``run``, ``demo``, ``trace``), the batch runner and
the napari widgets alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import AETInputError

__all__ = ["trace_volume", "run_pipeline", "RUN_OUTPUTS"]

RUN_OUTPUTS = ("tomogram.mrc", "tomogram_enhanced.mrc", "atoms.csv", "atoms.json", "report.json", "figures")


def trace_volume(vol, tilts_ts=None, alignment=None, min_distance=2.0, n_classes=2, species=(), fit="gaussian",
                 upsample=1, refine=True, refine_iterations=150, device="auto", progress_factory=None, cancel=None,
                 free=None, complete=False, extended_object=False, probe_tail=True):
    """Trace atoms in a tomogram and refine them against its tilt series: the one tracing
    path of ``run``, ``trace`` and the workbench's Trace widget (same tomogram and tilt series,
    same atoms).

    Parameters
    ----------
    vol : Volume
        The tomogram ``[z, y, x]`` with its voxel size (Å).
    tilts_ts : TiltSeries, optional
        The tilt series the volume was reconstructed from; None traces without refinement.
    alignment : AlignmentResult, optional
        Applied to ``tilts_ts`` first (None: it is already aligned).
    min_distance, n_classes, fit, upsample : as :func:`~napari_aet.core.trace.trace_atoms`.
    species : sequence of str
        With two or more (lightest first), the tracer's two-class split starts the species from
        the tomogram, and after refinement light atoms are found in the residual and every
        atom's species decided from the projections (:mod:`~napari_aet.core.species`; one
        B-factor for all species). With none or one, a second, fainter population the
        projections want is kept and reported (``metadata["second_population"]``).
    refine : bool
        Refine positions, heights and B-factors against the tilt series.
    refine_iterations : int
    device : {"auto", "cpu", "cuda"}
    progress_factory : callable, optional
        ``progress_factory(stage_name)`` returns the progress callback of each stage.
    cancel : threading.Event, optional
    free : (a,) bool array, optional
        Projections the volume was reconstructed without (R-free,
        :func:`~napari_aet.core.confidence.split_free_projections`): the atoms are refined on the
        others, the model's R-factor is measured on both, then the atoms are refitted on all.
    complete : bool
        After refinement, add atoms where the residual tomogram shows significant missing
        density (:func:`~napari_aet.core.completion.complete_atoms`); off by default: it is not
        yet shown never to lower recall or precision (BENCHMARKS.md "Confidence").
    extended_object : bool
        The sample extends beyond the box (completion proposes nothing at its x/y faces).
    probe_tail : bool
        Once the atom model is complete (after species and completion), fit the probe's tail
        with the atoms (:mod:`~napari_aet.core.probe_tail`); when it holds at least
        ``MIN_TAIL_FRACTION`` of the intensity it is taken off the tilt series for the refit on
        every projection and the confidence. R-factors stay those of the measured projections.

    Returns
    -------
    table : DataFrame
        Contract columns ``x, y, z`` (Å), ``intensity``, ``atom``, ``species``; when refined,
        the confidence columns ``sigma_x_pm, sigma_y_pm, sigma_z_pm`` and ``presence``, and for
        two or more species ``species_confidence``.
    metadata : dict
        ``trace`` (settings, counts) and, when refined, ``refinement`` (R-factors before and
        after, heights, B-factors) and ``validation`` (``r_work``, ``r_free``, confidence).
    """
    from .refine import refine_positions
    from .trace import trace_atoms

    make = progress_factory or (lambda name: None)
    species = tuple(str(n) for n in species)
    alloy = len(species) >= 2
    if alloy and n_classes != len(species) + 1:
        raise AETInputError(
            f"{len(species)} species names ({' '.join(species)}) for {n_classes - 1} atom classes: the lowest of the "
            f"{n_classes} classes is noise; give --classes {len(species) + 1} or {n_classes - 1} names, faint to bright")
    res = trace_atoms(vol.data, vol.pixel_size, min_distance=min_distance, n_classes=2 if alloy else n_classes,
                      species_names=() if alloy else species, fit=fit, upsample=upsample, progress=make("trace"),
                      cancel=cancel)
    table, meta = res.table, {"trace": res.metadata}
    if alloy:
        table = _first_species(table, res.metadata, species)
    if tilts_ts is not None and refine:
        data, angles, free = _refinement_data(vol, tilts_ts, alignment, free)
        atoms = table["atom"].to_numpy() == 1
        if atoms.any():
            from .projector import resolve_device

            device = resolve_device(device) if isinstance(device, str) else device
            names = list(species) if alloy else list(np.unique(table.loc[atoms, "species"].astype(str)))
            classes = np.array([names.index(n) for n in table.loc[atoms, "species"].astype(str)], int)
            ref = refine_positions(table.loc[atoms, ["x", "y", "z"]].to_numpy(), classes, data[~free], angles[~free],
                                   vol.pixel_size, iterations=refine_iterations, device=device,
                                   progress=make("refine"), cancel=cancel, share_b_factor=alloy)
            meta["refinement"] = ref.summary()
            meta["refinement"]["alignment_applied"] = alignment is not None
            if not alloy:
                found = _faint_population(table, atoms, classes, ref, data[~free], angles[~free], vol.pixel_size,
                                          res.metadata, device)
                if found:
                    meta["second_population"] = found
                    alloy, names = True, ["light", "heavy"]
                    classes = np.ones(int(atoms.sum()), int)  # the traced atoms are the heavy ones
                    ref.heights, ref.b_factors = {1: ref.heights[0]}, {1: ref.b_factors[0]}
            if alloy:
                ratio = (meta.get("second_population") or {}).get("ratio")
                table, atoms, classes, ref, meta["species"] = _resolve_species(
                    table, atoms, classes, ref, data[~free], angles[~free], vol, names, min_distance, device,
                    make("species"), cancel, None if ratio is None else [ratio, 1.0])
            if complete:
                table, atoms, classes, ref, meta["completion"] = _complete(
                    table, atoms, classes, ref, data, angles, free, vol, min_distance, extended_object, device,
                    make("complete"), cancel)
            measured, tail = data, None
            if probe_tail:
                ref, data, tail = _probe_tail_step(ref, classes, data, angles, free, vol.pixel_size, device,
                                                   make("probe tail"), cancel, alloy, meta["refinement"])
            table, meta["validation"] = _validate_atoms(table, atoms, classes, ref, data, angles, free, vol.pixel_size,
                                                        device, make("validate"), cancel,
                                                        None if alloy else meta["trace"].get("class_centres"),
                                                        share_b_factor=alloy, measured=(measured, tail))
    return table, meta


def _probe_tail_step(ref, classes, data, angles, free, pixel_size, device, progress, cancel, alloy, record) -> tuple:
    """Fit the probe's tail with the complete atom model (on the working projections) and take it
    off the tilt series when it holds ``MIN_TAIL_FRACTION`` or more of the intensity: the model
    (refitted through the tail, or as it was), the series every later step fits, the tail taken
    off (or None); recorded in ``record["probe_tail"]``.

    Fitted after species and completion, not before: with light atoms still missing, the tail
    widens to reach them (abTEM Pt-Ni S1: 0.40 / 1.39 Å against 0.36 / 0.97 Å with every atom)
    and taking it off erases them."""
    from .probe_tail import MIN_TAIL_FRACTION, remove_probe_tail
    from .refine import refine_positions

    fit = refine_positions(ref.positions, classes, data[~free], angles[~free], pixel_size, iterations=TAIL_ITERATIONS,
                           step_size=0.003, device=device, progress=progress, cancel=cancel, share_b_factor=alloy,
                           fit_probe_tail=True)
    tail = fit.probe_tail
    removed = tail.fraction >= MIN_TAIL_FRACTION
    record["probe_tail"] = dict(tail.summary(), removed=removed, min_fraction=MIN_TAIL_FRACTION,
                                heights=fit.heights, b_factors_A2=fit.b_factors,
                                r_factor_before=round(fit.r_factor_before, 5), r_factor_after=round(fit.r_factor_after, 5))
    if not removed:
        return ref, data, None
    for key in ref.heights:  # a class with no atoms left keeps its height for the non-atom peaks' scores
        fit.heights.setdefault(key, ref.heights[key])
        fit.b_factors.setdefault(key, ref.b_factors[key])
    return fit, remove_probe_tail(data, tail, pixel_size), tail


TAIL_ITERATIONS = 60  # the tail's fit starts at the refined model


def _refinement_data(vol, tilts_ts, alignment, free) -> tuple:
    """The aligned projections, angles and held-out flags that match the volume; one-line
    errors otherwise."""
    nz, ny, nx = vol.data.shape
    _, nv, nu = tilts_ts.data.shape
    if (nv, nu) != (ny, nx):
        raise AETInputError(
            f"tilt series projections are {nv}x{nu} but the volume is {ny}x{nx} in y, x; "
            "give the tilt series this volume was reconstructed from"
        )
    if abs(tilts_ts.pixel_size - vol.pixel_size) > 1e-3 * vol.pixel_size:
        raise AETInputError(
            f"tilt series pixel size {tilts_ts.pixel_size:g} Å differs from the volume's voxel size "
            f"{vol.pixel_size:g} Å; give matching files or --pixel-size"
        )
    aligned = alignment.apply(tilts_ts) if alignment is not None else tilts_ts
    data, angles = aligned.data, np.asarray(aligned.angles)
    free = np.zeros(len(data), bool) if free is None else np.asarray(free, bool)
    if free.shape != (len(data),):
        raise AETInputError(f"{free.size} held-out flags for {len(data)} projections; give one per projection")
    return data, angles, free


def _first_species(table, trace_meta, species):
    """The traced table with a first guess of every peak's species from the tomogram
    (:func:`~napari_aet.core.species.tomogram_species`)."""
    from .species import tomogram_species

    atom = table["atom"].to_numpy() == 1
    centres = trace_meta.get("class_centres") or []
    bright = float(centres[-1]) if len(centres) >= 2 else float(np.median(table.loc[atom, "intensity"]))
    labels = tomogram_species(table["intensity"].to_numpy(float), atom, bright, species)
    table = table.copy()
    table["atom"] = (labels >= 0).astype(int)
    table["species"] = [species[k] if k >= 0 else "" for k in labels]
    return table


def _faint_population(table, atoms, classes, ref, data, angles, pixel_size, trace_meta, device):
    """With one species given: whether the projections want a second, fainter population of
    atoms among the tracer's non-atom peaks (:func:`~napari_aet.core.species.second_population`);
    None when not."""
    from .species import implied_heights, second_population

    centres = trace_meta.get("class_centres") or []
    if len(centres) < 2:
        return None
    other = (~atoms) & (table["intensity"].to_numpy(float) > 0.05 * float(centres[-1]))
    every = np.r_[atoms.nonzero()[0], other.nonzero()[0]]
    pos = np.r_[ref.positions, table.loc[other, ["x", "y", "z"]].to_numpy()]
    cls = np.r_[classes, np.zeros(int(other.sum()), int)]
    height, err = implied_heights(pos, cls, ref.heights, ref.b_factors, data, angles, pixel_size,
                                  in_model=np.arange(len(every)) < int(atoms.sum()), device=device)
    found = second_population(height, err, positions=pos)
    if found:
        found["hint"] = ("the projections want a second, fainter population of atoms: traced as species 'light' and "
                         "'heavy'; give --species LIGHT HEAVY (lightest first, e.g. --species Ni Pt) to name them")
    return found


def _resolve_species(table, atoms, classes, ref, data, angles, vol, names, min_distance, device, progress,
                     cancel, contrast=None) -> tuple:
    """Light atoms found and species decided on the working projections
    (:func:`~napari_aet.core.species.resolve_species`): the table (atoms first, then the
    other peaks; ``species_confidence`` added), the atom mask, classes, model and record."""
    from types import SimpleNamespace

    import pandas as pd

    from .species import resolve_species

    sp = resolve_species(ref.positions, classes, ref.heights, ref.b_factors, data, angles, vol.pixel_size,
                         vol.data.shape, names, min_distance=min_distance, device=device, progress=progress,
                         cancel=cancel, contrast=contrast)
    old = table[atoms].reset_index(drop=True)
    rows = old.iloc[np.clip(sp.origin, 0, None)].reset_index(drop=True)
    rows[["x", "y", "z"]] = sp.positions
    rows["species"] = np.asarray(names, dtype=object)[sp.classes]
    rows.loc[sp.origin < 0, "intensity"] = np.nan  # found in the residual: no traced peak
    rows["atom"] = 1
    rows["species_confidence"] = np.round(sp.species_confidence, 4)
    dropped = old.iloc[np.setdiff1d(np.arange(len(old)), sp.origin[sp.origin >= 0])].copy()
    others = pd.concat([dropped.assign(atom=0, species=""), table[~atoms]], ignore_index=True)
    others["species_confidence"] = np.nan
    merged = pd.concat([rows, others], ignore_index=True)
    model = SimpleNamespace(positions=sp.positions, heights=sp.heights, b_factors=sp.b_factors,
                            r_factor_after=sp.r_factor_after)
    mask = np.r_[np.ones(len(rows), bool), np.zeros(len(others), bool)]
    return merged, mask, sp.classes, model, sp.summary()


def _complete(table, atoms, classes, ref, data, angles, free, vol, min_distance, extended_object, device, progress,
              cancel) -> tuple:
    """The traced table with the completed model's atoms (new ones with no intensity; a
    non-atom peak where an atom was added is dropped), their mask, classes, the completed
    model (positions, heights, B-factors) and the completion record."""
    from types import SimpleNamespace

    import pandas as pd
    from scipy.spatial import cKDTree

    from .completion import complete_atoms

    res = complete_atoms(ref.positions, classes, ref.heights, ref.b_factors, data, angles, vol.pixel_size,
                         vol.data.shape, free=free, min_distance=min_distance, extended_object=extended_object,
                         device=device, progress=progress, cancel=cancel)
    old = table[atoms].reset_index(drop=True)
    names = np.unique(old["species"].astype(str).to_numpy())
    dist, near = cKDTree(ref.positions).query(res.positions)
    rows = old.iloc[near].reset_index(drop=True)
    rows[["x", "y", "z"]] = res.positions
    rows["species"] = names[res.classes]
    rows.loc[dist > 0.5, "intensity"] = np.nan  # an added atom: no traced peak
    others = table[~atoms]
    if len(others) and len(res.positions):
        others = others[cKDTree(res.positions).query(others[["x", "y", "z"]].to_numpy())[0] >= min_distance]
    merged = pd.concat([rows, others], ignore_index=True)
    model = SimpleNamespace(positions=res.positions, heights=res.heights, b_factors=res.b_factors,
                            r_factor_after=res.r_work[-1])
    return merged, np.r_[np.ones(len(rows), bool), np.zeros(len(others), bool)], np.asarray(res.classes), model, \
        res.summary()


def _peak_contrast(table, class_centres):
    """Each peak's integrated intensity from the tracer's noise class (0) to its faintest atom
    class (1); None when the tracer made no noise class."""
    c = np.asarray(class_centres or [], float)
    if len(c) < 2 or not c[1] > c[0]:
        return None
    return (table["intensity"].to_numpy(float) - c[0]) / (c[1] - c[0])


def _validate_atoms(table, atoms, classes, ref, data, angles, free, pixel_size, device, progress, cancel,
                    class_centres=None, share_b_factor=False, measured=None) -> tuple:
    """R-work and R-free of the refined atom model, the refit on every projection, and each
    atom's confidence (:mod:`napari_aet.core.confidence`): the table with its confidence
    columns and the validation record. ``measured``: (the measured series, the probe tail
    taken off ``data``), so that the R-factors are those of the measured projections."""
    from .confidence import SIGMA_SCALE, atom_confidence, atom_model_projections, r_work_free
    from .errors import Reporter
    from .refine import refine_positions

    from .projector import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    rep = Reporter(3, progress, cancel)
    shape = data.shape[1:]
    fitted = atom_model_projections(ref.positions, classes, ref.heights, ref.b_factors, angles, shape, pixel_size,
                                    device)
    r_work, r_free = r_work_free(*_as_measured(fitted, data, measured, pixel_size), free)
    rep.step(f"R-work {r_work:.4f}" + (f", R-free {r_free:.4f}" if r_free is not None else ""))
    final = ref
    if free.any():  # the choice is made: the model takes every projection's information
        final = refine_positions(ref.positions, classes, data, angles, pixel_size, iterations=REFIT_ITERATIONS,
                                 step_size=0.003, device=device, cancel=cancel, share_b_factor=share_b_factor)
    rep.step("refitted on every projection")
    for key in ref.heights:  # a class with no atoms left keeps its height for the non-atom peaks' scores
        final.heights.setdefault(key, ref.heights[key])
        final.b_factors.setdefault(key, ref.b_factors[key])
    table = table.copy()
    table.loc[atoms, ["x", "y", "z"]] = final.positions
    every_class = np.zeros(len(table), int)  # non-atom peaks are scored as candidates of the faintest class
    every_class[atoms] = classes
    conf = atom_confidence(table[["x", "y", "z"]].to_numpy(), every_class, final.heights, final.b_factors, data,
                           angles, pixel_size, in_model=atoms, free=free, free_model=fitted[free], device=device,
                           peak_contrast=_peak_contrast(table, class_centres))
    for name, values in conf.columns().items():
        table[name] = values
    # a non-atom peak has a presence (is it an atom after all?) but no position to be sure of
    table.loc[~atoms, ["sigma_x_pm", "sigma_y_pm", "sigma_z_pm"]] = np.nan
    rep.step("confidence")
    sig = conf.sigma[atoms] * 100
    record = {
        "r_work": round(r_work, 5), "r_free": None if r_free is None else round(r_free, 5),
        "free_projections": np.flatnonzero(free).tolist(), "n_free_projections": int(free.sum()),
        "r_factor_all_after_refit": round(_refit_r(final, classes, angles, data, pixel_size, device, measured), 5),
        "refit_iterations": REFIT_ITERATIONS if free.any() else 0,
        "sigma_scale": list(SIGMA_SCALE), "presence_from": "held-out projections" if conf.used_free else "all projections",
        "median_sigma_pm": [round(float(v), 2) for v in np.median(sig, 0)],
        "n_atoms_presence_below_half": int((conf.presence[atoms] < 0.5).sum()),
    }
    return table, record


REFIT_ITERATIONS = 30  # the refit on every projection starts at the refined positions


def _as_measured(model, data, measured, pixel_size) -> tuple:
    """(model, data) as the measured projections see them: with ``measured`` = (series, tail)
    and a tail, the model gets the probe tail back and is compared with the measured series."""
    if measured is None or measured[1] is None:
        return model, data
    import torch

    from .probe_tail import apply_probe_tail

    series, tail = measured
    with torch.no_grad():
        seen = apply_probe_tail(torch.as_tensor(model), tail.fraction, tail.sigma, pixel_size).numpy()
    return seen, series


def _refit_r(final, classes, angles, data, pixel_size, device, measured) -> float:
    """The refitted model's R-factor on every measured projection."""
    if measured is None or measured[1] is None:
        return float(final.r_factor_after)
    from .confidence import atom_model_projections, r_factor

    model = atom_model_projections(final.positions, classes, final.heights, final.b_factors, angles, data.shape[1:],
                                   pixel_size, device)
    return r_factor(*_as_measured(model, data, measured, pixel_size))



def _peak_gib() -> float:
    """Peak resident memory of this process so far, GiB (psutil: the same on every platform)."""
    import psutil

    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None) or getattr(info, "peak_rss", None)  # Windows / newer psutil
    if peak is None:
        try:
            import resource  # POSIX only

            scale = 1 if __import__("sys").platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        except ImportError:  # pragma: no cover
            peak = info.rss
    return peak / 2**30


WORK_DIR = ".napari-aet-partial"  # an unfinished run's files, inside the results folder
_OLD_DIR = ".napari-aet-replaced"  # an earlier run's files while the new run moves in


def _fingerprint(ts, settings: dict) -> str:
    """What a resumed run must share with the interrupted one: the data and the settings."""
    import hashlib
    import json

    h = hashlib.sha256(np.ascontiguousarray(ts.data, dtype=np.float32).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


class _RunFolder:
    """The files of one run, built in ``OUT/.napari-aet-partial`` and moved into ``OUT`` at the end.

    Each finished stage is recorded in ``progress.json`` with its outputs, so ``--resume``
    continues an interrupted run from its last finished stage; a run that never finished
    leaves the results folder as it was (an earlier run's files untouched, nothing mixed).
    """

    def __init__(self, out: Path, fingerprint: str, resume: bool):
        import shutil

        from .io import read_sidecar, write_json

        self.out, self.work = out, out / WORK_DIR
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / _OLD_DIR, ignore_errors=True)  # left by a run killed while moving in
        self.progress = {"fingerprint": fingerprint, "stages": {}}
        if resume:
            try:
                self.progress = read_sidecar(self.work / "progress.json", "progress")
            except (OSError, ValueError):
                raise AETInputError(f"{out} holds no interrupted run to resume; run again without --resume")
            if self.progress.get("fingerprint") != fingerprint:
                raise AETInputError(f"the interrupted run in {out} used other data or settings; run again "
                                    "without --resume to start over, or give the same tilt series and options")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir()
            write_json(self.work / "progress.json", self.progress)
        self._write = write_json

    def done(self, stage: str) -> bool:
        return stage in self.progress["stages"]

    def record(self, stage: str, timing: dict) -> None:
        self.progress["stages"][stage] = timing
        self._write(self.work / "progress.json", self.progress)

    @property
    def stages(self) -> dict:
        return self.progress["stages"]

    def commit(self, names) -> None:
        """Move the finished run into ``OUT``; an earlier run's outputs go first, ``report.json``
        (the mark of a finished run) comes last."""
        import os
        import shutil

        from .locks import check_not_input

        check_not_input([self.out / n for n in names], what="a result")
        old = self.out / _OLD_DIR
        old.mkdir(exist_ok=True)
        for name in names:
            if (self.out / name).exists():
                os.replace(self.out / name, old / name)
        for name in sorted(names, key=lambda n: n == "report.json"):
            if (self.work / name).exists():
                os.replace(self.work / name, self.out / name)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def run_pipeline(ts, out: Path, align_first: bool = True, enhance: bool = True, device: str = "auto",
                 weights=None, refine: bool = True, figures: bool = True, progress_factory=None,
                 resume: bool = False, trust_weights: bool = False, extended_object: bool = False,
                 layer_maps: bool = False, support_normal=None, r_free: float = 0.1, complete: bool = False,
                 species=(), probe_tail: bool = True) -> dict:
    """Align, reconstruct, enhance, trace, refine and analyse a tilt series into ``out``.

    The run is built in ``out/.napari-aet-partial`` and moved into place when it has
    finished, replacing every output of an earlier run; ``resume`` continues an interrupted
    run with the same data and settings from its last finished stage. The folder is locked
    for the whole run (:func:`napari_aet.core.locks.output_lock`): a second writer is refused
    with the first one's PID, and no result may replace a file the run read.

    Parameters
    ----------
    ts : TiltSeries
        Projections ``[a, v, u]``, angles (degrees) and pixel size (Å).
    out : path
        Results folder: ``tomogram.mrc``, ``tomogram_enhanced.mrc`` (with the network),
        ``atoms.csv`` (+ ``atoms.json``), ``report.json`` and ``figures/``.
    align_first : bool
        Align (projection matching) before reconstructing.
    enhance : bool
        Recover the missing wedge with the U-Net; its tomogram is traced only while it still
        explains the tilt series (never worse than no network).
    device : {"auto", "cpu", "cuda"}
    weights : path, optional
        U-Net weights (default: shipped); ``trust_weights`` accepts them without a checksum file.
    refine : bool
        Refine the traced atoms against the tilt series.
    figures : bool
        The reference work's figures and the tomogram views (:func:`figures.write_figures`);
        ``layer_maps`` adds every layer's map of each displacement and strain component.
    progress_factory : callable, optional
        ``progress_factory(stage_name)`` returns a progress callback per stage.
    resume : bool
    extended_object : bool
        The sample extends beyond the field of view (films, supports).
    support_normal : (3,) sequence, optional
        Direction (sample frame) from the particle to its support: support statistics, and
        the support drawn in figure (a).
    r_free : float
        Share of projections held out of reconstruction, tracing and refinement
        (:func:`~napari_aet.core.confidence.split_free_projections`; 0: none): the network is
        judged and the atom model's R-free measured on them, then the atoms are refitted on
        every projection.
    complete : bool
        Complete the atom model from the residual (:func:`trace_volume`'s ``complete``).
    species : sequence of str
        The atoms' species, lightest first (e.g. ``("Ni", "Pt")``): light atoms are found in the
        residual and every atom's species is decided from the projections
        (:mod:`~napari_aet.core.species`). Empty: one species, and the report says when the
        projections want a second, fainter population (traced as ``light`` and ``heavy``).
    probe_tail : bool
        Fit the probe's tail with the atoms and take it off the tilt series for every later
        step when it matters (:func:`trace_volume`'s ``probe_tail``).

    Returns
    -------
    dict
        The report (also ``report.json``): settings, versions, per-stage time and memory,
        R-factors, the network's consistency check, atom counts, lattice, facet statistics.
    """
    from .locks import check_not_input, output_lock

    check_not_input([Path(out) / n for n in RUN_OUTPUTS], what="a result")  # found inputs too (angles beside)
    with output_lock(out, "results folder"):  # one writer a folder, from the first look to the last move
        return _run_locked(ts, Path(out), align_first, enhance, device, weights, refine, figures, progress_factory,
                           resume, trust_weights, extended_object, layer_maps, support_normal, r_free, complete,
                           tuple(str(n) for n in species), bool(probe_tail))


def _run_locked(ts, out, align_first, enhance, device, weights, refine, figures, progress_factory, resume,
                trust_weights, extended_object, layer_maps, support_normal, r_free, complete, species,
                probe_tail) -> dict:
    """:func:`run_pipeline` once its folder is locked."""
    import platform

    from .. import __version__
    from . import io
    from .analysis import analyze_atoms
    from .confidence import split_free_projections
    from .validate import check_angle_values, check_tilt_signal

    progress_bar = progress_factory or (lambda name: None)
    check_tilt_signal(ts.data)
    check_angle_values(ts.angles)
    network = None
    if enhance:  # the weights are checked before any work, not after the reconstruction
        from .enhance import load_weights
        from .projector import resolve_device

        network = load_weights(weights, device=resolve_device(device), trust=trust_weights)
    free = split_free_projections(ts.angles, r_free)
    settings = _run_settings(ts, align_first, enhance, refine, extended_object, support_normal, weights) | {
        "r_free_fraction": r_free, "free_projections": np.flatnonzero(free).tolist(), "complete": complete,
        "species": list(species), "probe_tail": probe_tail}
    run = _RunFolder(Path(out), _fingerprint(ts, settings), resume)
    report = {"version": __version__, "python": platform.python_version(), "settings": settings | {"device": device}}
    aligned = ts
    if align_first:
        aligned, report["alignment"] = _align_stage(run, ts, device, progress_bar)
    rec_volume, report["reconstruction"] = _reconstruct_stage(run, _projections(aligned, ~free), device,
                                                              extended_object, progress_bar)
    traced_volume, volumes = rec_volume.data, {"RESIRE": rec_volume.data}
    if enhance:
        judge = _projections(aligned, free) if free.any() else aligned  # R-free decides, where there is one
        volumes["U-Net"], report["enhancement"] = _enhance_stage(run, rec_volume, judge, network, device,
                                                                 progress_bar)
        report["enhancement"]["consistency"]["measured_on"] = ("held-out projections (R-free)" if free.any()
                                                               else "the projections reconstructed")
        if report["enhancement"].get("consistency", {}).get("network_accepted", True):
            traced_volume = volumes["U-Net"]
    if not run.done("trace_refine"):
        def do_trace():
            table, meta = trace_volume(io.Volume(traced_volume, rec_volume.pixel_size), aligned, refine=refine,
                                       device=device, progress_factory=progress_factory, free=free,
                                       complete=complete, extended_object=extended_object, species=species,
                                       n_classes=max(2, len(species) + 1), probe_tail=probe_tail)
            io.write_atoms(run.work / "traced.csv", table, metadata=meta)
        _stage(run, "trace_refine", do_trace)
    if not run.done("analyze"):
        def do_analyze():
            table, meta = io.read_atoms(run.work / "traced.csv")
            analysed, summary = analyze_atoms(table, support_normal=support_normal, progress=progress_bar("analyze"))
            io.write_atoms(run.work / "atoms.csv", analysed, metadata=meta | {"analysis": summary})
        _stage(run, "analyze", do_analyze)
    analysed, meta = io.read_atoms(run.work / "atoms.csv")
    if figures:
        report["figures"] = _figures_stage(run, analysed, meta["analysis"], volumes, rec_volume.pixel_size,
                                           aligned.angles, layer_maps)
    report.update(_results(analysed, meta, run.stages, resume,
                           traced_enhanced=enhance and traced_volume is not rec_volume.data))
    io.write_json(run.work / "report.json", report)
    run.commit(RUN_OUTPUTS)
    return report


def _projections(ts, keep):
    """The tilt series' projections where ``keep`` is True (all of them: the series itself)."""
    from .io import TiltSeries

    if keep.all():
        return ts
    return TiltSeries(ts.data[keep], np.asarray(ts.angles)[keep], ts.pixel_size, metadata=ts.metadata)


def _run_settings(ts, align_first, enhance, refine, extended_object, support_normal, weights) -> dict:
    """What a run was asked to do, in its report; with the data, what a resumed run must share."""
    meta = ts.metadata or {}
    return {"align": align_first, "enhance": enhance, "refine": refine, "extended_object": extended_object,
            "support_normal": None if support_normal is None else [float(v) for v in support_normal],
            "weights": str(weights) if weights else "shipped",
            "pixel_size": ts.pixel_size, "n_projections": int(ts.data.shape[0]),
            "angles_deg": np.asarray(ts.angles).tolist(), "angles_source": meta.get("angles_source"),
            "angle_convention": meta.get("angle_convention", "zyz"), "preprocessing": meta.get("preprocessing")}


def _stage(run, name: str, fn):
    """Run one stage, recording its time and the process's peak memory."""
    t0 = time.perf_counter()
    res = fn()
    run.record(name, {"seconds": round(time.perf_counter() - t0, 3), "process_peak_gib": round(_peak_gib(), 3)})
    return res


def _align_stage(run, ts, device, progress_bar) -> tuple:
    """The aligned tilt series and the alignment's summary (from the checkpoint when resumed)."""
    from . import io
    from .align import AlignmentResult, align

    if not run.done("align"):
        _stage(run, "align", lambda: io.write_json(run.work / "alignment.json", align(
            ts.data, ts.angles, pixel_size=ts.pixel_size, device=device, progress=progress_bar("align")).summary()))
    summary = io.read_sidecar(run.work / "alignment.json")
    return AlignmentResult.from_summary(summary).apply(ts), summary


def _reconstruct_stage(run, aligned, device, extended_object, progress_bar) -> tuple:
    from . import io
    from .reconstruct import reconstruct
    from .validate import check_finite_output

    if not run.done("reconstruct"):
        def do_reconstruct():
            rec = reconstruct(aligned.data, aligned.angles, aligned.pixel_size, device=device,
                              progress=progress_bar("reconstruct"), extended_object=extended_object)
            check_finite_output(rec.volume, "the reconstruction")
            io.write_volume(run.work / "tomogram.mrc", rec.volume, rec.pixel_size)
            io.write_json(run.work / "reconstruction.json",
                          {k: v for k, v in rec.summary().items() if k != "r_factors"} | {"r_factors": rec.r_factors})
        _stage(run, "reconstruct", do_reconstruct)
    return io.read_volume(run.work / "tomogram.mrc"), io.read_sidecar(run.work / "reconstruction.json")


def _enhance_stage(run, rec_volume, aligned, network, device, progress_bar) -> tuple:
    """The network's tomogram and its record, with the check that it still explains the
    measured tilt series (never worse than no network)."""
    from . import io
    from .enhance import data_consistency, enhance_tomogram

    if not run.done("enhance"):
        def do_enhance():
            enh, info = enhance_tomogram(rec_volume.data, rec_volume.pixel_size, network=network, device=device,
                                         progress=progress_bar("enhance"))
            io.write_volume(run.work / "tomogram_enhanced.mrc", enh, rec_volume.pixel_size)
            consistency = data_consistency(rec_volume.data, enh, aligned.data, aligned.angles, device=device,
                                           pixel_size=aligned.pixel_size,
                                           training_pixel_size=network[1].get("training_pixel_size"))
            note = None
            if not consistency["network_accepted"]:
                note = f"{consistency['reason']}: the atoms were traced in the plain reconstruction (both tomograms kept)"
            io.write_json(run.work / "enhancement.json", {"weights_sha256": info["weights_sha256"],
                                                          "warning": info["warning"], "consistency": consistency,
                                                          "note": note})
        _stage(run, "enhance", do_enhance)
    return io.read_volume(run.work / "tomogram_enhanced.mrc").data, io.read_sidecar(run.work / "enhancement.json")


def _figures_stage(run, analysed, summary, volumes, pixel_size, angles, layer_maps) -> list:
    from . import figures as fg
    from .geometry import tilt_range

    fig_dir = run.work / "figures"
    if not run.done("figures"):
        _stage(run, "figures", lambda: fg.write_figures(fig_dir, analysed, summary, volumes, pixel_size,
                                                        tilt_range(angles), with_layer_maps=layer_maps))
    return sorted(f.name for f in fig_dir.iterdir()) if fig_dir.exists() else []


def _results(analysed, meta, stages, resume, traced_enhanced: bool) -> dict:
    """The report's figures of merit and timings."""
    from .analysis import AnalysisSummary

    found = AnalysisSummary.of(meta)
    atoms = analysed[analysed["atom"] == 1]
    return {
        "stages": stages, "resumed": bool(resume),
        "traced_tomogram": "tomogram_enhanced.mrc" if traced_enhanced else "tomogram.mrc",
        "n_atoms": int(len(atoms)), "n_non_atoms": int(len(analysed) - len(atoms)),
        "share_assigned_fcc": found.share_assigned, "lattice_constant": found.lattice_constant,
        "crystal_rotation": found.crystal_rotation.tolist(), "facet_statistics": found.facet_statistics,
        "refinement": meta.get("refinement"), "r_work": (meta.get("validation") or {}).get("r_work"),
        "r_free": (meta.get("validation") or {}).get("r_free"), "validation": meta.get("validation"),
        "completion": meta.get("completion"), "species": meta.get("species"),
        "second_population": meta.get("second_population"),
        "alloy": (meta.get("analysis") or {}).get("alloy"),
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 3),
        "threads": _thread_plan(),
    }


def _thread_plan() -> Optional[dict]:
    """The thread pools this process runs with (core.threads), for the report."""
    from .threads import current_plan

    plan = current_plan()
    return None if plan is None else plan.as_dict()

"""The pipeline end to end: tilt series to atoms, facets, strain, report and figures.

Plain functions used by the command line (``run``, ``demo``, ``trace``), the batch runner and
the napari widgets alike.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import AETInputError

__all__ = ["trace_volume", "run_pipeline", "RUN_OUTPUTS"]

RUN_OUTPUTS = ("tomogram.mrc", "tomogram_enhanced.mrc", "atoms.csv", "atoms.json", "report.json", "figures")


def trace_volume(vol, tilts_ts=None, alignment=None, min_distance=2.0, n_classes=2, species=(), fit="gaussian",
                 upsample=1, refine=True, refine_iterations=150, device="auto", progress_factory=None, cancel=None):
    """Trace (and refine against the tilt series when given): atoms table and sidecar metadata.

    ``tilts_ts`` is the tilt series the volume was reconstructed from and ``alignment`` the
    :class:`~napari_aet.core.align.AlignmentResult` applied to it first (None: already aligned).
    ``run``, ``trace`` and the workbench's Trace widget all trace through this function, so they
    give the same atoms from the same tomogram and tilt series.
    """
    from .refine import refine_positions
    from .trace import trace_atoms

    make = progress_factory or (lambda name: None)
    res = trace_atoms(vol.data, vol.pixel_size, min_distance=min_distance, n_classes=n_classes,
                      species_names=species, fit=fit, upsample=upsample, progress=make("trace"), cancel=cancel)
    table, meta = res.table, {"trace": res.metadata}
    if tilts_ts is not None and refine:
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
        data, angles = aligned.data, aligned.angles
        atoms = table["atom"].to_numpy() == 1
        if atoms.any():
            classes = table.loc[atoms, "species"].astype(str).to_numpy()
            ref = refine_positions(table.loc[atoms, ["x", "y", "z"]].to_numpy(), np.unique(classes, return_inverse=True)[1],
                                   data, angles, vol.pixel_size, iterations=refine_iterations, device=device,
                                   progress=make("refine"), cancel=cancel)
            table.loc[atoms, ["x", "y", "z"]] = ref.positions
            meta["refinement"] = ref.summary()
            meta["refinement"]["alignment_applied"] = alignment is not None
    return table, meta



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
        import json
        import shutil

        from .io import write_json

        self.out, self.work = out, out / WORK_DIR
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / _OLD_DIR, ignore_errors=True)  # left by a run killed while moving in
        self.progress = {"fingerprint": fingerprint, "stages": {}}
        if resume:
            try:
                self.progress = json.loads((self.work / "progress.json").read_text())
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
                 layer_maps: bool = False, support_normal=None) -> dict:
    """Align, reconstruct, enhance, trace, refine and analyze a tilt series into ``out``.

    ``out`` gets tomogram.mrc, tomogram_enhanced.mrc (with the network), atoms.csv
    (+ atoms.json), report.json and figures/, all from this run: the run is built in
    ``out/.napari-aet-partial`` and moved into place when it has finished, replacing every
    output of an earlier run. ``resume`` continues an interrupted run with the same data and
    settings from its last finished stage. ``progress_factory(name)`` returns a progress
    callback per stage. ``figures``: the reference work's figures and the tomogram views
    (:func:`figures.write_figures`); ``layer_maps`` adds every layer's map of each
    displacement and strain component. ``support_normal`` (sample frame, from the particle to
    its support) gives the support statistics and draws the support in figure (a).
    """
    import json
    import platform

    from .. import __version__
    from . import io
    from .align import AlignmentResult, align
    from .analysis import analyze_atoms
    from .reconstruct import reconstruct
    from .validate import check_angle_values, check_finite_output, check_tilt_signal

    progress_bar = progress_factory or (lambda name: None)
    out = Path(out)
    check_tilt_signal(ts.data)
    check_angle_values(ts.angles)
    model = meta_w = None
    if enhance:  # the weights are checked before any work, not after the reconstruction
        from .enhance import load_weights
        from .projector import resolve_device

        model, meta_w = load_weights(weights, device=resolve_device(device), trust=trust_weights)
    settings = {"align": align_first, "enhance": enhance, "refine": refine, "extended_object": extended_object,
                "support_normal": None if support_normal is None else [float(v) for v in support_normal],
                "weights": str(weights) if weights else "shipped",
                "pixel_size": ts.pixel_size, "n_projections": int(ts.data.shape[0]),
                "angles_deg": np.asarray(ts.angles).tolist(),
                "angles_source": (ts.metadata or {}).get("angles_source"),
                "angle_convention": (ts.metadata or {}).get("angle_convention", "zyz"),
                "preprocessing": (ts.metadata or {}).get("preprocessing")}
    run = _RunFolder(out, _fingerprint(ts, settings), resume)
    work = run.work
    report = {"version": __version__, "python": platform.python_version(), "settings": settings | {"device": device}}

    def stage(name, fn):
        t0 = time.perf_counter()
        res = fn()
        run.record(name, {"seconds": round(time.perf_counter() - t0, 3), "process_peak_gib": round(_peak_gib(), 3)})
        return res

    def saved(name):
        return json.loads((work / name).read_text())

    data, angles = ts.data, ts.angles
    if align_first:
        if not run.done("align"):
            stage("align", lambda: io.write_json(work / "alignment.json", align(
                data, angles, pixel_size=ts.pixel_size, device=device, progress=progress_bar("align")).summary()))
        report["alignment"] = saved("alignment.json")
        aligned = AlignmentResult.from_summary(report["alignment"]).apply(ts)
        data, angles = aligned.data, aligned.angles
    if not run.done("reconstruct"):
        def do_reconstruct():
            rec = reconstruct(data, angles, ts.pixel_size, device=device, progress=progress_bar("reconstruct"),
                              extended_object=extended_object)
            check_finite_output(rec.volume, "the reconstruction")
            io.write_volume(work / "tomogram.mrc", rec.volume, rec.pixel_size)
            io.write_json(work / "reconstruction.json",
                          {k: v for k, v in rec.summary().items() if k != "r_factors"} | {"r_factors": rec.r_factors})
        stage("reconstruct", do_reconstruct)
    rec_volume = io.read_volume(work / "tomogram.mrc")
    report["reconstruction"] = saved("reconstruction.json")
    traced_volume = rec_volume.data
    if enhance:
        if not run.done("enhance"):
            def do_enhance():
                from .enhance import data_consistency, enhance_tomogram

                enh, info = enhance_tomogram(rec_volume.data, rec_volume.pixel_size, network=(model, meta_w),
                                             device=device, progress=progress_bar("enhance"))
                warn = info["warning"]
                io.write_volume(work / "tomogram_enhanced.mrc", enh, rec_volume.pixel_size)
                # never worse than no network: the network's tomogram must still explain the measurement
                consistency = data_consistency(rec_volume.data, enh, data, angles, device=device)
                note = None
                if not consistency["network_accepted"]:
                    note = (f"the network's tomogram explains the tilt series worse (R {consistency['r_factor_enhanced']:.4f} "
                            f"against {consistency['r_factor_reconstruction']:.4f}); the atoms were traced in the plain "
                            "reconstruction (both tomograms kept)")
                io.write_json(work / "enhancement.json", {"weights_sha256": meta_w.get("sha256"), "warning": warn,
                                                          "consistency": consistency, "note": note})
            stage("enhance", do_enhance)
        report["enhancement"] = saved("enhancement.json")
        enhanced_volume = io.read_volume(work / "tomogram_enhanced.mrc").data
        if report["enhancement"].get("consistency", {}).get("network_accepted", True):
            traced_volume = enhanced_volume
    traced_enhanced = enhance and traced_volume is not rec_volume.data
    vol = io.Volume(traced_volume, rec_volume.pixel_size)
    if not run.done("trace_refine"):
        def do_trace():
            table, meta = trace_volume(vol, io.TiltSeries(data, angles, ts.pixel_size), refine=refine, device=device,
                                       progress_factory=progress_factory)
            io.write_atoms(work / "traced.csv", table, metadata=meta)
        stage("trace_refine", do_trace)
    if not run.done("analyze"):
        def do_analyze():
            table, meta = io.read_atoms(work / "traced.csv")
            analysed, summary = analyze_atoms(table, support_normal=support_normal, progress=progress_bar("analyze"))
            meta["analysis"] = summary
            io.write_atoms(work / "atoms.csv", analysed, metadata=meta)
        stage("analyze", do_analyze)
    analysed, meta = io.read_atoms(work / "atoms.csv")
    summary = meta["analysis"]
    if figures:
        from . import figures as fg
        from .geometry import tilt_range

        fig_dir = work / "figures"

        def make_figures():
            vols = {"RESIRE": rec_volume.data} | ({"U-Net": enhanced_volume} if enhance else {})
            fg.write_figures(fig_dir, analysed, summary, vols, rec_volume.pixel_size, tilt_range(angles),
                             with_layer_maps=layer_maps)

        if not run.done("figures"):
            stage("figures", make_figures)
        report["figures"] = sorted(f.name for f in fig_dir.iterdir()) if fig_dir.exists() else []
    atoms = analysed[analysed["atom"] == 1]
    stages = run.stages
    report.update({
        "stages": stages, "resumed": bool(resume), "traced_tomogram": "tomogram_enhanced.mrc" if traced_enhanced
        else "tomogram.mrc",
        "n_atoms": int(len(atoms)), "n_non_atoms": int(len(analysed) - len(atoms)),
        "share_assigned_fcc": summary["share_assigned"], "lattice_constant": summary["lattice"]["lattice_constant"],
        "crystal_rotation": summary["lattice"]["crystal_rotation"], "facet_statistics": summary["facet_statistics"],
        "refinement": meta.get("refinement"), "total_seconds": round(sum(s["seconds"] for s in stages.values()), 3),
    })
    io.write_json(work / "report.json", report)
    run.commit(RUN_OUTPUTS)
    return report

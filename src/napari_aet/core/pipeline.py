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
                 upsample=1, refine=True, refine_iterations=150, device="auto", progress_factory=None):
    """Trace (and refine against the tilt series when given): atoms table and sidecar metadata."""
    from .align import apply_shifts
    from .refine import refine_positions
    from .trace import trace_atoms

    make = progress_factory or (lambda name: None)
    res = trace_atoms(vol.data, vol.pixel_size, min_distance=min_distance, n_classes=n_classes,
                      species_names=species, fit=fit, upsample=upsample, progress=make("trace"))
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
        data, angles = tilts_ts.data, tilts_ts.angles
        if alignment is not None:
            shifts, angles = alignment
            data = apply_shifts(data, -shifts)
        atoms = table["atom"].to_numpy() == 1
        if atoms.any():
            classes = table.loc[atoms, "species"].astype(str).to_numpy()
            ref = refine_positions(table.loc[atoms, ["x", "y", "z"]].to_numpy(), np.unique(classes, return_inverse=True)[1],
                                   data, angles, vol.pixel_size, iterations=refine_iterations, device=device,
                                   progress=make("refine"))
            table.loc[atoms, ["x", "y", "z"]] = ref.positions
            meta["refinement"] = ref.summary()
            meta["refinement"]["alignment_applied"] = alignment is not None
    return table, meta



def _peak_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_pipeline(ts, out: Path, align_first: bool = True, enhance: bool = True, device: str = "auto",
                 weights=None, refine: bool = True, figures: bool = True, progress_factory=None) -> dict:
    """Align, reconstruct, enhance, trace, refine and analyze a tilt series into ``out``.

    ``out`` gets tomogram.mrc, tomogram_enhanced.mrc, atoms.csv (+ atoms.json), report.json
    and figures/. ``progress_factory(name)`` returns a progress callback per stage.
    """
    import platform

    from .. import __version__
    from . import io
    from .align import align, apply_shifts
    from .analysis import analyze_atoms
    from .reconstruct import reconstruct

    progress_bar = progress_factory or (lambda name: None)
    out = Path(out)

    out.mkdir(parents=True, exist_ok=True)
    stages, report = {}, {"version": __version__, "python": platform.python_version(), "settings": {
        "align": align_first, "enhance": enhance, "device": device, "refine": refine, "weights": str(weights) if weights else "shipped",
        "pixel_size": ts.pixel_size, "n_projections": int(ts.data.shape[0]), "angles_deg": np.asarray(ts.angles).tolist()}}

    def stage(name, fn):
        t0 = time.perf_counter()
        res = fn()
        stages[name] = {"seconds": round(time.perf_counter() - t0, 3), "process_peak_gib": round(_peak_gib(), 3)}
        return res

    data, angles = ts.data, ts.angles
    if align_first:
        al = stage("align", lambda: align(data, angles, pixel_size=ts.pixel_size, device=device, progress=progress_bar("align")))
        data, angles = apply_shifts(data, -al.shifts), al.angles
        report["alignment"] = al.summary()
    rec = stage("reconstruct", lambda: reconstruct(data, angles, ts.pixel_size, device=device,
                                                   progress=progress_bar("reconstruct")))
    io.write_volume(out / "tomogram.mrc", rec.volume, rec.pixel_size)
    report["reconstruction"] = {k: v for k, v in rec.summary().items() if k != "r_factors"} | {"r_factors": rec.r_factors}
    traced_volume = rec.volume
    if enhance:
        from .enhance import check_intensity_range, enhance_volume, load_weights
        from .projector import resolve_device

        dev = resolve_device(device)
        model, meta = load_weights(weights, device=dev)
        warn = check_intensity_range(rec.volume, meta)
        enh = stage("enhance", lambda: enhance_volume(rec.volume, model, rec.pixel_size, meta.get("training_pixel_size"),
                                                      device=dev, progress=progress_bar("enhance")))
        io.write_volume(out / "tomogram_enhanced.mrc", enh, rec.pixel_size)
        report["enhancement"] = {"weights_sha256": meta.get("sha256"), "warning": warn}
        traced_volume = enh
    vol = io.Volume(traced_volume, rec.pixel_size)
    aligned = io.TiltSeries(data, angles, ts.pixel_size)
    table, meta = stage("trace_refine", lambda: trace_volume(vol, aligned, refine=refine, device=device,
                                                              progress_factory=progress_factory))
    analysed, summary = stage("analyze", lambda: analyze_atoms(table, progress=progress_bar("analyze")))
    meta["analysis"] = summary
    io.write_atoms(out / "atoms.csv", analysed, metadata=meta)
    if figures:
        from . import figures as fg
        from .geometry import as_euler_angles

        fig_dir = out / "figures"
        fig_dir.mkdir(exist_ok=True)

        def make_figures():
            vols = {"RESIRE": rec.volume} | ({"U-Net": traced_volume} if enhance else {})
            files = fg.save(fg.orthoslices(vols, rec.pixel_size), fig_dir, "tomogram_slices")
            tilt_max = float(np.abs(as_euler_angles(angles)[:, 1]).max())
            files += fg.save(fg.fourier_intensity(vols, tilt_max, rec.pixel_size), fig_dir, "fourier_intensity")
            files += fg.save(fg.atoms_by_assignment(analysed), fig_dir, "atoms_fcc")
            files += fg.save(fg.atoms_by_facet(analysed), fig_dir, "atoms_facets")
            files += fg.save(fg.isosurfaces(vols, rec.pixel_size), fig_dir, "tomogram_3d")
            for comp in ("ux", "uy", "uz", "exx", "eyy", "ezz", "exy", "exz", "eyz"):
                f = fg.layer_maps(analysed, comp, summary["lattice"], summary["settings"]["layer_axis"])
                if f is not None:
                    files += fg.save(f, fig_dir, f"layers_{comp}")
            return files

        report["figures"] = [Path(f).name for f in stage("figures", make_figures)]
    atoms = analysed[analysed["atom"] == 1]
    report.update({
        "stages": stages,
        "n_atoms": int(len(atoms)), "n_non_atoms": int(len(analysed) - len(atoms)),
        "share_assigned_fcc": summary["share_assigned"], "lattice_constant": summary["lattice"]["lattice_constant"],
        "crystal_rotation": summary["lattice"]["crystal_rotation"], "facet_statistics": summary["facet_statistics"],
        "refinement": meta.get("refinement"), "total_seconds": round(sum(s["seconds"] for s in stages.values()), 3),
    })
    io.write_json(out / "report.json", report)
    return report

"""The ``napari-aet`` command line: one entry point, one subcommand per stage.

Progress goes to standard error; results are written only where told; bad input ends the
command with a one-line reason and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from typing import Optional, Sequence

from .core.errors import AETInputError, Cancelled
from .core.locks import FolderInUse, output_lock, tracking_inputs
from .core.pipeline import RUN_OUTPUTS, run_pipeline, trace_volume

# Exit statuses (README, "Exit statuses"): 0 done; 1 some batch jobs failed; 2 bad input or
# settings; 3 a file-system error (permissions, disk full, a folder where a file was meant);
# 4 out of memory; 130 cancelled (Ctrl+C).
EXIT_BAD_INPUT = 2
EXIT_OS_ERROR = 3
EXIT_NO_MEMORY = 4
EXIT_CANCELLED = 130


def progress_bar(desc: str):
    """A ``progress(done, total, message)`` callback drawing a tqdm bar on standard error."""
    from tqdm import tqdm

    state = {"bar": None}

    def callback(done: int, total: int, message: str = "") -> None:
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)
        if message:
            bar.set_postfix_str(message, refresh=False)
        if done >= total:
            bar.close()

    return callback


def _info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# the output folders a command holds (locked until it ends; main enters and leaves it per command)
_COMMAND_LOCKS = contextlib.ExitStack()


def _lock_output(out_dir: Path) -> None:
    """Hold the lock on a folder the command builds until the command ends (one writer a folder)."""
    _COMMAND_LOCKS.enter_context(output_lock(out_dir))


def _prepare_out_dir(out_dir: Path, names: Sequence[str], overwrite: bool) -> None:
    """Lock a results folder for this command, then refuse to replace results without ``overwrite``."""
    from .core.locks import check_not_input

    if out_dir.exists() and not out_dir.is_dir():
        raise AETInputError(f"{out_dir} is a file, not a folder; give a folder for the results")
    check_not_input([out_dir / n for n in names], what="a result")
    _lock_output(out_dir)
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise AETInputError(
            f"{out_dir} already holds {', '.join(existing)}; choose another folder or pass --overwrite"
        )


# --------------------------------------------------------------------- simulate

SIMULATE_OUTPUTS = ("tilts.mrc", "angles.txt", "truth.csv", "truth.json", "ideal.mrc", "meta.json")


def _add_simulation_options(p: argparse.ArgumentParser) -> None:
    from .core.simulate import SHAPES

    g = p.add_argument_group("particle")
    g.add_argument("--element", default="Pt", help="fcc metal (default: Pt)")
    g.add_argument("--lattice-constant", type=float, default=None, metavar="Å",
                   help="lattice constant in Å (default: ASE's value, Pt 3.924)")
    g.add_argument("--shape", choices=SHAPES, default="wulff",
                   help="wulff (Pt surface energies), octahedron (truncated), spheres (random union), sphere")
    g.add_argument("--size", type=float, default=3.5, metavar="NM", help="particle diameter in nm (default 3.5)")
    g.add_argument("--orientation", choices=("random", "aligned"), default="random",
                   help="crystal orientation in the sample frame (default random)")
    g.add_argument("--vacancies", type=float, default=0.0, metavar="FRACTION",
                   help="share of surface atoms removed (0-1, default 0)")
    g.add_argument("--strain", type=float, default=0.0, metavar="FRACTION",
                   help="amplitude of a smooth strain field, plain fraction (0.01 = 1%%; default 0)")
    g.add_argument("--surface-relaxation", type=float, default=0.0, metavar="Å",
                   help="outward (+) or inward (-) shift of surface atoms in Å (default 0)")
    g.add_argument("--offsite-fraction", type=float, default=0.0, metavar="FRACTION",
                   help="share of atoms moved off their lattice sites (default 0)")
    g.add_argument("--offsite-distance", type=float, default=1.0, metavar="Å",
                   help="how far off-site atoms move, Å (default 1.0)")
    g.add_argument("--substrate", action="store_true", help="add an amorphous carbon film under the particle")
    g.add_argument("--b-factor", type=float, default=5.0, metavar="Å²", help="Debye-Waller B-factor in Å² (default 5)")
    g = p.add_argument_group("measurement")
    g.add_argument("--pixel-size", type=float, default=0.357, metavar="Å", help="pixel size in Å (default 0.357)")
    g.add_argument("--voxels", type=int, default=144, metavar="N", help="volume and detector size in pixels (default 144)")
    g.add_argument("--tilt-range", type=float, default=65.0, metavar="DEG", help="tilts from -RANGE to +RANGE degrees (default 65)")
    g.add_argument("--tilt-step", type=float, default=6.5, metavar="DEG", help="tilt step in degrees (default 6.5)")
    g.add_argument("--angles", type=Path, default=None, metavar="FILE",
                   help="angles file (degrees: one tilt or phi theta psi per line); overrides range and step")
    g.add_argument("--probe-sigma", type=float, default=0.0, metavar="Å", help="Gaussian probe blur, sigma in Å (default 0)")
    g.add_argument("--dose", type=float, default=1e5, metavar="E/Å²",
                   help="electron dose per projection in e/Å² for Poisson noise; 0 = noise-free (default 1e5)")
    g.add_argument("--cross-section", type=float, default=0.02, metavar="Å²",
                   help="HAADF cross-section of one Pt atom in Å² (default 0.02)")
    g.add_argument("--angle-error", type=float, default=0.0, metavar="DEG",
                   help="max random error (uniform) added to the true angles, degrees (default 0)")
    g.add_argument("--shift-error", type=float, default=0.0, metavar="PX",
                   help="max random shift of each projection, pixels (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _config_from_args(args):
    from .core.io import read_angles
    from .core.simulate import SimulationConfig

    angles = read_angles(args.angles).tolist() if args.angles is not None else None
    return SimulationConfig(
        element=args.element, lattice_constant=args.lattice_constant, shape=args.shape, size=args.size,
        orientation=args.orientation, vacancy_fraction=args.vacancies, strain=args.strain,
        surface_relaxation=args.surface_relaxation, offsite_fraction=args.offsite_fraction,
        offsite_distance=args.offsite_distance, substrate=args.substrate, b_factor=args.b_factor,
        pixel_size=args.pixel_size, n_voxels=args.voxels, tilt_range=args.tilt_range,
        tilt_step=args.tilt_step, angles=angles, probe_sigma=args.probe_sigma,
        dose=_dose(args.dose), cross_section=args.cross_section,
        angle_error=args.angle_error, shift_error=args.shift_error, seed=args.seed,
    )


def write_simulation(sim, out_dir: Path) -> None:
    """Write a simulation's files (tilts.mrc, angles.txt, truth.csv, ideal.mrc, meta.json)."""
    from .core import io

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = sim.metadata()
    io.write_tilt_series(out_dir / "tilts.mrc", sim.tilt_series)
    io.write_angles(out_dir / "angles.txt", sim.tilt_series.angles)
    io.write_atoms(out_dir / "truth.csv", sim.truth_table(), metadata={
        "crystal_rotation": meta["crystal_rotation"],
        "crystal_rotation_note": meta["crystal_rotation_note"],
        "lattice_constant": meta["lattice_constant"],
        "lattice_origin": meta["lattice_origin"],
    })
    io.write_volume(out_dir / "ideal.mrc", sim.ideal.data, sim.ideal.pixel_size)
    io.write_json(out_dir / "meta.json", meta)


def cmd_simulate(args) -> int:
    from .core.simulate import simulate

    cfg = _config_from_args(args)
    _prepare_out_dir(args.out_dir, SIMULATE_OUTPUTS, args.overwrite)
    t0 = time.perf_counter()
    sim = simulate(cfg, progress=progress_bar("simulate"))
    write_simulation(sim, args.out_dir)
    p = sim.particle
    _info(
        f"simulated {int(p.is_particle.sum())} {cfg.element} atoms ({cfg.shape}, {cfg.size:g} nm) "
        f"+ {int((~p.is_particle).sum())} substrate atoms, {len(sim.tilt_series.data)} projections "
        f"of {cfg.n_voxels}x{cfg.n_voxels} at {cfg.pixel_size} Å in {time.perf_counter() - t0:.1f} s -> {args.out_dir}"
    )
    return 0


# ------------------------------------------------------------------ reconstruct


def _add_tilt_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("tilts", type=Path, metavar="TILTS",
                   help="tilt series: .mrc/.st/.ali, .tif, .npy, .mat, Velox/EMD .emd/.h5 or DigitalMicrograph .dm3/.dm4")
    p.add_argument("--angles", type=Path, default=None, metavar="FILE",
                   help="angles in degrees (.txt/.csv/.rawtlt/.tlt, .npy, .mat); default: the file's own metadata "
                   "(Velox stage alpha, FEI MRC extended header), a SerialEM .mdoc beside it, or an angles file beside it")
    p.add_argument("--angle-convention", choices=("zyz", "zyx", "tilt-axis"), default="zyz",
                   help="zyz: single tilts or Z-Y-Z Euler angles (the contract's; default); zyx: Z-Y-X Euler angles "
                   "as RESIRE uses them; tilt-axis: single tilts about an axis at --tilt-axis-angle in the image")
    p.add_argument("--tilt-axis-angle", type=float, default=0.0, metavar="DEG",
                   help="with --angle-convention tilt-axis: the tilt axis's angle from the image's vertical (v) axis, "
                   "counter-clockwise, degrees (default 0)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="Å",
                   help="pixel size in Å (default: from the file header; required when it has none)")
    p.add_argument("--angle-units", choices=("deg", "rad"), default="deg", help="unit of the angles file (default deg)")
    p.add_argument("--angle-column", default=None, metavar="NAME|N",
                   help="the tilt-angle column of an angles table with other columns (index, dose): its header name "
                   "or its number from 1; needed for tables of 2 or more than 3 columns")
    p.add_argument("--stack-axis", type=int, default=0, metavar="AXIS",
                   help="axis of TILTS that indexes projections (default 0; MATLAB files often use 2)")
    p.add_argument("--transpose-projections", action="store_true",
                   help="swap each projection's rows and columns (RESIRE/GENFIRE MATLAB stacks are [x, y, projection]: "
                   "--stack-axis 2 --transpose-projections --angle-convention zyx)")
    g = p.add_argument_group("preparation (each optional; recorded in the JSON)")
    g.add_argument("--background", choices=("constant", "plane", "quadratic"), default=None,
                   help="subtract a background fitted outside the particle in each projection")
    g.add_argument("--normalize", action="store_true", help="scale projections to equal total intensity (drift)")
    g.add_argument("--denoise", choices=("bm3d",), default=None, help="BM3D with the noise level estimated from the data")
    g.add_argument("--find-tilt-axis", nargs="?", const="auto", default=None, metavar="DEG",
                   help="estimate the tilt axis's in-plane angle (or give it in degrees) and rotate the projections "
                   "so it runs along v; single-axis tilts only")


def _read_tilts_args(args):
    from .core import io
    from .core.preprocess import prepare

    ts = io.read_tilt_series(args.tilts, angles=args.angles, pixel_size=args.pixel_size,
                             stack_axis=args.stack_axis, angle_units=args.angle_units,
                             angle_convention=args.angle_convention, tilt_axis_angle=args.tilt_axis_angle,
                             transpose_projections=args.transpose_projections, angle_column=args.angle_column)
    if args.background or args.normalize or args.denoise or args.find_tilt_axis is not None:
        ts, info = prepare(ts, background=args.background, normalize=args.normalize, denoise=args.denoise,
                           tilt_axis=args.find_tilt_axis)
        if "tilt_axis" in info:
            _info(f"tilt axis at {info['tilt_axis']['tilt_axis_angle_deg']:+.2f}° from v: projections rotated to put it along v")
    return ts


def _check_output_file(path: Path, overwrite: bool, suffixes=(".mrc",), inputs: Sequence = (),
                       sidecar: bool = False) -> None:
    """Refuse an output that would replace an input, an existing file (without --overwrite) or,
    with ``sidecar``, a JSON beside it that belongs to another file."""
    import glob

    from .core.io import sidecar_owner
    from .core.validate import check_not_same_file

    if path.suffix.lower() not in suffixes:
        raise AETInputError(f"output {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise AETInputError(f"output {path} is a folder; give a file name ending in {suffixes[0]}")
    if not path.parent.exists():
        raise AETInputError(f"output folder {path.parent} does not exist; create it first")
    check_not_same_file(path, inputs)
    if path.exists() and not overwrite:
        raise AETInputError(f"{path} exists; choose another name or pass --overwrite")
    if not sidecar:
        return
    side = path.with_suffix(".json")
    for inp in inputs:
        if inp is not None and side.exists() and (side.resolve() == Path(inp).resolve()
                                                  or side.resolve() == Path(inp).with_suffix(".json").resolve()):
            raise AETInputError(f"writing {path} would replace {side.name}, which belongs to the input {Path(inp).name} "
                                "(its record: settings, alignment or checksum); choose another output name")
    if side.exists():
        owner = sidecar_owner(side)
        others = sorted(f.name for f in path.parent.glob(glob.escape(path.stem) + ".*")
                        if f.name not in (side.name, path.name) and not f.name.startswith("."))
        if (owner is not None and owner != path.name) or (owner is None and (others or not path.exists())):
            whose = owner or (others[0] if others else "another file")
            raise AETInputError(f"{side} belongs to {whose}, and writing {path} would replace it; "
                                "choose another output name")
        if not overwrite:
            raise AETInputError(f"{side} exists; choose another name or pass --overwrite")


def _refuse_inputs_as_outputs(output: Path, sidecar: bool = True) -> None:
    """Before the work: refuse an output (or its JSON) that is a file this command read, named or
    found (angles or mdoc beside a tilt series, sidecars, weights), even with --overwrite."""
    from .core.locks import check_not_input

    check_not_input([output] + ([output.with_suffix(".json")] if sidecar else []))


def cmd_reconstruct(args) -> int:
    from .core import io
    from .core.align import align
    from .core.reconstruct import reconstruct

    from .core.validate import check_int

    _check_output_file(args.output, args.overwrite, inputs=(args.tilts, args.angles), sidecar=True)
    ts = _read_tilts_args(args)
    _refuse_inputs_as_outputs(args.output)
    data, angles, alignment = ts.data, ts.angles, None
    if args.thickness is not None:
        check_int(args.thickness, "--thickness", 1, 4 * max(ts.data.shape[1:]),
                  hint=" voxels (at most 4 times the projection width)")
    if args.align:
        t0 = time.perf_counter()
        res = align(data, angles, pixel_size=ts.pixel_size, device=args.device, progress=progress_bar("align"))
        ts = res.apply(ts)
        data, angles, alignment = ts.data, ts.angles, res.summary()
        _info(f"aligned in {time.perf_counter() - t0:.1f} s: mean |shift| {abs(res.shifts).mean():.2f} px, "
              f"tilt axis at {res.tilt_axis_offset:+.2f} px")
    shape = None
    if args.thickness is not None:
        _, nv, nu = data.shape
        shape = (args.thickness, nv, nu)
    result = reconstruct(
        data, angles, ts.pixel_size, method=args.method, iterations=args.iterations, volume_shape=shape,
        device=args.device, seed=args.seed, oversampling=args.oversampling, r_free_fraction=args.r_free,
        progress=progress_bar(f"reconstruct ({args.method})"), euler_projector=args.euler_projector,
        extended_object=args.extended_object,
    )
    io.write_volume(args.output, result.volume, result.pixel_size)
    side = result.summary()
    side.update(tilts=str(args.tilts.resolve()), angles_deg=np.asarray(angles).tolist(), alignment=alignment,
                angles_source=ts.metadata.get("angles_source"), angle_convention=ts.metadata.get("angle_convention"),
                preprocessing=ts.metadata.get("preprocessing"),
                tilts_read={k: getattr(args, k) for k in TILTS_READ_DEFAULTS},
                data_file=args.output.name)
    io.write_json(args.output.with_suffix(".json"), side)
    _info(f"{args.method}: {result.iterations} iterations on {result.device} in {result.seconds:.1f} s, "
          f"R = {result.r_factors[-1]:.4f} -> {args.output}")
    return 0


# ------------------------------------------------------------------------ trace


def _volume_sidecar(vol_path: Path) -> dict:
    """The JSON ``reconstruct`` wrote beside a tomogram ({} when there is none)."""
    from .core.io import read_sidecar

    side = vol_path.with_suffix(".json")
    return read_sidecar(side, "volume") if side.exists() else {}


def _as_reconstructed(vol_path: Path, ts):
    """The tilt series prepared as it was for the tomogram (its JSON records the preparation)."""
    from .core.preprocess import prepare

    prep = _volume_sidecar(vol_path).get("preprocessing") or {}
    if not prep:
        return ts
    axis = prep.get("tilt_axis", {}).get("tilt_axis_angle_deg") if prep.get("tilt_axis") else None
    ts, _ = prepare(ts, background=(prep.get("background") or {}).get("model"), normalize="normalize" in prep,
                    denoise=(prep.get("denoise") or {}).get("method"), tilt_axis=axis)
    return ts


TILTS_READ_DEFAULTS = {"stack_axis": 0, "transpose_projections": False, "angle_units": "deg",
                       "angle_convention": "zyz", "tilt_axis_angle": 0.0, "angle_column": None}


def _tilts_read_settings(vol_path: Path, tilts_path: Path, args=None) -> dict:
    """How to read the tilt series a tomogram came from: what ``reconstruct`` recorded beside
    the tomogram when it is that file (a RESIRE stack needs its layout and angle convention
    again), overridden by the options given here."""
    settings = dict(TILTS_READ_DEFAULTS)
    info = _volume_sidecar(vol_path)
    if info.get("tilts_read") and info.get("tilts") and Path(info["tilts"]).resolve() == Path(tilts_path).resolve():
        settings.update({k: v for k, v in info["tilts_read"].items() if k in settings})
    for k in settings:
        if args is not None and getattr(args, k, None) is not None:
            settings[k] = getattr(args, k)
    return settings


def _alignment_from_sidecar(vol_path: Path):
    """The alignment ``reconstruct --align`` saved beside the volume (an AlignmentResult), if any."""
    from .core.align import AlignmentResult

    al = _volume_sidecar(vol_path).get("alignment")
    if not al:
        return None
    return AlignmentResult.from_summary(al, where=f"the alignment in {vol_path.with_suffix('.json')}")


def cmd_trace(args) -> int:
    from .core import io

    _check_output_file(args.output, args.overwrite, suffixes=(".csv",), inputs=(args.volume, args.tilts, args.angles),
                       sidecar=True)
    vol = io.read_volume(args.volume, pixel_size=args.pixel_size, refuse_tilt_series=True)
    tilts_ts, alignment = None, None
    if args.tilts is not None:
        tilts_ts = io.read_tilt_series(args.tilts, angles=args.angles, pixel_size=args.tilts_pixel_size,
                                       require_pixel_size=False, **_tilts_read_settings(args.volume, args.tilts, args))
        if tilts_ts.pixel_size is None:  # no header value: the volume's voxel size is the pixel size
            tilts_ts.pixel_size = vol.pixel_size
        tilts_ts = _as_reconstructed(args.volume, tilts_ts)
        alignment = _alignment_from_sidecar(args.volume)
        if alignment is not None and len(alignment.shifts) != len(tilts_ts.data):
            raise AETInputError(f"the alignment beside {args.volume} is for {len(alignment.shifts)} projections but "
                                f"{args.tilts} has {len(tilts_ts.data)}; give the tilt series this tomogram came from")
    _refuse_inputs_as_outputs(args.output)  # the angles, mdoc and sidecars found beside the inputs too
    t0 = time.perf_counter()
    table, meta = trace_volume(vol, tilts_ts, alignment, args.min_distance, args.classes, args.species, args.fit,
                               args.upsample, not args.no_refine, args.refine_iterations, args.device, progress_bar,
                               probe_tail=not args.no_probe_tail)
    meta.update(volume=str(args.volume), tilts=str(args.tilts) if args.tilts else None,
                seconds=round(time.perf_counter() - t0, 3))
    io.write_atoms(args.output, table, metadata=meta)
    n_atoms = int(table["atom"].sum())
    msg = f"traced {n_atoms} atoms ({len(table) - n_atoms} non-atom peaks) in {meta['seconds']:.1f} s"
    if "refinement" in meta:
        r = meta["refinement"]
        msg += f"; refined against the tilt series: R {r['r_factor_before']:.4f} -> {r['r_factor_after']:.4f}"
    _info(msg + f" -> {args.output}")
    _report_probe_tail(meta.get("refinement"))
    _report_species({"species": meta.get("species"), "second_population": meta.get("second_population")})
    if "validation" in meta:
        _report_validation({"validation": meta["validation"]})
    return 0


# ---------------------------------------------------------------------- analyze


def cmd_analyze(args) -> int:
    from .core import io
    from .core.correct import analyze_confident

    _check_output_file(args.output, args.overwrite, suffixes=(".csv",), inputs=(args.atoms,), sidecar=True)
    grid_path = args.output.with_name(args.output.stem + "_grid.npz")
    if args.grid_spacing is not None and grid_path.exists() and not args.overwrite:
        raise AETInputError(f"{grid_path} exists; choose another name or pass --overwrite")
    from .core.validate import check_number

    check_number(args.min_presence, "minimum presence (--min-presence)", 0.0, 1.0)
    table, _ = io.read_atoms(args.atoms)
    df, summary = analyze_confident(table, args.min_presence, lattice_constant=args.lattice_constant,
                                    tolerance=args.tolerance, sigma=args.sigma, layer_axis=args.layer_axis,
                                    surface_coordination=args.surface_coordination,
                                    strain_excludes_surface=args.strain_excludes_surface,
                                    support_normal=args.support_normal, grid_spacing=args.grid_spacing,
                                    lattice=args.lattice, strain_reference=args.strain_reference,
                                    surface_method=args.surface, alpha=args.alpha, grains=args.grains,
                                    progress=progress_bar("analyze"))
    summary["atoms"] = str(args.atoms)
    grid = summary.pop("grid", None)
    if grid is not None:
        with io.atomic_path(grid_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **grid)
        summary["grid_file"] = grid_path.name
    io.write_atoms(args.output, df, metadata=summary)
    lat = summary["lattice"]
    st = summary["facet_statistics"]
    if lat.get("kind") == "affine":
        lengths = ", ".join(f"{v:.4f}" for v in lat["base_vector_lengths"])
        angles = ", ".join(f"{v:.2f}" for v in lat["base_vector_angles"])
        _info(f"affine lattice: base vectors {lengths} Å, angles {angles}°")
    left_out = (summary.get("settings") or {}).get("n_left_out_low_presence")
    if left_out:
        _info(f"{left_out} atoms with presence below {args.min_presence:g} left out of the analysis")
    _info(f"a = {lat['lattice_constant']:.4f} Å, {summary['share_assigned']:.1%} of {summary['n_atoms']} atoms on fcc sites, "
          f"{summary['n_surface']} surface atoms ({st['100']['n_atoms']} on {{100}}, {st['111']['n_atoms']} on {{111}}) "
          f"in {summary['seconds']:.1f} s -> {args.output}")
    return 0


# ---------------------------------------------------------- network: data, train, enhance


def cmd_generate_data(args) -> int:
    from .core.training import generate_dataset, load_config

    from .core.validate import check_int

    workers = check_int(args.workers, "--workers", 1, 256)
    cfg = load_config(args.config)
    summary = generate_dataset(cfg, args.output, workers=workers, progress=progress_bar("generate"),
                               overwrite=args.overwrite)
    _info(f"{summary['chunks']} chunks ({summary['new_chunks']} new) in {summary['seconds']:.1f} s -> {args.output}")
    return 0


def cmd_train(args) -> int:
    import json as _json

    from .core.io import write_json
    from .core.training import load_config, train

    from .core.validate import check_number

    cfg = load_config(args.config)
    if args.max_minutes is not None:  # inf or <= 0 would train with a learning rate of 0
        cfg.max_minutes = check_number(args.max_minutes, "--max-minutes", 0.0, 10**7, unit="minutes", lo_open=True)
    if os.environ.get("RANK", "0").strip() == "0":  # rank 0 writes RUN_DIR: one such writer at a time
        _lock_output(args.output)
    res = train(cfg, args.data, args.output, device=args.device, progress=progress_bar("train"),
                log=lambda e: _info(_json.dumps(e)), init_weights=args.init_weights)
    if res["rank"] == 0:
        prov = {
            "command": "napari-aet " + " ".join(sys.argv[1:]) if sys.argv and "napari" in sys.argv[0] else None,
            "config": cfg.to_dict(), "data": res["data"], "n_train": res["n_train_pairs"], "n_val": res["n_val_pairs"],
            "epochs_done": res["epochs_done"], "wall_seconds": res["seconds"], "device": res["device"],
            "world_size": res["world_size"], "n_parameters": res["n_parameters"], "sha256": res["sha256"],
            "validation": res["history"][-1] if res["history"] else None,
            "init_weights": None if args.init_weights is None else str(args.init_weights),
            "bn_recalibration": res.get("bn_recalibration"),
        }
        write_json(args.output / "weights.json", prov)
        _info(f"trained {res['epochs_done']} epochs in {res['seconds']:.0f} s -> {args.output / 'weights.pt'}")
    return 0


def cmd_enhance(args) -> int:
    from .core import io
    from .core.enhance import enhance_tomogram, load_weights
    from .core.projector import resolve_device

    _check_output_file(args.output, args.overwrite, inputs=(args.volume, args.tilts, args.weights), sidecar=True)
    dev = resolve_device(args.device)
    network = load_weights(args.weights, device=dev, trust=args.trust_weights)  # bad weights fail before any reading
    vol = io.read_volume(args.volume, pixel_size=args.pixel_size, refuse_tilt_series=True)
    measured = _measured_tilts_for(args, vol)
    _refuse_inputs_as_outputs(args.output)
    t0 = time.perf_counter()
    out, info = enhance_tomogram(vol.data, vol.pixel_size, network=network, device=dev, tile=args.tile,
                                 flip_average=args.flip_average, progress=progress_bar("enhance"))
    if info["warning"]:
        _info(f"warning: {info['warning']}")
    meta = network[1]
    side = {"data_file": args.output.name, "volume": str(args.volume), "weights_sha256": meta.get("sha256"),
            "weights": meta.get("weights_path"), "consistency": None}
    if measured is not None:
        from .core.enhance import data_consistency

        side["consistency"] = c = data_consistency(vol.data, out, measured[0], measured[1], device=dev,
                                                   pixel_size=vol.pixel_size,
                                                   training_pixel_size=meta.get("training_pixel_size"))
        side["tilts"] = str(measured[2])
        if c["network_accepted"]:
            _info(f"re-projection R against {measured[2].name}: {c['r_factor_reconstruction']:.4f} -> "
                  f"{c['r_factor_enhanced']:.4f} (within the +{c['tolerance']:g} tolerance); noise/signal "
                  f"{c['noise_ratio']:.3f} (validated up to {c['noise_limit']:g})")
        else:
            _info(f"note: {c['reason']}; trace the plain tomogram {args.volume.name} instead")
    else:
        _info("note: no tilt series to check the network's output against (pass --tilts, or reconstruct with this "
              "version so the tomogram's JSON names its tilt series)")
    io.write_volume(args.output, out, vol.pixel_size)
    io.write_json(args.output.with_suffix(".json"), side)
    _info(f"enhanced {vol.data.shape} on {dev} in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def _measured_tilts_for(args, vol):
    """The (aligned) tilt series a tomogram came from: ``--tilts`` or the one its JSON names."""
    from .core import io

    path, angles = args.tilts, args.angles
    if path is None:
        info = _volume_sidecar(args.volume)
        if not info.get("tilts") or not Path(info["tilts"]).exists():
            return None
        path = Path(info["tilts"])
        if angles is None and info.get("angles_deg") and not info.get("alignment"):
            angles = np.asarray(info["angles_deg"], float)
    read = _tilts_read_settings(args.volume, path)
    if isinstance(angles, np.ndarray):  # the recorded angles are the contract's already: no second conversion
        read.update(angle_units="deg", angle_convention="zyz", angle_column=None)
    ts = _as_reconstructed(args.volume, io.read_tilt_series(path, angles=angles, require_pixel_size=False, **read))
    alignment = _alignment_from_sidecar(args.volume)
    if alignment is not None and len(alignment.shifts) == len(ts.data):
        ts = alignment.apply(ts)
    data, ang = ts.data, ts.angles
    if data.shape[1:] != vol.data.shape[1:]:
        raise AETInputError(f"{path} has projections of {data.shape[1]}x{data.shape[2]} but the tomogram is "
                            f"{vol.data.shape[1]}x{vol.data.shape[2]} in y, x; give the tilt series it came from")
    return data, ang, Path(path)


# -------------------------------------------------------------------------- run

def _check_inputs_outside(out_dir: Path, names: Sequence[str], inputs: Sequence) -> None:
    """Refuse a results folder whose outputs would replace one of the inputs."""
    from .core.validate import check_not_same_file

    for name in names:
        check_not_same_file(out_dir / name, inputs, what="a result")


def _report_network(rep: dict) -> None:
    """One line on whether the network's tomogram was used (its re-projection R-factor)."""
    enh = rep.get("enhancement") or {}
    c = enh.get("consistency")
    if not c:
        return
    if enh.get("note"):
        _info(f"note: {enh['note']}")
    else:
        noise = f"; noise/signal {c['noise_ratio']:.3f}" if c.get("noise_ratio") is not None else ""
        where = " on the held-out projections" if str(c.get("measured_on", "")).startswith("held-out") else ""
        _info(f"network accepted: re-projection R{where} {c['r_factor_reconstruction']:.4f} (reconstruction) -> "
              f"{c['r_factor_enhanced']:.4f} (network), within the +{c['tolerance']:g} tolerance{noise}")


def _report_probe_tail(refinement) -> None:
    """One line on the probe tail the refinement fitted, and whether it was taken off."""
    tail = (refinement or {}).get("probe_tail")
    if not tail:
        return
    what = ("taken off the tilt series for the refit and confidence" if tail.get("removed") else
            f"below {tail.get('min_fraction', 0.05):.0%}: the tilt series is used as measured")
    _info(f"probe tail: {tail['fraction']:.1%} of each atom's intensity in a {tail['sigma_A']:.2f} Å Gaussian tail, "
          f"{what} (--no-probe-tail: Gaussian atoms alone)")


def _report_validation(rep: dict) -> None:
    """One line on how far to trust the atoms: R-work, R-free and the least certain atoms."""
    v = rep.get("validation")
    if not v:
        return
    n_free = v.get("n_free_projections", 0)
    free = (f", R-free {v['r_free']:.4f} on {n_free} held-out projection{'s' * (n_free != 1)}"
            if v.get("r_free") is not None else
            " (no R-free: the tomogram saw every projection; run holds 10% out by default, --r-free)")
    comp = rep.get("completion")
    if comp:
        _info(f"completion: {comp['n_added']} atoms added, {comp['n_removed']} removed; {comp['rounds']} round"
              f"{'s' * (comp['rounds'] != 1)} kept, stopped because {comp['stopped']}")
    sig = v["median_sigma_pm"]
    _info(f"atom model: R-work {v['r_work']:.4f}{free}; median position uncertainty x/y/z {sig[0]:.1f}/{sig[1]:.1f}/"
          f"{sig[2]:.1f} pm; {v['n_atoms_presence_below_half']} atoms with presence below 0.5 (atoms.csv: sigma_*_pm, "
          "presence)")


def _report_species(rep: dict) -> None:
    """One line on the species: counts, how sure, what the light-atom rounds found; or the
    hint when the projections want a second population and no species were given."""
    sp, second = rep.get("species"), rep.get("second_population")
    if second:
        _info(f"second population: {second['n_faint']} faint atoms at {second['ratio']:.2f} of the bright ones' "
              f"intensity; {second['hint']}")
    if sp:
        counts = ", ".join(f"{n} {c}" for n, c in sp["counts"].items())
        added = sum(r.get("added", 0) for r in sp["rounds"] if not r.get("undone"))
        _info(f"species: {counts}; {added} light atoms found at empty lattice sites and in the residual over {len(sp['rounds'])} round"
              f"{'s' * (len(sp['rounds']) != 1)}; median species confidence {sp['median_species_confidence']}, "
              f"{sp['n_species_confidence_below_0.9']} atoms below 0.9 (atoms.csv: species, species_confidence)")
    alloy = rep.get("alloy")
    if alloy and alloy.get("text"):
        _info(f"alloy: {alloy['text']}")


def cmd_run(args) -> int:
    _lock_output(args.output)  # before looking at what the folder holds: one writer at a time
    if not args.resume:
        _prepare_out_dir(args.output, RUN_OUTPUTS, args.overwrite)
    _check_inputs_outside(args.output, RUN_OUTPUTS, (args.tilts, args.angles, args.weights))
    from .core.batch import species_names

    species = species_names(" ".join(args.species), "--species")
    ts = _read_tilts_args(args)
    rep = run_pipeline(ts, args.output, align_first=not args.no_align, enhance=not args.no_enhance,
                       device=args.device, weights=args.weights, refine=not args.no_refine, progress_factory=progress_bar,
                       resume=args.resume, trust_weights=args.trust_weights, extended_object=args.extended_object,
                       layer_maps=args.layer_maps, support_normal=args.support_normal, r_free=args.r_free,
                       complete=args.complete, species=species, probe_tail=not args.no_probe_tail)
    _report_network(rep)
    _report_probe_tail(rep.get("refinement"))
    _report_species(rep)
    _report_validation(rep)
    _info(f"{rep['n_atoms']} atoms, {rep['share_assigned_fcc']:.1%} on fcc sites, a = {rep['lattice_constant']:.4f} Å, "
          f"in {rep['total_seconds']:.0f} s with {_threads_line()} -> {args.output}")
    if args.support_normal is None and rep.get("n_non_atoms"):
        _info("figure a draws no support: give --support-normal X Y Z (from the particle to its support) to draw "
              "it and measure the contact")
    return 0


def cmd_batch(args) -> int:
    from .core.batch import run_batch

    results = run_batch(args.manifest, args.output, scheduler=args.scheduler, workers=args.workers,
                        device=args.device, progress=progress_bar("batch"), overwrite=args.overwrite)
    width = max(len(r["name"]) for r in results)
    print(f"{'job'.ljust(width)}  status          seconds  atoms  fcc share  reason")
    for r in results:
        print(f"{r['name'].ljust(width)}  {r['status']:<15} {r['seconds']:>7}  {str(r.get('n_atoms', '')):>5}  "
              f"{str(r.get('share_assigned_fcc', '')):>9}  {r['reason']}")
    failed = sum(r["status"] == "failed" for r in results)
    _info(f"{len(results) - failed} of {len(results)} jobs done or skipped, {failed} failed; summary in {args.output / 'batch_summary.csv'}")
    return 1 if failed else 0


def cmd_figures(args) -> int:
    from .core import figures as fg
    from .core import io
    from .core.geometry import tilt_range as single_axis_tilt_range

    src = args.run_dir
    atoms_path = src / "atoms.csv"
    if not src.is_dir() or not atoms_path.exists():
        raise AETInputError(f"{src} holds no atoms.csv: give the OUT_DIR of 'napari-aet run' (or of the demo)")
    table, meta = io.read_atoms(atoms_path)
    summary = meta.get("analysis")
    if summary is None:
        raise AETInputError(f"{atoms_path} has not been analysed: run 'napari-aet analyze' on it first")
    volumes, pixel_size = {}, 1.0
    for label, name in (("RESIRE", "tomogram.mrc"), ("U-Net", "tomogram_enhanced.mrc")):
        if (src / name).exists():
            vol = io.read_volume(src / name)
            volumes[label], pixel_size = vol.data, vol.pixel_size or pixel_size
    tilt_range = args.tilt_range
    if tilt_range is not None and not 0 < tilt_range < 90:
        raise AETInputError(f"--tilt-range {tilt_range}: give the largest tilt in degrees, between 0 and 90")
    report = src / "report.json"
    if tilt_range is None and report.exists():
        rep = io.read_sidecar(report, "report")  # the angles reconstructed with: refined ones when the run aligned
        angles = (rep.get("alignment") or {}).get("angles_deg") or (rep.get("settings") or {}).get("angles_deg")
        if angles:
            tilt_range = single_axis_tilt_range(np.asarray(angles, float))
    out = args.output or src / "figures"
    if out.exists() and not out.is_dir():
        raise AETInputError(f"{out} is a file, not a folder; give a folder for the figures")
    _lock_output(out)  # one writer a folder; write_figures refuses existing figures without --overwrite
    paths = fg.write_figures(out, table, summary, volumes or None, pixel_size, tilt_range, layer=args.layer,
                             names=args.only, with_layer_maps=args.layer_maps, overwrite=args.overwrite)
    _info(f"{len(paths)} files -> {out}")
    return 0


# ------------------------------------------------------------------------- demo


def _threads_line() -> str:
    from .core.threads import current_plan

    plan = current_plan()
    return plan.line() if plan is not None else "default thread pools"


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")


DEMO_OUTPUTS = ("sample", "tomogram.mrc", "tomogram_enhanced.mrc", "atoms.csv", "atoms.json", "report.json", "figures")
DEMO_MARK = ".napari-aet-demo"  # says a folder is the demo's own, so a rerun may replace it


def _claim_demo_folder(out: Path, overwrite: bool) -> None:
    """Make ``out`` the demo's folder. An earlier demo there (finished, interrupted, or from a
    version that left no mark) is the demo's own and is replaced; a folder holding anything
    the demo does not write is refused unless ``overwrite``, and its files are never touched."""
    from .core.io import write_json

    if out.exists() and not out.is_dir():
        raise AETInputError(f"{out} is a file, not a folder; give a folder for the demo (-o)")
    _lock_output(out)  # one writer a folder, from this look to the last result (its lock file is skipped below)
    entries = {p.name for p in out.iterdir()} if out.exists() else set()
    # the demo's outputs and the run's own bookkeeping (partial run, lock, files being replaced)
    foreign = sorted(n for n in entries if n not in DEMO_OUTPUTS and not n.startswith(".napari-aet"))
    earlier_demo = DEMO_MARK in entries or (out / "sample" / "meta.json").is_file()
    if foreign and not overwrite:
        raise AETInputError(f"{out} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which the "
                            "demo did not write; give the demo its own folder (-o) or pass --overwrite")
    if entries & set(DEMO_OUTPUTS) and not earlier_demo and not overwrite:
        raise AETInputError(f"{out} holds results of another command, not an earlier demo; give the demo its own "
                            "folder (-o) or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / DEMO_MARK, {"written_by": "napari-aet demo", "replace_on_rerun": True})


def _print_demo_comparison(sim, atoms, rep: dict) -> None:
    """The traced particle against the sample's ground truth (its metal atoms only: the
    support's atoms are neither misses nor false atoms)."""
    from scipy.spatial import cKDTree

    from .core.metrics import match_atoms

    p = sim.particle
    truth = p.positions[p.is_particle]
    found = atoms[["x", "y", "z"]].to_numpy()
    m = match_atoms(found, truth)
    # the alignment centres the particle's centre of mass: compare after that common shift too
    _, j = cKDTree(truth).query(found)
    shift = np.median(found - truth[j], axis=0)
    m2 = match_atoms(found - shift, truth)
    truth_fcc = float(p.on_site[p.is_particle].mean())
    print(
        f"traced {len(atoms)} atoms: recall {m.recall:.4f}, precision {m.precision:.4f}, position error "
        f"{m2.rmsd_pm:.1f} pm RMSD (after the common shift of {np.linalg.norm(shift) * 100:.0f} pm that alignment cannot "
        f"see, which centres the tilt series: {m.rmsd_pm:.1f} pm with it); {rep['share_assigned_fcc']:.1%} on fcc sites (truth {truth_fcc:.1%}), a = {rep['lattice_constant']:.4f} Å"
    )
    off = ~p.on_site[p.is_particle]
    if off.any():
        traced_fcc = np.full(len(truth), -1)
        traced_fcc[m2.true_index] = atoms["fcc"].to_numpy()[m2.found_index] if "fcc" in atoms else -1
        print(f"off-site atoms: {int((traced_fcc[off] == 0).sum())} of the {int(off.sum())} placed off their sites "
              f"traced and found off (black in figures/e_fcc_layers); {int((traced_fcc[~off] == 0).sum())} on-site "
              "atoms found off")


def cmd_demo(args) -> int:
    from ._sample_data import simulate_sample
    from .core import io

    out = args.output
    _claim_demo_folder(out, args.overwrite)
    t_start = time.perf_counter()
    sim = simulate_sample(progress=progress_bar("simulate sample"))
    write_simulation(sim, out / "sample")
    p = sim.particle
    particle = p.is_particle
    support = (f" on a {int((~particle).sum())}-atom amorphous {sim.config.substrate_element} support"
               if sim.config.substrate else "")
    print(
        f"built-in sample: {int(particle.sum())} Pt atoms ({int(p.surface[particle].sum())} on the surface, "
        f"{int((~p.on_site[particle]).sum())} off their f.c.c. sites){support}, "
        f"{len(sim.tilt_series.data)} projections at ±{sim.config.tilt_range:g}°, {sim.config.pixel_size} Å pixels"
    )
    rep = run_pipeline(sim.tilt_series, out, align_first=True, enhance=not args.no_enhance, device=args.device,
                       refine=not args.no_refine, progress_factory=progress_bar, layer_maps=args.layer_maps,
                       support_normal=sim.support_normal)
    _report_network(rep)
    _report_validation(rep)
    table, _ = io.read_atoms(out / "atoms.csv")
    atoms = table[table["atom"] == 1]
    _print_demo_comparison(sim, atoms, rep)
    print(f"total {time.perf_counter() - t_start:.1f} s with {_threads_line()}; results in {out.resolve()}: tomogram.mrc, tomogram_enhanced.mrc, "
          "atoms.csv, report.json, figures/ (ground truth in sample/)")
    if args.view and _has_display():
        import napari

        from ._layers import atoms_layer, volume_layer

        viewer = napari.Viewer(title="napari-aet demo")
        viewer.open_sample("napari-aet", "pt_nanoparticle")
        for name in ("tomogram", "tomogram_enhanced"):
            if (out / f"{name}.mrc").exists():
                data, kwargs, _ = volume_layer(io.read_volume(out / f"{name}.mrc"), name=name)
                viewer.add_image(data, **kwargs)
        data, kwargs, _ = atoms_layer(atoms, name="traced atoms")
        viewer.add_points(data, **kwargs)
        viewer.dims.ndisplay = 3
        napari.run()
    elif args.view:
        _info("no display found: not opening napari (open the files above in napari later)")
    return 0


# ------------------------------------------------------------------------- main


def _add_run_options(p: argparse.ArgumentParser, output_metavar: str, output_help: str = "",
                     device_default: str = "auto", overwrite_help: str = "replace an existing output") -> None:
    """The options every writing stage shares: --device, -o/--output and --overwrite."""
    p.add_argument("--device", default=device_default, help=f"auto, cpu or cuda (default {device_default})")
    p.add_argument("-o", "--output", type=Path, required=True, metavar=output_metavar, help=output_help or None)
    if overwrite_help:
        p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    _add_threads_option(p)


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for torch, OpenMP and BLAS (default: the CPUs this process may use less those "
                   "busy with other work, measured at start; or NAPARI_AET_THREADS)")


def _add_layer_maps_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer-maps", action="store_true",
                   help="also map every layer for each displacement and strain component (nine more figures)")


def _add_trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-weights", action="store_true",
                   help="accept --weights without a checksum file (W.json with its sha256) beside them")


EXTENDED_HELP = ("the sample extends beyond the field of view (a film, a support): reconstruct a widened volume "
                 "that holds every voxel the rays cross, then keep the central box (resire/sirt)")


def _add_simulate_command(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a nanoparticle's tilt series with ground truth",
                       description="Simulate a tilt series, its ideal tomogram and the ground-truth atoms. "
                       "Writes tilts.mrc, angles.txt, truth.csv (+ truth.json), ideal.mrc and meta.json. "
                       "The defaults are the reference regime (Pt, 0.357 Å, 144³, ±65° in 6.5° steps, Poisson noise).")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the results")
    _add_simulation_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace files already in OUT_DIR")
    p.set_defaults(func=cmd_simulate)


def _add_reconstruct_command(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct a tomogram from a tilt series",
                       description="Iterative reconstruction (RESIRE by default, SIRT, or GENFIRE-style Fourier). "
                       "Writes VOL.mrc (voxel size = pixel size) and VOL.json (per-iteration R-factor, settings).")
    _add_tilt_input(p)
    from .core.reconstruct import METHODS

    p.add_argument("--method", choices=METHODS, default="resire", help="reconstruction method (default resire)")
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="iterations (default 100)")
    p.add_argument("--align", action="store_true",
                   help="align first: centre of mass, then projection matching of shifts and tilt angles")
    p.add_argument("--thickness", type=int, default=None, metavar="VOXELS", help="volume size along z (default: as wide as the projections)")
    p.add_argument("--oversampling", type=int, default=2, help="genfire: Fourier grid oversampling (default 2)")
    p.add_argument("--extended-object", action="store_true", help=EXTENDED_HELP)
    p.add_argument("--euler-projector", choices=("sheared", "splat"), default="sheared",
                   help="projector for general Euler angles: sheared (shear-warp, default, ~8x faster) or splat (direct)")
    p.add_argument("--r-free", type=float, default=0.0, metavar="FRACTION",
                   help="genfire: share of Fourier points held out for R-free (default 0: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_run_options(p, "VOL.mrc", "output tomogram")
    p.set_defaults(func=cmd_reconstruct)


def _add_run_command(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline: align, reconstruct, enhance, trace, refine, analyze",
                       description="OUT_DIR gets tomogram.mrc, tomogram_enhanced.mrc, atoms.csv (+ atoms.json), "
                       "report.json (settings, versions, per-stage time and memory, R-factors, lattice, facets) and figures/.")
    _add_tilt_input(p)
    p.add_argument("--no-align", action="store_true", help="skip alignment (the series is already aligned)")
    p.add_argument("--no-enhance", action="store_true", help="skip the U-Net")
    p.add_argument("--no-refine", action="store_true", help="skip refining atoms against the tilt series")
    p.add_argument("--extended-object", action="store_true", help=EXTENDED_HELP)
    p.add_argument("--support-normal", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="direction (sample frame) from the particle to its support: support statistics, and the "
                   "support drawn in figure (a)")
    p.add_argument("--weights", type=Path, default=None, metavar="W.pt", help="U-Net weights (default: shipped)")
    _add_trust_option(p)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in OUT_DIR from its last finished stage (same data and options)")
    p.add_argument("--r-free", type=float, default=0.1, metavar="FRACTION",
                   help="share of projections held out of reconstruction, tracing and refinement to measure R-free and "
                   "judge the network on (default 0.1, spread over the tilt range; 0: none; series of fewer than 10 "
                   "projections hold none out); the atoms are refitted on every projection at the end")
    p.add_argument("--no-probe-tail", action="store_true",
                   help="fit Gaussian atoms alone, with no probe tail (default: the probe's tail is fitted with the atoms "
                   "and, when it holds 5%% or more of the intensity, as real probes and abTEM's do, taken off the tilt "
                   "series for the refit and confidence; the refinement record says what was fitted)")
    p.add_argument("--species", nargs="+", default=[], metavar="NAME",
                   help="the atoms' species, lightest first (e.g. --species Ni Pt): light atoms hidden by heavy "
                   "neighbours are found in the residual and every atom's species is decided from the projections, "
                   "with a species_confidence column; default one species (the report says when the data holds a "
                   "second, fainter population)")
    p.add_argument("--complete", action="store_true",
                   help="after refinement, add atoms where the residual (the tilt series minus the atom model, "
                   "reconstructed) shows significant missing density, refining between rounds, until a round changes "
                   "nothing or R-free stops falling; the report counts atoms added and removed. Off by default: on abTEM particles it recovered half the missed atoms, on the measured "
                   "Ta film it lowered recall (BENCHMARKS.md)")
    _add_layer_maps_option(p)
    _add_run_options(p, "OUT_DIR", overwrite_help="replace earlier results in OUT_DIR")
    p.set_defaults(func=cmd_run)


def _add_batch_command(sub) -> None:
    p = sub.add_parser("batch", help="run the pipeline on many tilt series on a Dask cluster",
                       description="MANIFEST (CSV with a header, or YAML) lists jobs: tilts, angles, pixel_size, output, "
                       "no_align, no_enhance, no_refine, species (the atoms' species, lightest first, separated by spaces or commas, e.g. "
                       "'Ni Pt'; in a CSV write \"Ni,Pt\" in quotes or Ni Pt; chemical symbols as such, lightest first; empty: "
                       "one species). Finished jobs (report.json present) are skipped; a failing job is "
                       "reported and the others go on. Exit status 1 when any job failed.")
    p.add_argument("manifest", type=Path, metavar="MANIFEST")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_ROOT", help="folder for the jobs' folders")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--device", default="cpu", help="device inside the workers (default cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="run every job again, replacing earlier results (default: finished jobs are skipped and "
                   "folders holding other results are refused)")
    p.set_defaults(func=cmd_batch)


def _add_trace_command(sub) -> None:
    p = sub.add_parser("trace", help="trace atoms in a tomogram (and refine them against the tilt series)",
                       description="Find atoms (local maxima, sub-voxel Gaussian fit), tell atoms from noise "
                       "(k-means on integrated intensity) and, given the tilt series, refine positions against it. "
                       "Writes ATOMS.csv (x, y, z, intensity, atom, species) and ATOMS.json (settings, R-factors).")
    p.add_argument("volume", type=Path, metavar="VOL.mrc", help="tomogram (voxel size from its header)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="Å", help="voxel size in Å when the header has none")
    p.add_argument("--tilts", type=Path, default=None, metavar="TILTS",
                   help="the tilt series the tomogram came from: positions are refined against it")
    p.add_argument("--angles", type=Path, default=None, metavar="FILE", help="angles of --tilts (default: found beside it)")
    p.add_argument("--tilts-pixel-size", type=float, default=None, metavar="Å", help="pixel size of --tilts (default: its header, else the volume's voxel size)")
    p.add_argument("--angle-units", choices=("deg", "rad"), default=None,
                   help="unit of the angles file (default: as reconstruct read --tilts, else deg)")
    p.add_argument("--angle-column", default=None, metavar="NAME|N",
                   help="tilt-angle column of an angles table (default: as reconstruct read --tilts)")
    p.add_argument("--stack-axis", type=int, default=None, metavar="AXIS",
                   help="axis of --tilts that indexes projections (default: as reconstruct read it, else 0)")
    p.add_argument("--transpose-projections", action="store_const", const=True, default=None,
                   help="swap rows and columns of each projection (default: as reconstruct read --tilts)")
    p.add_argument("--angle-convention", choices=("zyz", "zyx", "tilt-axis"), default=None,
                   help="convention of the angles (default: as reconstruct read --tilts, else zyz)")
    p.add_argument("--tilt-axis-angle", type=float, default=None, metavar="DEG",
                   help="with --angle-convention tilt-axis (default: as reconstruct read --tilts, else 0)")
    p.add_argument("--min-distance", type=float, default=2.0, metavar="Å", help="minimum distance between atoms, Å (default 2.0)")
    p.add_argument("--classes", type=int, default=2, metavar="N", help="intensity classes incl. noise (default 2)")
    p.add_argument("--species", nargs="*", default=[], metavar="NAME",
                   help="names of the atom classes, faint to bright (e.g. Pt); two or more (e.g. --classes 3 --species Ni Pt) with --tilts: "
                   "light atoms are found and every atom's species decided from the projections, as run --species")
    p.add_argument("--fit", choices=("gaussian", "parabola"), default="gaussian", help="sub-voxel fit (default gaussian)")
    p.add_argument("--upsample", type=int, default=1, metavar="F", help="trace on a volume upsampled F times (default 1)")
    p.add_argument("--no-refine", action="store_true", help="skip refinement against the tilt series")
    p.add_argument("--refine-iterations", type=int, default=150, metavar="N", help="refinement iterations (default 150)")
    p.add_argument("--no-probe-tail", action="store_true",
                   help="fit Gaussian atoms alone, with no probe tail (default: the probe's tail is fitted with the atoms "
                   "and, when it holds 5%% or more of the intensity, as real probes and abTEM's do, taken off the tilt "
                   "series for the refit and confidence; the refinement record says what was fitted)")
    _add_run_options(p, "ATOMS.csv", "atoms table")
    p.set_defaults(func=cmd_trace)


def _add_analyze_command(sub) -> None:
    p = sub.add_parser("analyze", help="fcc lattice, sites, surface, facets, displacement, strain, layers",
                       description="Fit the fcc lattice to the atoms and fill the contract's analysis columns; "
                       "writes ANALYSIS.csv and ANALYSIS.json (lattice, facet statistics, layers, settings).")
    p.add_argument("atoms", type=Path, metavar="ATOMS.csv", help="atoms table (x, y, z in Å; rows with atom = 0 are kept but not analysed)")
    p.add_argument("--lattice-constant", type=float, default=None, metavar="Å", help="fix the lattice constant (default: fitted)")
    p.add_argument("--tolerance", type=float, default=0.7, metavar="Å", help="max distance to an fcc site (default 0.7)")
    p.add_argument("--min-presence", type=float, default=0.0, metavar="P",
                   help="leave out atoms whose presence (0-1, from run or trace with a tilt series) is below P from the "
                   "lattice, surface, facets and strain: their rows stay with their atom flag, analysis columns blank "
                   "(default 0: keep all)")
    p.add_argument("--lattice", choices=("auto", "cubic", "affine"), default="auto",
                   help="cubic: one lattice constant; affine: three independent base vectors (what calibration, tilt "
                   "and scan errors make of a measured lattice); auto (default): affine when a base-vector length or "
                   "angle departs from cubic by more than 4 standard errors")
    p.add_argument("--strain-reference", choices=("lattice", "cubic"), default="lattice",
                   help="strain relative to the fitted lattice (default; trust it when the calibration is uncertain) "
                   "or to the cubic lattice of the same mean constant (when the anisotropy may be real strain)")
    p.add_argument("--sigma", type=float, default=None, metavar="Å", help="strain smoothing width (default: 1.25 lattice constants)")
    p.add_argument("--layer-axis", default="001", help="crystal axis of the one-unit-cell layers (default 001)")
    p.add_argument("--strain-excludes-surface", action="store_true", help="fit strain from interior atoms only")
    p.add_argument("--grains", action="store_true",
                   help="local structure (fcc/hcp/ico/other) and grains, with a lattice per grain (twinned particles)")
    p.add_argument("--surface", choices=("coordination", "alpha"), default="coordination",
                   help="surface atoms by coordination (default) or as the vertices of the alpha shape (AET papers)")
    p.add_argument("--alpha", type=float, default=2.5, metavar="Å",
                   help="alpha-shape radius in Å (default 2.5: above f.c.c.'s largest interior Delaunay radius, a/2)")
    p.add_argument("--surface-coordination", type=int, default=12, metavar="N",
                   help="atoms with fewer fcc nearest neighbours are surface atoms (default 12)")
    p.add_argument("--grid-spacing", type=float, default=None, metavar="Å",
                   help="also write strain/displacement on a crystal-frame grid and per-layer maps (ANALYSIS_grid.npz)")
    p.add_argument("--support-normal", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="direction (sample frame) from the particle to its support, for support statistics")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="ANALYSIS.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_analyze)


def _add_generate_data_command(sub) -> None:
    p = sub.add_parser("generate-data", help="simulate training pairs for the U-Net (resumable, parallel)",
                       description="Write (reconstruction, ideal tomogram) pairs in chunks to DATA_DIR; existing chunks "
                       "made with the same config are kept (resume), data of another config is refused.")
    p.add_argument("config", type=Path, metavar="CONFIG.json", help="training config (fields of TrainingConfig)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DATA_DIR")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the chunks and config.json already in DATA_DIR and start anew")
    p.set_defaults(func=cmd_generate_data)


def _add_train_command(sub) -> None:
    p = sub.add_parser("train", help="train the missing-wedge U-Net (checkpoints, resume, torchrun for many GPUs)",
                       description="Train on DATA_DIR; RUN_DIR gets checkpoint.pt (resumed if present), log.jsonl, "
                       "weights.pt and weights.json (provenance). Start with torchrun for several processes.")
    p.add_argument("config", type=Path, metavar="CONFIG.json")
    p.add_argument("--data", type=Path, required=True, nargs="+", metavar="DATA_DIR",
                   help="folder(s) of generated pairs; several make a mixture (same 'voxels')")
    _add_run_options(p, "RUN_DIR", overwrite_help="")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time (minutes)")
    p.add_argument("--init-weights", type=Path, default=None, metavar="W.pt",
                   help="start from these weights (fine-tuning); with epochs 0 in the config, only recompute "
                   "the batch-norm statistics on DATA_DIR")
    p.set_defaults(func=cmd_train)


def _add_enhance_command(sub) -> None:
    p = sub.add_parser("enhance", help="recover the missing wedge of a tomogram with the U-Net",
                       description="Apply the trained U-Net (shipped weights by default) in overlapping tiles, then "
                       "re-project its tomogram against the measured tilt series and report the R-factor before and after. "
                       "Writes OUT.mrc and OUT.json (weights, consistency).")
    p.add_argument("volume", type=Path, metavar="VOL.mrc")
    p.add_argument("--weights", type=Path, default=None, metavar="W.pt", help="weights (default: shipped)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="Å", help="voxel size when the header has none")
    p.add_argument("--tile", type=int, default=None, metavar="VOXELS",
                   help="tile size (default: the whole volume when memory allows; smaller uses less memory)")
    p.add_argument("--flip-average", action="store_true", help="average over wedge-preserving flips (4x slower)")
    p.add_argument("--tilts", type=Path, default=None, metavar="TILTS",
                   help="the measured tilt series, to check that the network's tomogram still explains it "
                   "(default: the one named in VOL.json)")
    p.add_argument("--angles", type=Path, default=None, metavar="FILE", help="angles of --tilts (default: found beside it)")
    _add_trust_option(p)
    _add_run_options(p, "OUT.mrc")
    p.set_defaults(func=cmd_enhance)


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="run on the built-in simulated Pt sample (no data needed)",
                       description="Run the whole pipeline ('run') on the built-in simulated Pt sample, compare the "
                       "atoms with its ground truth, write everything to OUT_DIR and open it in napari when a display exists.")
    p.add_argument("-o", "--output", type=Path, default=Path("napari-aet-demo"), metavar="OUT_DIR",
                   help="results folder (default ./napari-aet-demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="use OUT_DIR although it holds files the demo did not write (an earlier demo is replaced "
                   "without it; the other files are left alone)")
    p.add_argument("--no-view", dest="view", action="store_false", help="do not open napari")
    p.add_argument("--no-refine", action="store_true", help="skip refining the atoms against the tilt series")
    p.add_argument("--no-enhance", action="store_true", help="skip the U-Net")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    _add_threads_option(p)
    _add_layer_maps_option(p)
    p.set_defaults(func=cmd_demo)


def _add_figures_command(sub) -> None:
    p = sub.add_parser("figures", help="the reference work's figures (a-g), 3D density and Fourier maps of a run",
                       description="Render the figures of a finished run again, for another layer or only some of "
                       "them: (a) the particle on its support, (b-d) facets, (e) one-unit-cell layers, (f) "
                       "displacements and (g) strain of one layer, the tomograms as 3D density maps and their 3D "
                       "Fourier intensity with the missing wedge. PNG (300 dpi) and SVG.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="OUT_DIR of 'napari-aet run' (atoms.csv, tomograms)")
    p.add_argument("--layer", type=int, default=None, help="layer index for (f) and (g) (default: the fullest layer)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="only these figures, e.g. a_particle_on_support bcd_facets f_layer_displacements")
    p.add_argument("--tilt-range", type=float, default=None, metavar="DEG",
                   help="largest tilt, to mark the missing wedge (default: from RUN_DIR/report.json)")
    _add_layer_maps_option(p)
    p.add_argument("-o", "--output", type=Path, default=None, metavar="DIR", help="default RUN_DIR/figures")
    p.add_argument("--overwrite", action="store_true", help="replace figures already in DIR")
    p.set_defaults(func=cmd_figures)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-aet",
        description="Atomic electron tomography: from a HAADF-STEM tilt series to atoms, facets and strain. "
        "Lengths in Å, angles in degrees.",
    )
    parser.add_argument("--version", action="version", version=f"napari-aet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_simulate_command(sub)
    _add_reconstruct_command(sub)
    _add_run_command(sub)
    _add_batch_command(sub)
    _add_trace_command(sub)
    _add_analyze_command(sub)
    _add_generate_data_command(sub)
    _add_train_command(sub)
    _add_enhance_command(sub)
    _add_demo_command(sub)
    _add_figures_command(sub)
    for command in sub.choices.values():  # every number option reads only plain numbers
        for action in command._actions:
            if action.type in (float, int):
                action.type = _plain_number(action.type)
    return parser


def _plain_number(kind):
    """An argparse type like ``float``/``int`` that refuses what Python reads but people do not
    write as that number: ``1_0`` (Python's 10) and other scripts' digits. NaN and Inf pass on
    to the range checks, which name the option."""
    def convert(text: str):
        if "_" in text or not text.isascii():
            example = "ASCII digits with a '.', e.g. 0.357" if kind is float else "ASCII digits, e.g. 100"
            raise argparse.ArgumentTypeError(f"{text!r} is not a plain number; write {example}")
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in its message
    return convert


def _dose(dose: float):
    """--dose: 0 is noise-free (None), a negative dose is a mistake."""
    if dose < 0:
        raise AETInputError(f"--dose {dose}: give a dose of electrons per Å² per projection, or 0 for noise-free")
    return dose if dose > 0 else None


def _check_numbers(args) -> None:
    """Every number an option took is finite, and every seed a valid one: argparse's float()
    takes 'nan' and 'inf', which no option of ours means (one line naming the option)."""
    import math

    for name, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        option = "--" + name.replace("_", "-")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise AETInputError(f"{option} {value}: give a finite number")
        if name == "seed" and isinstance(value, int) and not 0 <= value < 2**32:
            raise AETInputError(f"--seed {value}: give a whole number from 0 to 4294967295")


def _size_thread_pools(args) -> None:
    """Size the thread pools once, before any heavy work (``run`` and ``demo`` say how, and
    report.json records it)."""
    from .core.threads import configure_threads

    configure_threads(getattr(args, "threads", None))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        _check_numbers(args)
        _size_thread_pools(args)
        with tracking_inputs(), _COMMAND_LOCKS:  # inputs recorded; output folders locked until the command ends
            return int(args.func(args) or 0)
    except FolderInUse as exc:  # another writer holds the output folder: a file-system conflict
        print(f"napari-aet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_OS_ERROR
    except AETInputError as exc:
        print(f"napari-aet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print(f"napari-aet {args.command}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except MemoryError:
        print(f"napari-aet {args.command}: error: out of memory; bin the data, crop the volume or use a machine "
              "with more memory", file=sys.stderr)
        return EXIT_NO_MEMORY
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
        print(f"napari-aet {args.command}: error: {reason}{where}; check the path, its permissions and the free "
              "disk space", file=sys.stderr)
        return EXIT_OS_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

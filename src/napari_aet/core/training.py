"""Training data and training of the missing-wedge U-Net.

Data: pairs from the project's simulator and reconstructor. Input = the RESIRE
reconstruction (the algorithm and settings used at inference) of a simulated tilt series
with its missing wedge; target = the ideal tomogram. Both are divided by the input's
normalization scale (:func:`napari_aet.core.enhance.intensity_scale`). Particles, orientation,
B-factor, dose, tilt range, number of projections and angle errors are randomized, and a
share of particles is amorphous (random close packing, no lattice), so the network learns the
wedge rather than the f.c.c. lattice. Pairs are cached on disk in chunks (float16), one file
per chunk, written atomically: generation runs in parallel processes and resumes by skipping
chunks that exist.

Training: random crops with wedge-preserving flips (x, y, z), AdamW, cosine learning rate,
checkpoints each epoch (resume), validation loss and normalized error per epoch in
``log.jsonl``, bf16 autocast on CUDA, and DistributedDataParallel when started by torchrun
(the same code path; gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import AETInputError, Reporter

__all__ = ["TrainingConfig", "make_pair", "generate_dataset", "train", "load_config"]


@dataclass
class TrainingConfig:
    # data
    voxels: int = 96
    pixel_size: float = 0.357
    n_train: int = 512
    n_val: int = 32
    chunk_size: int = 16
    size_range: tuple = (1.2, 2.6)  # nm
    shapes: tuple = ("wulff", "octahedron", "spheres", "sphere")
    amorphous_fraction: float = 0.2
    offsite_range: tuple = (0.0, 0.03)
    tilt_range: tuple = (50.0, 75.0)  # ± degrees
    projections_range: tuple = (11, 31)
    dose_range: tuple = (2e4, 3e5)  # e/Å² per projection
    b_range: tuple = (3.0, 8.0)  # Å²
    angle_error: float = 0.3  # degrees, max
    recon_iterations: int = 100
    # domain randomisation (issue 12): each is off at its default, so older configs make the same data
    dose_log_uniform: bool = False  # draw the dose log-uniformly over dose_range (reaches low doses)
    probe_sigma_range: tuple = (0.0, 0.0)  # Å, Gaussian core of the probe
    probe_tail_range: tuple = (0.0, 0.0)  # share of the intensity in a broad tail (probe tails, TDS)
    probe_tail_sigma_range: tuple = (1.0, 3.0)  # Å, width of that tail
    background_range: tuple = (0.0, 0.0)  # a plane per projection, as a share of the mean signal
    read_noise_range: tuple = (0.0, 0.0)  # Gaussian detector noise, as a share of the mean signal
    gain_drift: float = 0.0  # max relative change of the total intensity from projection to projection
    shift_error_px: float = 0.0  # max residual misalignment (uniform), pixels, left uncorrected
    recon_methods: tuple = ("resire",)  # drawn per pair
    recon_iterations_range: Optional[tuple] = None  # drawn per pair instead of recon_iterations
    # model and optimisation
    unet: dict = field(default_factory=lambda: {"depth": 3, "base_width": 12, "norm": "batch", "activation": "silu"})
    crop: int = 64
    batch_size: int = 4
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_minutes: Optional[float] = None  # train for this wall time instead (learning rate annealed over it)
    bn_recalibration_batches: int = 64  # after training: batch-norm statistics averaged over this many
    # batches of training crops (0: keep the running averages from training)
    bn_recalibration_crop: Optional[int] = None  # crop size for them (default: crop); picked on validation
    bn_recalibration_batch_size: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path) -> TrainingConfig:
    """A training config from JSON (any subset of the fields).

    Parameters
    ----------
    path : path
        JSON file.

    Returns
    -------
    TrainingConfig
    """
    from .locks import note_input

    from .guards import read_side_file

    path = Path(path)
    note_input(path)
    try:
        raw = json.loads(read_side_file(path, "training config").decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AETInputError(f"cannot read training config {path} ({exc}); give a JSON file of TrainingConfig fields")
    if not isinstance(raw, dict):
        raise AETInputError(f"training config {path} holds a JSON {type(raw).__name__}, not an object of "
                            "TrainingConfig fields; give {\"epochs\": 20, ...}")
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(raw) - names
    if unknown:
        raise AETInputError(f"training config {path} has unknown fields: {', '.join(sorted(unknown))}")
    cfg = TrainingConfig(**raw)
    check_training_config(cfg, str(path))
    return cfg


def check_training_config(cfg: TrainingConfig, source: str = "training config") -> None:
    """Bounds on every size that sets memory or time, checked before any data is made."""
    from .enhance import _check_architecture
    from .validate import check_int, check_number

    check_int(cfg.voxels, f"{source}: voxels", 32, 256)
    check_int(cfg.crop, f"{source}: crop", 16, cfg.voxels)
    check_int(cfg.batch_size, f"{source}: batch_size", 1, 256)
    check_int(cfg.n_train, f"{source}: n_train", 1, 10**6)
    check_int(cfg.n_val, f"{source}: n_val", 0, 10**5)
    check_int(cfg.chunk_size, f"{source}: chunk_size", 1, 1024)
    check_int(cfg.epochs, f"{source}: epochs", 0, 10**5)
    check_int(cfg.recon_iterations, f"{source}: recon_iterations", 1, 10**4)
    check_number(cfg.lr, f"{source}: lr", 0.0, 1.0, lo_open=True)
    check_number(cfg.pixel_size, f"{source}: pixel_size", 0.1, 20.0, unit="Å")
    check_number(cfg.weight_decay, f"{source}: weight_decay", 0.0, 1.0)
    if cfg.max_minutes is not None:  # inf or <= 0 would anneal the learning rate to 0 at every step
        check_number(cfg.max_minutes, f"{source}: max_minutes", 0.0, 10**7, unit="minutes", lo_open=True)
    check_int(cfg.bn_recalibration_batches, f"{source}: bn_recalibration_batches", 0, 10**5)
    check_int(cfg.bn_recalibration_batch_size, f"{source}: bn_recalibration_batch_size", 1, 256)
    if cfg.bn_recalibration_crop is not None:
        check_int(cfg.bn_recalibration_crop, f"{source}: bn_recalibration_crop", 16, cfg.voxels)
    check_int(cfg.seed, f"{source}: seed", 0, 2**31 - 1)
    _check_ranges(cfg, source)
    _check_architecture(cfg.unet, Path(source))


# the (low, high) settings of a config and the bounds both ends must lie in
_RANGES = {"size_range": (0.2, 20.0), "offsite_range": (0.0, 1.0), "tilt_range": (1.0, 90.0),
           "projections_range": (2, 1000), "dose_range": (1.0, 1e9), "b_range": (0.0, 100.0),
           "probe_sigma_range": (0.0, 5.0), "probe_tail_range": (0.0, 1.0), "probe_tail_sigma_range": (0.0, 20.0),
           "background_range": (0.0, 10.0), "read_noise_range": (0.0, 10.0)}


def _check_ranges(cfg: TrainingConfig, source: str) -> None:
    """Every (low, high) pair: two finite numbers in bounds, low <= high; shares and errors in range."""
    from .validate import check_number

    for name, (lo, hi) in _RANGES.items():
        pair = getattr(cfg, name)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise AETInputError(f"{source}: {name} is {pair!r}; give two numbers [low, high]")
        a, b = (check_number(v, f"{source}: {name}", lo, hi) for v in pair)
        if a > b:
            raise AETInputError(f"{source}: {name} is [{a:g}, {b:g}]; give [low, high] with low <= high")
    check_number(cfg.amorphous_fraction, f"{source}: amorphous_fraction", 0.0, 1.0)
    check_number(cfg.angle_error, f"{source}: angle_error", 0.0, 10.0, unit="degrees")
    check_number(cfg.gain_drift, f"{source}: gain_drift", 0.0, 1.0)
    check_number(cfg.shift_error_px, f"{source}: shift_error_px", 0.0, 20.0, unit="pixels")
    if cfg.recon_iterations_range is not None:
        pair = cfg.recon_iterations_range
        numbers = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        if not numbers or not 1 <= pair[0] <= pair[1] <= 10**4:
            raise AETInputError(f"{source}: recon_iterations_range is {pair!r}; give [low, high] iterations, "
                                "1 <= low <= high <= 10000, or null")
    from .reconstruct import METHODS
    from .simulate import SHAPES

    for name, known in (("shapes", SHAPES), ("recon_methods", METHODS)):
        values = getattr(cfg, name)
        if isinstance(values, str) or not values or not set(values) <= set(known):
            raise AETInputError(f"{source}: {name} is {values!r}; give a list of some of {', '.join(known)}")


# ---------------------------------------------------------------------------- data


def _amorphous(radius: float, rng, min_dist: float = 2.4, density: float = 0.062) -> np.ndarray:
    """Random close-packed 'atoms' in a sphere (no lattice), about Pt's density."""
    from .simulate import thin_to_min_distance

    n_try = int(4 / 3 * math.pi * radius**3 * density * 3)
    pts = rng.uniform(-radius, radius, (n_try, 3))
    return thin_to_min_distance(pts[np.linalg.norm(pts, axis=1) <= radius], min_dist)


def _measurement_effects(tilts: np.ndarray, cfg: TrainingConfig, rng, pixel_size: float) -> np.ndarray:
    """Probe tails, a background plane and gain drift on noise-free projections (domain randomisation)."""
    from scipy import ndimage

    out = np.asarray(tilts, np.float32).copy()
    tail = rng.uniform(*cfg.probe_tail_range)
    if tail > 0:
        sigma = rng.uniform(*cfg.probe_tail_sigma_range) / pixel_size
        out = (1 - tail) * out + tail * ndimage.gaussian_filter(out, (0, sigma, sigma), mode="constant")
    level = rng.uniform(*cfg.background_range)
    if level > 0:
        a, nv, nu = out.shape
        v, u = np.mgrid[-1:1:nv * 1j, -1:1:nu * 1j]
        mean = float(out.mean())
        for k in range(a):
            gv, gu = rng.uniform(-0.5, 0.5, 2)
            out[k] += level * mean * (1 + gv * v + gu * u)
    if cfg.gain_drift > 0:
        out *= (1 + rng.uniform(-cfg.gain_drift, cfg.gain_drift, len(out))).astype(np.float32)[:, None, None]
    return out


def make_pair(cfg: TrainingConfig, seed: int, device="cpu"):
    """One (input, target) pair, both normalized by the input's scale, shape voxels³.

    Parameters
    ----------
    cfg : TrainingConfig
        The randomised families and measurement effects.
    seed : int
        Everything of the pair follows from it.
    device : str
        Where the input is reconstructed.

    Returns
    -------
    input, target : (voxels, voxels, voxels) float32 arrays
    """
    from . import geometry
    from .reconstruct import reconstruct
    from .forward import GaussianAtoms
    from .simulate import SimulationConfig, add_poisson_noise, make_particle

    rng = np.random.default_rng(seed)
    n, p = cfg.voxels, cfg.pixel_size
    b = rng.uniform(*cfg.b_range)
    size = rng.uniform(*cfg.size_range)
    if rng.random() < cfg.amorphous_fraction:
        pos = _amorphous(size * 5, rng) @ geometry.random_rotation(rng).T
    else:
        sc = SimulationConfig(shape=str(rng.choice(cfg.shapes)), size=size, b_factor=b, pixel_size=p, n_voxels=n,
                              offsite_fraction=rng.uniform(*cfg.offsite_range), seed=int(rng.integers(1 << 31)),
                              vacancy_fraction=rng.uniform(0, 0.1))
        pos = make_particle(sc, rng).positions
    ideal = GaussianAtoms(b_factor=b).density(pos, (n, n, n), p, species=["Pt"] * len(pos))
    half = rng.uniform(*cfg.tilt_range)
    n_proj = int(rng.integers(cfg.projections_range[0], cfg.projections_range[1] + 1))
    nominal = np.linspace(-half, half, n_proj)
    true = nominal + rng.uniform(-cfg.angle_error, cfg.angle_error, n_proj)
    shifts = rng.uniform(-cfg.shift_error_px, cfg.shift_error_px, (n_proj, 2)) if cfg.shift_error_px else None
    atoms = GaussianAtoms(b_factor=b, probe_sigma=rng.uniform(*cfg.probe_sigma_range))  # drawn here: seeds keep their data
    tilts = atoms.project(pos, true, (n, n), p, species=["Pt"] * len(pos), shifts=shifts)
    tilts = _measurement_effects(tilts, cfg, rng, p)
    if cfg.dose_log_uniform:
        dose = float(np.exp(rng.uniform(*np.log(cfg.dose_range))))
    else:
        dose = rng.uniform(*cfg.dose_range)
    tilts = add_poisson_noise(tilts, dose, 0.02, rng)
    read = rng.uniform(*cfg.read_noise_range)
    if read > 0:
        tilts = tilts + rng.normal(0, read * float(tilts.mean()), tilts.shape).astype(np.float32)
    method = str(rng.choice(list(cfg.recon_methods)))
    iters = cfg.recon_iterations if not cfg.recon_iterations_range else int(rng.integers(*cfg.recon_iterations_range))
    if method == "genfire":  # GENFIRE needs its grid to be at least the volume
        iters = max(iters, 50)
    rec = reconstruct(tilts, nominal, p, method=method, iterations=iters, device=device, check_memory=False).volume
    from .enhance import intensity_scale

    s = intensity_scale(rec)
    return rec / s, ideal / s


def _chunk_path(root: Path, split: str, k: int) -> Path:
    return root / f"{split}_{k:05d}.npz"


def _write_chunk(args):
    cfg_dict, root, split, k, first_seed, count = args
    cfg = TrainingConfig(**cfg_dict)
    path = _chunk_path(Path(root), split, k)
    if path.exists():
        return str(path), False
    import torch

    torch.set_num_threads(1)
    xs, ys = zip(*(make_pair(cfg, first_seed + i) for i in range(count)))
    from .io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, inputs=np.stack(xs).astype(np.float16), targets=np.stack(ys).astype(np.float16))
    return str(path), True


def _data_files(root: Path) -> list:
    """The files :func:`generate_dataset` writes in a folder: chunks (and unfinished ones), config.json."""
    return sorted([*root.glob("train_*.npz"), *root.glob("val_*.npz"), *root.glob(".train_*.npz.*"),
                   *root.glob(".val_*.npz.*"), *([root / "config.json"] if (root / "config.json").exists() else [])])


def _check_data_folder(cfg: TrainingConfig, root: Path, overwrite: bool) -> None:
    """Resume only data made with this very config: a folder holding chunks of another config (or
    chunks without one, or another file's config.json) is refused, or emptied with ``overwrite``."""
    from .locks import check_not_input

    existing = _data_files(root)
    if overwrite:
        check_not_input(existing, what="data file")  # e.g. the folder's own config.json given as CONFIG
        for f in existing:
            f.unlink()
        return
    if not existing:
        return
    side = root / "config.json"
    try:
        from .guards import read_side_file

        stored = TrainingConfig(**json.loads(read_side_file(side, "training config").decode())).to_dict()
    except (OSError, ValueError, TypeError):
        stored = None
    ours = json.loads(json.dumps(cfg.to_dict()))
    if stored is None:
        what = "chunks with no config.json" if not side.exists() else "a config.json that is no training config"
        raise AETInputError(f"{root} holds {what}; choose another folder or pass --overwrite to start it anew")
    stored = json.loads(json.dumps(stored))
    if stored != ours:
        diff = sorted(k for k in ours if ours[k] != stored.get(k))
        raise AETInputError(f"{root} holds data made with another config ({', '.join(diff[:4])} differ); use that "
                            "config to resume it, choose another folder, or pass --overwrite to start it anew")


def generate_dataset(cfg: TrainingConfig, out_dir, workers: int = 1, progress=None, cancel=None,
                     overwrite: bool = False) -> dict:
    """Write the training and validation pairs in chunks (resumable); returns a summary.

    The folder is locked while it is written (:func:`napari_aet.core.locks.output_lock`) and
    resumed only with the config its ``config.json`` records: data of another config is
    refused, or removed first with ``overwrite``.

    Parameters
    ----------
    cfg : TrainingConfig
    out_dir : path
    workers : int
        Processes.
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.
    overwrite : bool
        Remove the chunks and config already in ``out_dir`` and start anew.

    Returns
    -------
    dict
    """
    from .io import write_json
    from .locks import output_lock

    root = Path(out_dir)
    with output_lock(root, "data folder"):
        _check_data_folder(cfg, root, overwrite)
        if not (root / "config.json").exists():  # before any chunk: the chunks' provenance
            write_json(root / "config.json", cfg.to_dict())
        return _generate_locked(cfg, root, workers, progress, cancel)


def _generate_locked(cfg: TrainingConfig, root: Path, workers: int, progress, cancel) -> dict:
    jobs = []
    for split, total, base in (("train", cfg.n_train, 0), ("val", cfg.n_val, 10_000_000)):
        for k in range(math.ceil(total / cfg.chunk_size)):
            count = min(cfg.chunk_size, total - k * cfg.chunk_size)
            jobs.append((cfg.to_dict(), str(root), split, k, cfg.seed * 100_000_000 + base + k * cfg.chunk_size, count))
    rep = Reporter(len(jobs), progress, cancel)
    t0 = time.perf_counter()
    made = 0
    from .threads import usable_cpus

    workers = max(1, min(workers, len(jobs), usable_cpus()))  # no idle processes: bounded by work and cores
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for _, new in pool.imap_unordered(_write_chunk, jobs):
                made += new
                rep.step("chunk")
    else:
        for job in jobs:
            made += _write_chunk(job)[1]
            rep.step("chunk")
    return {"chunks": len(jobs), "new_chunks": made, "seconds": time.perf_counter() - t0, "workers": workers}


def _data_dirs(data_dir) -> list:
    """One folder or several (a mixture of training families), as a list of paths."""
    if isinstance(data_dir, (str, os.PathLike)):
        return [Path(data_dir)]
    dirs = [Path(d) for d in data_dir]
    if not dirs:
        raise AETInputError("no training data folder given; pass --data DATA_DIR (several for a mixture)")
    return dirs


def _load_split(root, split: str):
    """All ``split`` pairs of one data folder, or of several concatenated (same volume size)."""
    xs, ys = [], []
    for folder in _data_dirs(root):
        files = sorted(folder.glob(f"{split}_*.npz"))
        if not files:
            raise AETInputError(f"no {split} chunks in {folder}; run 'napari-aet generate-data' first")
        for f in files:
            with np.load(f) as d:
                xs.append(d["inputs"])
                ys.append(d["targets"])
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        raise AETInputError(f"the {split} pairs of {', '.join(map(str, _data_dirs(root)))} differ in size "
                            f"({sorted(shapes)}); mix only data generated at the same 'voxels'")
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------------ training


def _crops(x, y, crop: int, batch: int, rng):
    n, s = x.shape[0], x.shape[1]
    idx = rng.integers(0, n, batch)
    out_x = np.empty((batch, 1, crop, crop, crop), np.float32)
    out_y = np.empty_like(out_x)
    for b, i in enumerate(idx):
        o = [rng.integers(0, s - crop + 1) for _ in range(3)]
        sl = (i, slice(o[0], o[0] + crop), slice(o[1], o[1] + crop), slice(o[2], o[2] + crop))
        cx, cy = x[sl].astype(np.float32), y[sl].astype(np.float32)
        for ax in range(3):  # flips map the missing wedge (tilt about y) onto itself
            if rng.random() < 0.5:
                cx, cy = np.flip(cx, ax), np.flip(cy, ax)
        out_x[b, 0], out_y[b, 0] = cx, cy
    return out_x, out_y


def recalibrate_batch_norm(model, inputs: np.ndarray, targets: np.ndarray, crop: int, batches: int, batch_size: int,
                           seed: int = 0, device="cpu", progress=None, cancel=None) -> int:
    """Replace every batch-norm layer's running statistics by their plain average over
    ``batches`` forward passes of random training crops (the training crop size and
    augmentation, so the statistics describe the inputs the weights were fitted to).

    The exponential running averages kept during training lag the weights; at inference
    they set the scale of every layer. Measured on the shipped model's 24 validation pairs:
    normalized error 0.153 with the training-time statistics; after recalibration with crops
    of 64, 80, 96 voxels: 0.137, 0.125, 0.106, and with whole 128³ volumes 0.286 (the crop
    size is a setting, ``bn_recalibration_crop``, chosen on validation data).
    Returns the passes made.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    rng = np.random.default_rng(seed + 4242)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    rep = Reporter(batches, progress, cancel)
    try:
        with torch.no_grad():
            for _ in range(batches):
                bx, _ = _crops(inputs, targets, crop, batch_size, rng)
                model(torch.from_numpy(bx).to(device))
                rep.step("batch-norm statistics")
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.train(was_training)
    return batches


def train(cfg: TrainingConfig, data_dir, run_dir, device="auto", progress=None, cancel=None, log=None,
          init_weights=None) -> dict:
    """Train the U-Net on the cached pairs; checkpoints and resumes in ``run_dir``.

    ``init_weights``: start from these weights (fine-tuning) instead of a random model; with
    ``epochs: 0`` only the batch-norm statistics are recomputed on the data. ``run_dir`` is
    locked while rank 0 writes it. torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` are checked before any work. Weights are saved only
    when their validation loss is below the starting network's.

    Parameters
    ----------
    cfg : TrainingConfig
    data_dir : path or list of paths
        Pairs from :func:`generate_dataset`.
    run_dir : path
        Checkpoints, ``log.jsonl``, ``weights.pt`` with its checksum.
    device : {"auto", "cpu", "cuda"}
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.
    log : callable, optional
        Called with each epoch's record.
    init_weights : path, optional

    Returns
    -------
    dict
        Epochs done, history, seconds, parameters, device, data, sha256 (rank 0), rank,
        the starting network's validation.

    Raises
    ------
    AETInputError
        Bad settings or environment, or a run that did not lower the validation loss.
    """
    import contextlib

    from .locks import check_not_input, note_input, output_lock

    world, rank, local_rank = _distributed_env()
    if cfg.epochs == 0 and init_weights is None:
        raise AETInputError("epochs 0 with no initial weights trains nothing and would save a random network; give "
                            "epochs > 0, or --init-weights to only recompute the batch-norm statistics")
    run_dir = Path(run_dir)
    if init_weights is not None:  # inputs (with their checksum file) that no output may replace
        note_input(init_weights)
        note_input(Path(init_weights).with_suffix(".json"))
    check_not_input([run_dir / n for n in ("weights.pt", "weights.json", "checkpoint.pt", "log.jsonl")])
    with output_lock(run_dir, "run folder") if rank == 0 else contextlib.nullcontext():  # rank 0 writes it
        return _train_locked(cfg, data_dir, run_dir, device, progress, cancel, log, init_weights, world, rank,
                             local_rank)


# Long: one training loop (setup, resume, epochs, validation, checkpoints) reads best in one piece
def _train_locked(cfg, data_dir, run_dir: Path, device, progress, cancel, log, init_weights, world: int, rank: int,
                  local_rank: int) -> dict:
    """:func:`train` once the run folder is locked."""
    import torch

    dev = _distributed_setup(device, world, local_rank)
    torch.manual_seed(cfg.seed + rank)
    rng = np.random.default_rng(cfg.seed * 1000 + rank)
    xtr, ytr = _load_split(data_dir, "train")
    xva, yva = _load_split(data_dir, "val")
    if xtr.shape[1] < cfg.crop:
        raise AETInputError(f"crop {cfg.crop} is larger than the training volumes ({xtr.shape[1]}); lower 'crop'")
    model = _initial_model(cfg, init_weights, dev)
    if cfg.crop % model.multiple:
        raise AETInputError(f"crop {cfg.crop} must be a multiple of {model.multiple} for depth {model.config.depth}")
    use_amp = dev.type == "cuda"
    start_val = _validate(model, xva, yva, dev, use_amp)  # what training has to beat
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(xtr) // (cfg.batch_size * world))
    total_steps = cfg.epochs * steps_per_epoch
    ckpt = run_dir / "checkpoint.pt"
    start_epoch, step = 0, 0
    if ckpt.exists():
        try:
            state = torch.load(ckpt, map_location=dev, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, step = int(state["epoch"]), int(state["step"])
        except Exception as exc:  # damaged, or another network's: never resumed into this one
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
            raise AETInputError(f"{ckpt} cannot be resumed with this config ({first}); give another RUN_DIR, or "
                                "remove the checkpoint to start anew")
        rng = np.random.default_rng(cfg.seed * 1000 + rank + 7919 * start_epoch)
    rep = Reporter(max(1, (cfg.epochs - start_epoch) * steps_per_epoch), progress if rank == 0 else None, cancel)
    t0 = time.perf_counter()
    history = []
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs):
        losses = []
        for _ in range(steps_per_epoch):
            frac = (time.perf_counter() - t0) / (60 * cfg.max_minutes) if cfg.max_minutes else step / total_steps
            losses.append(_train_step(net, opt, _crops(xtr, ytr, cfg.crop, cfg.batch_size, rng), dev, use_amp,
                                      _learning_rate(cfg.lr, frac), epoch))
            step += 1
            rep.step(f"epoch {epoch + 1} loss {losses[-1]:.4g}")
        val = _validate(model, xva, yva, dev, use_amp)
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **val,
                 "seconds": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]}
        history.append(entry)
        if rank == 0:
            _end_epoch(run_dir, model, opt, entry, step, log)
        if cfg.max_minutes and (time.perf_counter() - t0) / 60 >= cfg.max_minutes:
            break
    result = {"epochs_done": epoch + 1, "history": history, "seconds": time.perf_counter() - t0,
              "n_parameters": model.n_parameters(), "device": str(dev), "world_size": world, "rank": rank,
              "n_train_pairs": int(len(xtr)), "n_val_pairs": int(len(xva)),
              "data": [str(d) for d in _data_dirs(data_dir)], "initial_validation": start_val}
    _finish_training(model, cfg, xtr, ytr, xva, yva, dev, use_amp, result, history, run_dir, t0, epoch, log,
                     progress, cancel, world, rank)
    return result


def _finish_training(model, cfg, xtr, ytr, xva, yva, dev, use_amp, result, history, run_dir, t0, epoch, log,
                     progress, cancel, world, rank) -> None:
    """Rank 0 recalibrates batch norm and saves the weights, only when they validate better than
    the network training started from; a run that did not improve saves nothing and says so."""
    import torch.distributed as dist

    improved, start, end = True, result["initial_validation"]["val_loss"], None
    if rank == 0:
        if cfg.bn_recalibration_batches > 0:
            _recalibrate_if_better(model, cfg, xtr, ytr, xva, yva, dev, use_amp, result, history, run_dir, t0, epoch,
                                   log, progress, cancel)
        end = (history[-1] if history else _validate(model, xva, yva, dev, use_amp))["val_loss"]
        # epochs 0 (fine-tuning's batch-norm pass only) keeps the given weights when that did not help
        improved = cfg.epochs == 0 or (np.isfinite(end) and end < start)
        if improved:
            result["sha256"] = _save_trained(model, cfg, xtr, history, run_dir)
    if world > 1 and dist.is_initialized():
        dist.barrier()
    if not improved:
        raise AETInputError(f"training did not lower the validation loss ({start:.4g} at the start, {end:.4g} at the "
                            f"end of epoch {epoch + 1}): no weights saved; train longer (epochs, max_minutes), check "
                            "lr and the data in the log")


def _end_epoch(run_dir: Path, model, opt, entry: dict, step: int, log) -> None:
    """Log the epoch and checkpoint it atomically (``--resume`` starts from here)."""
    import torch

    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    tmp = run_dir / "checkpoint.pt.tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": entry["epoch"], "step": step}, tmp)
    os.replace(tmp, run_dir / "checkpoint.pt")
    if log:
        log(entry)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw.strip()):
        raise AETInputError(f"environment variable {name}={raw!r} is not a whole number >= 0; unset it, or start "
                            "the training with torchrun, which sets it")
    return int(raw)


def _distributed_env() -> tuple:
    """(world size, rank, local rank) from torchrun's variables, checked: (1, 0, 0) for one process."""
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1:
        raise AETInputError("WORLD_SIZE=0: no process would train; unset it or start with torchrun")
    if rank >= world:
        hint = "without torchrun (WORLD_SIZE unset)" if "WORLD_SIZE" not in os.environ else f"with WORLD_SIZE={world}"
        raise AETInputError(f"RANK={rank} {hint}: no process would be rank 0 and save the weights; unset RANK for "
                            "one process, or start with torchrun")
    if local >= world:
        raise AETInputError(f"LOCAL_RANK={local} but WORLD_SIZE={world}; unset LOCAL_RANK, or start with torchrun")
    if world > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise AETInputError(f"WORLD_SIZE={world} but {' and '.join(missing)} unset: the processes cannot meet; "
                                "start with torchrun, which sets them, or unset WORLD_SIZE")
    return world, rank, local


def _distributed_setup(device, world: int, local_rank: int):
    """The device of this process, with the process group started when several train together."""
    import torch
    import torch.distributed as dist

    from .projector import resolve_device

    dev = resolve_device(device)
    if world > 1:
        if dev.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise AETInputError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPUs; "
                                    "start at most one process per GPU (torchrun --nproc_per_node)")
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def _initial_model(cfg, init_weights, dev):
    """A fresh U-Net of the configured architecture, or the weights to fine-tune (same architecture)."""
    from .unet import UNet3D, UNetConfig

    if init_weights is None:
        return UNet3D(UNetConfig(**cfg.unet)).to(dev)
    from .enhance import load_weights

    model, init_meta = load_weights(init_weights, device=dev)
    if init_meta.get("config", {}).get("unet", cfg.unet) != cfg.unet:
        raise AETInputError(f"{init_weights} has architecture {init_meta['config']['unet']}, the config asks for "
                            f"{cfg.unet}; use the same 'unet' settings to fine-tune")
    return model


def _learning_rate(lr: float, frac: float) -> float:
    """5% warm-up, then cosine to zero over the run (``frac``: by steps, or by wall time)."""
    frac = min(max(frac, 0.0), 1.0)
    return lr * (frac / 0.05 if frac < 0.05 else 0.5 * (1 + math.cos(math.pi * (frac - 0.05) / 0.95)))


def _train_step(net, opt, batch, dev, use_amp: bool, lr: float, epoch: int) -> float:
    """One optimiser step on a batch of (input, target) crops; returns the loss."""
    import torch

    net.train()
    bx, by = (torch.from_numpy(a).to(dev) for a in batch)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
        loss = torch.nn.functional.mse_loss(net(bx).float(), by)
    if not torch.isfinite(loss):
        raise RuntimeError(f"training loss became {float(loss)} at epoch {epoch + 1}; lower lr")
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def _recalibrate_if_better(model, cfg, xtr, ytr, xva, yva, dev, use_amp, result, history, run_dir, t0, epoch,
                           log, progress, cancel) -> None:
    """Recompute batch-norm statistics in inference mode and keep them only if they validate
    better (they made the error worse than the input twice: issue 5's whole-volume run and
    issue 12's fine-tunes)."""
    before = _validate(model, xva, yva, dev, use_amp)
    training_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    crop = min(cfg.bn_recalibration_crop or cfg.crop, xtr.shape[1] // model.multiple * model.multiple)
    recalibrate_batch_norm(model, xtr, ytr, crop, cfg.bn_recalibration_batches, cfg.bn_recalibration_batch_size,
                           seed=cfg.seed, device=dev, progress=progress, cancel=cancel)
    after = _validate(model, xva, yva, dev, use_amp)
    kept = "recalibrated" if after["val_error_output"] <= before["val_error_output"] else "training"
    if kept == "training":
        model.load_state_dict(training_state)
    result["bn_recalibration"] = {"before": before, "after": after, "kept": kept}
    history.append({"epoch": epoch + 1, "after_bn_recalibration": True, "statistics_kept": kept,
                    **(after if kept == "recalibrated" else before), "seconds": time.perf_counter() - t0})
    with open(run_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(history[-1]) + "\n")
    if log:
        log(history[-1])


def _save_trained(model, cfg, xtr, history, run_dir) -> str:
    """weights.pt with its provenance, and its checksum beside it at once (the command line
    adds the rest of the provenance); returns the sha256."""
    from .enhance import save_weights
    from .io import write_json

    fill = [float((xtr[i].astype(np.float32) > 0.1).mean()) for i in range(min(len(xtr), 64))]
    meta = {"training_pixel_size": cfg.pixel_size, "training_fill_fraction": [min(fill), max(fill)],
            "config": cfg.to_dict(), "validation": history[-1] if history else None}
    digest = save_weights(run_dir / "weights.pt", model, meta)
    write_json(run_dir / "weights.json", {"sha256": digest})
    return digest


def _validate(model, xva, yva, dev, use_amp) -> dict:
    import torch

    model.eval()
    mse, err_in, err_out = [], [], []
    with torch.no_grad():
        for i in range(len(xva)):
            x = torch.from_numpy(xva[i].astype(np.float32))[None, None].to(dev)
            y = yva[i].astype(np.float32)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                p = model(x).float()[0, 0].cpu().numpy()
            mse.append(float(((p - y) ** 2).mean()))
            nrm = max(float(np.linalg.norm(y)), 1e-12)
            err_in.append(float(np.linalg.norm(xva[i].astype(np.float32) - y)) / nrm)
            err_out.append(float(np.linalg.norm(p - y)) / nrm)
    return {"val_loss": float(np.mean(mse)), "val_error_input": float(np.mean(err_in)),
            "val_error_output": float(np.mean(err_out))}

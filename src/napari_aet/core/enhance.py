"""Missing-wedge recovery with a trained 3D U-Net: weights I/O, normalization, tiled inference.

Intensity normalization (the same in training and inference): a tomogram is divided by its
99.9th percentile before the network and multiplied back after it. The percentile scales with
the data, so an input multiplied by any factor gives the same normalized input and an output
scaled by the same factor: the network never sees the arbitrary intensity scale of a measured
tomogram (the reference's code needs a hand-tuned factor per dataset).

Inference runs on overlapping tiles blended with a smooth (Hann-tapered) weight, so memory is
bounded by the tile size and tiles leave no seams; optionally the prediction is averaged over
flips that map the missing wedge onto itself (any flip of x, y or z for tilts about y).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import AETInputError, Reporter

__all__ = [
    "enhance_tomogram",
    "projection_noise_ratio",
    "NOISE_RATIO_LIMIT",
    "NORMALIZATION_PERCENTILE",
    "intensity_scale",
    "load_weights",
    "save_weights",
    "default_weights_path",
    "enhance_volume",
    "tile_starts",
    "reprojection_r_factor",
    "data_consistency",
]

NORMALIZATION_PERCENTILE = 99.9
TILE_LIMIT = 512  # voxels per tile edge: memory grows with its cube
# Largest rise of the re-projection R-factor the network may cause (see data_consistency).
# Chosen on own-simulator validation particles (benchmarks/bench_consistency.py, seeds 701-702,
# ±50°/11 and ±65°/21 at 2e4, 1e3 and 5e2 e/Å²): the shipped network raised R by 0.08-0.13 in
# all 12 cases; a damaged one (last layer x4) by 0.96-1.24 while losing recall.
CONSISTENCY_TOLERANCE = 0.3
# The noisiest tilt series the network has been validated on, as noise over bright signal
# (:func:`projection_noise_ratio`). Chosen on own-simulator validation particles (seeds 701-702,
# the ones the tolerance above came from), never on a test family: at 500 e/Å², the lowest dose
# where the shipped network still raised recall (±50°/11: 0.719 -> 0.790), the ratio is
# 0.199-0.220; the limit is the larger plus 10%. Noisier data lie outside what the network is
# known to help with: ``run`` traces the plain reconstruction and says to denoise the
# projections (``--denoise bm3d``) first.
NOISE_RATIO_LIMIT = 0.24
OUTPUT_LIMIT = 100.0  # largest |output| / input scale a working network gives (trained outputs stay near 0-2)
WEIGHTS_NAME = "unet_pt.pt"


def intensity_scale(volume: np.ndarray) -> float:
    """The normalization scale of a tomogram: its 99.9th percentile (positive).

    Parameters
    ----------
    volume : array

    Returns
    -------
    float
    """
    s = float(np.percentile(np.asarray(volume, np.float32), NORMALIZATION_PERCENTILE))
    if not np.isfinite(s) or s <= 0:
        s = float(np.abs(volume).max())
    if s <= 0:
        raise AETInputError("volume is zero everywhere: nothing to enhance; check the reconstruction")
    return s


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path, model, metadata: dict) -> str:
    """Save a plain state dict with the architecture and metadata; return its sha256.

    Parameters
    ----------
    path : path
        ``.pt``, written atomically.
    model : UNet3D
    metadata : dict
        Provenance.

    Returns
    -------
    str
        The file's sha256.
    """
    import torch

    from .io import atomic_path

    payload = {
        "format": "napari-aet-unet-1",
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": json.dumps(metadata),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return sha256(path)


def default_weights_path() -> Path:
    """The shipped weights in ``resources/``.

    Returns
    -------
    Path
    """
    return Path(str(resources.files("napari_aet").joinpath("resources", WEIGHTS_NAME)))


# Architectures the project can build on any machine: a deeper or wider network in a weights
# file is refused before it is built (a hostile "depth: 999" would exhaust memory).
ARCHITECTURE_LIMITS = {"depth": (1, 6), "base_width": (1, 64)}


def _check_architecture(config, path: Path):
    from .unet import UNetConfig

    if not isinstance(config, dict):
        raise AETInputError(f"weights {path} declare no architecture; use weights from 'napari-aet train'")
    known = set(UNetConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise AETInputError(f"weights {path} declare unknown architecture fields ({', '.join(unknown)}); "
                            "use weights from 'napari-aet train'")
    for name, (lo, hi) in ARCHITECTURE_LIMITS.items():
        v = config.get(name, getattr(UNetConfig, name))
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise AETInputError(f"weights {path} declare {name} = {v!r}, outside {lo}-{hi}; refused "
                                "(use weights from 'napari-aet train')")
    for name, allowed in (("norm", ("batch", "group", "instance", "none")), ("activation", ("silu", "relu", "leaky_relu"))):
        v = config.get(name, getattr(UNetConfig, name))
        if v not in allowed:
            raise AETInputError(f"weights {path} declare {name} = {v!r}; use one of {', '.join(allowed)}")
    return UNetConfig(**config)


def load_weights(path=None, device="cpu", trust: bool = False):
    """Load a U-Net from a weights file (plain state dict, ``weights_only=True``).

    The provenance JSON beside the file (same name, ``.json``) must hold the file's
    ``sha256``, and the file must match it: a damaged or replaced file is refused. The
    architecture is bounded (:data:`ARCHITECTURE_LIMITS`) and every tensor must be finite.

    Parameters
    ----------
    path : path, optional
        Weights file; default the shipped ``resources/unet_pt.pt``.
    device : str or torch.device
    trust : bool
        Accept a file without the provenance JSON (``--trust-weights``); a mismatch is
        refused even then.

    Returns
    -------
    model : UNet3D
        In evaluation mode on ``device``.
    metadata : dict
        The provenance (training data, command, validation figures), ``sha256`` and
        ``weights_path``.
    """
    import pickle

    import torch

    from .unet import UNet3D

    path = Path(path) if path is not None else default_weights_path()
    from .locks import note_input

    note_input(path)  # the weights and their checksum file are inputs: no output may replace them
    note_input(path.with_suffix(".json"))
    if not path.exists():
        raise AETInputError(f"weights file {path} does not exist; train with 'napari-aet train' or give --weights")
    if path.is_dir() or path.stat().st_size == 0:
        raise AETInputError(f"weights file {path} is empty or a folder; give the weights.pt that 'napari-aet train' wrote")
    side = path.with_suffix(".json")
    digest = sha256(path)
    from .io import read_sidecar

    expected = read_sidecar(side, "weights").get("sha256") if side.exists() else None
    if expected is None and not trust:
        raise AETInputError(f"weights {path} have no checksum ({side.name} with 'sha256' beside them), so damage "
                            "cannot be ruled out; keep the weights.json that 'napari-aet train' wrote, or pass --trust-weights")
    if expected is not None and digest != expected:
        raise AETInputError(f"weights file {path} does not match the checksum in {side.name}: corrupt or replaced; re-download or retrain")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AETInputError(f"{path} is not a plain state dict ({str(exc).splitlines()[0][:80]}); refused for safety")
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
        raise AETInputError(f"cannot read weights {path} (corrupt: {first}); retrain or re-download")
    if not isinstance(payload, dict) or payload.get("format") != "napari-aet-unet-1":
        raise AETInputError(f"{path} is not a napari-aet U-Net weights file; give one written by 'napari-aet train'")
    cfg = _check_architecture(payload.get("config"), path)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AETInputError(f"weights {path} hold no tensors; use weights from 'napari-aet train'")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise AETInputError(f"weights {path} hold NaN/Inf in {name}: the file is damaged; re-download or retrain")
        if tensor.is_floating_point() and tensor.numel() and float(tensor.abs().max()) > 1e6:
            raise AETInputError(f"weights {path} hold values up to {float(tensor.abs().max()):.3g} in {name}, "
                                "which training never gives: the file is damaged; re-download or retrain")
    try:
        model = UNet3D(cfg)
        model.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:120]
        raise AETInputError(f"weights {path} do not fit the U-Net architecture they declare ({first}); use weights from 'napari-aet train'")
    try:
        meta = json.loads(payload.get("metadata") or "{}")
    except (TypeError, json.JSONDecodeError):
        raise AETInputError(f"weights {path} carry unreadable metadata; use weights from 'napari-aet train'")
    if not isinstance(meta, dict):
        meta = {}
    meta.update(sha256=digest, weights_path=str(path), checksum_verified=expected is not None)
    return model.to(device).eval(), meta



def tile_starts(n: int, tile: int, overlap: int) -> list:
    """Start indices of tiles of length ``tile`` covering ``n`` with at least ``overlap``.

    Parameters
    ----------
    n, tile, overlap : int
        Voxels.

    Returns
    -------
    list of int
    """
    if n <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((n - tile) / step) + 1
    return [round(k * (n - tile) / (count - 1)) for k in range(count)]


def _taper(tile: int, overlap: int) -> np.ndarray:
    w = np.ones(tile, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return w


# bytes per voxel of a tile at inference, per unit of base width (measured: a 144³ tile of the
# shipped width-12 network raised the process's peak by 0.7 GB, ~230 B/voxel; kept with margin)
TILE_BYTES_PER_VOXEL_PER_WIDTH = 30


def auto_tile(shape, model, device="cpu", share: float = 0.4) -> int:
    """The tile edge for ``enhance_volume``: the volume's largest edge (one tile), or the largest
    multiple of the network's size step whose activations fit in ``share`` of the free memory
    (RAM on the CPU, free GPU memory on CUDA), at least 64 and at most ``TILE_LIMIT``."""
    from .validate import available_memory

    m = model.multiple
    edge = int(-(-max(shape) // m) * m)
    per_voxel = TILE_BYTES_PER_VOXEL_PER_WIDTH * int(getattr(model.config, "base_width", 12))
    try:
        budget = share * float(available_memory(device))
    except Exception:  # unknown: the old fixed tile
        return min(edge, 144)
    fit = int((budget / per_voxel) ** (1 / 3)) // m * m
    return max(min(edge, fit, TILE_LIMIT), min(edge, 64))


def enhance_volume(
    volume: np.ndarray,
    model,
    pixel_size: Optional[float] = None,
    training_pixel_size: Optional[float] = None,
    tile: Optional[int] = None,
    overlap: int = 24,
    flip_average: bool = False,
    device="cpu",
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Apply the network to a tomogram; same shape, frame and intensity scale.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        The tomogram.
    model : UNet3D
        From :func:`load_weights`.
    pixel_size, training_pixel_size : float, optional
        Voxel sizes (Å) of the tomogram and of the training data; a difference over 2% is
        resampled away (cubic spline) and back.
    tile : int, optional
        Voxels per tile edge; default :func:`auto_tile` (the whole volume when memory
        allows). A smaller tile bounds memory.
    overlap : int
        Voxels shared by neighbouring tiles, blended with a taper (no seams).
    flip_average : bool
        Average the network over the four flips of z and x, which keep a wedge about y in
        place (slower, smoother).
    device : str or torch.device
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.

    Returns
    -------
    (nz, ny, nx) float32 array
    """
    from scipy import ndimage

    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise AETInputError(f"volume has shape {vol.shape}; the network needs a 3D (z, y, x) tomogram")
    if not np.all(np.isfinite(vol)):
        raise AETInputError("volume has NaN/Inf values; check the reconstruction")
    zoom = 1.0
    if pixel_size and training_pixel_size and abs(pixel_size / training_pixel_size - 1) > 0.02:
        zoom = pixel_size / training_pixel_size
        if not 0.25 <= zoom <= 4:
            raise AETInputError(
                f"voxel size {pixel_size:g} Å is too far from the training voxel size {training_pixel_size:g} Å "
                "to resample; reconstruct at a voxel size near the training one"
            )
        vol = ndimage.zoom(vol, zoom, order=3)
    from .validate import check_int

    m = model.multiple
    if tile is None:
        tile = auto_tile(vol.shape, model, device)
    check_int(tile, "tile size", max(32, 4 * m), TILE_LIMIT,
              hint=" voxels (smaller tiles are only slower and larger ones may not fit in memory)")
    scale = intensity_scale(vol)
    x = vol / scale
    tile = max(m, (min(tile, max(x.shape) + m) // m) * m)
    overlap = min(overlap, tile // 2)
    pad = [(0, max(0, tile - s)) for s in x.shape]
    xp = np.pad(x, pad, mode="constant")
    out = np.zeros_like(xp)
    weight = np.zeros_like(xp)
    starts = [tile_starts(s, tile, overlap) for s in xp.shape]
    tz, ty, tx = (_taper(tile, overlap if len(st) > 1 else 0) for st in starts)
    w3 = tz[:, None, None] * ty[None, :, None] * tx[None, None, :]
    flips = [(), (2,), (4,), (2, 4)] if flip_average else [()]
    rep = Reporter(len(starts[0]) * len(starts[1]) * len(starts[2]), progress, cancel)
    model = model.to(device).eval()
    for z0 in starts[0]:
        for y0 in starts[1]:
            for x0 in starts[2]:
                sl = (slice(z0, z0 + tile), slice(y0, y0 + tile), slice(x0, x0 + tile))
                out[sl] += _predict_tile(model, xp[sl], flips, device) * w3
                weight[sl] += w3
                rep.step("tile")
    res = (out / np.maximum(weight, 1e-12))[: x.shape[0], : x.shape[1], : x.shape[2]]
    # the network works on the normalised scale, where the input's bright atoms are near 1
    biggest = float(np.abs(res).max()) if np.all(np.isfinite(res)) else float("inf")
    if not biggest <= OUTPUT_LIMIT:
        raise AETInputError(
            f"the network's output reaches {biggest:.3g} times the input's bright level (NaN/Inf or damaged "
            "weights); nothing was written: check the weights' checksum or run without the network")
    res = res * scale
    if zoom != 1.0:
        res = ndimage.zoom(res, [a / b for a, b in zip(volume.shape, res.shape)], order=3)
    return res.astype(np.float32)


def _predict_tile(model, tile: np.ndarray, flips, device) -> np.ndarray:
    """The network on one tile, averaged over ``flips`` (each undone on the output)."""
    import torch

    with torch.no_grad():
        t = torch.as_tensor(tile, device=device)[None, None]
        pred = torch.zeros_like(t)
        for f in flips:
            y = model(torch.flip(t, f) if f else t)
            pred += torch.flip(y, f) if f else y
        return (pred / len(flips))[0, 0].float().cpu().numpy()


def enhance_tomogram(volume: np.ndarray, pixel_size: Optional[float] = None, weights=None, *, network=None,
                     device="auto", trust: bool = False, tile: Optional[int] = None, flip_average: bool = False,
                     progress=None, cancel=None) -> tuple:
    """Recover the missing wedge of a tomogram: the one path ``run``, ``enhance`` and the
    workbench share.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        The tomogram, any intensity scale.
    pixel_size : float, optional
        Its voxel size in Å (resampled to the training voxel size when they differ by > 2%).
    weights : path, optional
        U-Net weights with their checksum file; default the shipped ones.
    network : (model, metadata), optional
        Weights already loaded with :func:`load_weights` (``run`` checks them before any work).
    device : "auto", "cpu" or "cuda".
    trust : accept ``weights`` without a checksum file.
    tile, flip_average, progress, cancel : as :func:`enhance_volume`.

    Returns
    -------
    enhanced : (nz, ny, nx) float32 array
        Same shape, frame and intensity scale as ``volume``.
    info : dict
        ``warning`` (the input's intensity range is unlike the training data's, or None),
        ``weights_sha256``, ``weights`` (path) and ``device``.
    """
    from .projector import resolve_device
    from .validate import check_finite_output

    dev = resolve_device(device)
    model, meta = network if network is not None else load_weights(weights, device=dev, trust=trust)
    warning = check_intensity_range(volume, meta)
    out = enhance_volume(volume, model, pixel_size, meta.get("training_pixel_size"), tile=tile,
                         flip_average=flip_average, device=dev, progress=progress, cancel=cancel)
    check_finite_output(out, "the enhanced tomogram", "the U-Net weights may be damaged; run without the network")
    return out, {"warning": warning, "weights_sha256": meta.get("sha256"), "weights": meta.get("weights_path"),
                 "device": str(dev)}


def check_intensity_range(volume: np.ndarray, metadata: dict) -> Optional[str]:
    """A warning when the normalized volume is far from what the network was trained on."""
    stats = (metadata or {}).get("training_fill_fraction")
    if not stats:
        return None
    x = np.asarray(volume, np.float32) / intensity_scale(volume)
    fill = float((x > 0.1).mean())
    lo, hi = stats
    if fill < lo / 10 or fill > hi * 10:
        msg = (f"this volume's normalized intensity is far outside the training range (bright fraction {fill:.3g}, "
               f"training {lo:.3g}-{hi:.3g}); the network's output may be unreliable")
        warnings.warn(msg, stacklevel=2)
        return msg
    return None


def reprojection_r_factor(volume: np.ndarray, tilts: np.ndarray, angles, device="cpu") -> float:
    """R-factor ``sum|b - s A x| / sum|b|`` of a tomogram ``x`` re-projected against the measured
    tilt series ``b``, with the least-squares scale ``s`` (the network keeps the intensity scale
    only up to its normalisation, and a scale says nothing about consistency).

    Parameters
    ----------
    volume : (nz, ny, nx) array
    tilts : (n_angles, nv, nu) array
        The measured (aligned) tilt series.
    angles : (n_angles,) or (n_angles, 3) array
        Degrees.
    device : str

    Returns
    -------
    float
    """
    return _reprojection_r_factors([volume], tilts, angles, device)[0]


def _reprojection_r_factors(volumes, tilts: np.ndarray, angles, device="cpu") -> list:
    """:func:`reprojection_r_factor` of several tomograms of one shape, with one projector."""
    import torch

    from .projector import Projector, resolve_device

    dev = resolve_device(device)
    b = torch.as_tensor(np.asarray(tilts, np.float32), device=dev)
    proj = Projector(np.shape(volumes[0]), angles, b.shape[1:], device=dev)
    out = []
    for volume in volumes:
        ax = proj.forward(np.asarray(volume, np.float32))
        scale = float((ax * b).sum() / (ax * ax).sum().clamp_min(1e-30))
        out.append(float((b - scale * ax).abs().sum() / b.abs().sum().clamp_min(1e-30)))
    return out


def projection_noise_ratio(tilts: np.ndarray, pixel_size: Optional[float] = None,
                           training_pixel_size: Optional[float] = None) -> float:
    """How noisy a tilt series is for the network: the median over projections of the noise
    standard deviation (wavelet median absolute deviation) over the bright level, the 99.9th
    percentile of the projections smoothed by one pixel (unsmoothed, the brightest pixels of
    very noisy data are noise, and the ratio would stop growing). The projections are resampled
    to the training pixel size first (finer pixels carry more noise each).

    Parameters
    ----------
    tilts : (n_angles, nv, nu) array
    pixel_size, training_pixel_size : float, optional
        Å; resampled when both are given and differ by more than 2%.

    Returns
    -------
    float
        Scale-free; compare with :data:`NOISE_RATIO_LIMIT`.
    """
    from scipy import ndimage
    from skimage.restoration import estimate_sigma

    t = np.asarray(tilts, np.float32)
    if pixel_size and training_pixel_size and abs(pixel_size / training_pixel_size - 1) > 0.02:
        zoom = pixel_size / training_pixel_size
        t = np.stack([ndimage.zoom(p, zoom, order=1) for p in t])
    bright = float(np.percentile(np.stack([ndimage.gaussian_filter(p, 1.0) for p in t]), 99.9))
    if not bright > 0:
        return float("inf")
    return float(np.median([estimate_sigma(p) for p in t]) / bright)


def data_consistency(reconstruction: np.ndarray, enhanced: np.ndarray, tilts: np.ndarray, angles,
                     tolerance: float = CONSISTENCY_TOLERANCE, device="cpu", pixel_size: Optional[float] = None,
                     training_pixel_size: Optional[float] = None,
                     noise_limit: Optional[float] = NOISE_RATIO_LIMIT) -> dict:
    """Whether the network's tomogram still explains the measured tilt series.

    The reconstruction fits the measurement as well as the method can; the network adds what
    the measurement did not constrain (the missing wedge) and sharpens atoms, so its
    re-projection R-factor is somewhat higher. It is accepted while ``R_enhanced -
    R_reconstruction <= tolerance``: the network may not change more than that share of the
    measured intensity. A ratio would not do: at high dose R is small and any sharpening
    doubles it, at low dose noise dominates both. Beyond the tolerance the network changed
    what was measured (invented or erased atoms), and the plain reconstruction is the one to
    trust. This catches gross failures; a network that moves a few atoms stays within it.

    Nor is the network used on a tilt series noisier than any it was validated on
    (:func:`projection_noise_ratio` above ``noise_limit``; None: not checked): there it can
    drop atoms while the R-factor still looks fine.

    Parameters
    ----------
    reconstruction, enhanced : (nz, ny, nx) arrays
    tilts : (n_angles, nv, nu) array
        The measured (aligned) tilt series.
    angles : (n_angles,) or (n_angles, 3) array
        Degrees.
    tolerance : float
        Largest rise of R the network may cause.
    device : str
    pixel_size, training_pixel_size : float, optional
        Å, for the noise ratio.
    noise_limit : float, optional

    Returns
    -------
    dict
        ``r_factor_reconstruction``, ``r_factor_enhanced``, ``tolerance``, ``noise_ratio``,
        ``noise_limit``, ``reason`` (why the network was refused, or None) and
        ``network_accepted``.
    """
    r_rec, r_enh = _reprojection_r_factors([reconstruction, enhanced], tilts, angles, device)
    noise = projection_noise_ratio(tilts, pixel_size, training_pixel_size) if noise_limit is not None else None
    reason = None
    if r_enh - r_rec > tolerance:
        reason = (f"the network's tomogram explains the tilt series worse (R {r_enh:.4f} against {r_rec:.4f}, "
                  f"a rise over {tolerance:g})")
    elif noise is not None and noise > noise_limit:
        reason = (f"the tilt series is noisier (noise/signal {noise:.3f}) than any the network was validated on "
                  f"(up to {noise_limit:g}); denoise the projections (--denoise bm3d) to use it")
    return {"r_factor_reconstruction": round(r_rec, 5), "r_factor_enhanced": round(r_enh, 5),
            "tolerance": tolerance, "noise_ratio": None if noise is None else round(noise, 4),
            "noise_limit": noise_limit, "reason": reason, "network_accepted": reason is None}

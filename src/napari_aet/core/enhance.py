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
    "NORMALIZATION_PERCENTILE",
    "intensity_scale",
    "load_weights",
    "save_weights",
    "default_weights_path",
    "enhance_volume",
    "tile_starts",
]

NORMALIZATION_PERCENTILE = 99.9
WEIGHTS_NAME = "unet_pt.pt"


def intensity_scale(volume: np.ndarray) -> float:
    """The normalization scale of a tomogram: its 99.9th percentile (positive)."""
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
    """Save a plain state dict with the architecture and metadata; return its sha256."""
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
    """The shipped weights in ``resources/``."""
    return Path(str(resources.files("napari_aet").joinpath("resources", WEIGHTS_NAME)))


def load_weights(path=None, device="cpu"):
    """Load a U-Net from a weights file (plain state dict, ``weights_only=True``).

    A provenance JSON beside the file (same name, ``.json``) with a ``sha256`` is checked.
    Returns ``(model, metadata)``.
    """
    import pickle

    import torch

    from .unet import UNet3D, UNetConfig

    path = Path(path) if path is not None else default_weights_path()
    if not path.exists():
        raise AETInputError(f"weights file {path} does not exist; train with 'napari-aet train' or give --weights")
    side = path.with_suffix(".json")
    digest = sha256(path)
    if side.exists():
        expected = json.loads(side.read_text()).get("sha256")
        if expected and digest != expected:
            raise AETInputError(f"weights file {path} does not match the checksum in {side.name}: corrupt or replaced; re-download or retrain")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AETInputError(f"{path} is not a plain state dict ({str(exc).splitlines()[0][:80]}); refused for safety")
    except Exception as exc:
        raise AETInputError(f"cannot read weights {path} (corrupt: {str(exc).splitlines()[0][:80]}); retrain or re-download")
    if not isinstance(payload, dict) or payload.get("format") != "napari-aet-unet-1":
        raise AETInputError(f"{path} is not a napari-aet U-Net weights file; give one written by 'napari-aet train'")
    try:
        cfg = UNetConfig(**payload["config"])
        model = UNet3D(cfg)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:120]
        raise AETInputError(f"weights {path} do not fit the U-Net architecture they declare ({first}); use weights from 'napari-aet train'")
    meta = json.loads(payload.get("metadata") or "{}")
    meta.update(sha256=digest, weights_path=str(path))  # what a report needs to name the weights used
    return model.to(device).eval(), meta


def tile_starts(n: int, tile: int, overlap: int) -> list:
    """Start indices of tiles of length ``tile`` covering ``n`` with at least ``overlap``."""
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


def enhance_volume(
    volume: np.ndarray,
    model,
    pixel_size: Optional[float] = None,
    training_pixel_size: Optional[float] = None,
    tile: int = 144,
    overlap: int = 24,
    flip_average: bool = False,
    device="cpu",
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Apply the network to a tomogram ``[z, y, x]``; same shape, frame and intensity scale.

    A volume whose voxel size differs from the training voxel size by more than 2% is
    resampled to it (cubic spline) and back.
    """
    import torch
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
    scale = intensity_scale(vol)
    x = vol / scale
    m = model.multiple
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
    with torch.no_grad():
        for z0 in starts[0]:
            for y0 in starts[1]:
                for x0 in starts[2]:
                    sl = (slice(z0, z0 + tile), slice(y0, y0 + tile), slice(x0, x0 + tile))
                    t = torch.as_tensor(xp[sl], device=device)[None, None]
                    pred = torch.zeros_like(t)
                    for f in flips:
                        inp = torch.flip(t, f) if f else t
                        y = model(inp)
                        pred += torch.flip(y, f) if f else y
                    pred = (pred / len(flips))[0, 0].float().cpu().numpy()
                    out[sl] += pred * w3
                    weight[sl] += w3
                    rep.step("tile")
    res = (out / np.maximum(weight, 1e-12))[: x.shape[0], : x.shape[1], : x.shape[2]] * scale
    if zoom != 1.0:
        res = ndimage.zoom(res, [a / b for a, b in zip(volume.shape, res.shape)], order=3)
    return res.astype(np.float32)


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

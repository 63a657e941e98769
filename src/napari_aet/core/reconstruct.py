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

from . import geometry
from .errors import AETInputError, Reporter
from .io import TiltSeries, check_pixel_size

__all__ = ["ReconstructionResult", "reconstruct", "estimate_memory", "METHODS", "DEFAULT_ITERATIONS"]

METHODS = ("resire", "sirt", "genfire")
DEFAULT_ITERATIONS = {"resire": 100, "sirt": 100, "genfire": 100}


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


MAX_ITERATIONS = 100_000
MAX_VOLUME_EDGE = 4096  # voxels; the memory check decides below that


def estimate_memory(volume_shape, n_projections: int, detector_shape, method: str = "resire",
                    oversampling: int = 2, chunk_bytes: int = 256 * 2**20) -> int:
    """Bytes a reconstruction needs at its peak (float32), for the memory check.

    Parameters
    ----------
    volume_shape : (nz, ny, nx)
    n_projections : int
    detector_shape : (nv, nu)
    method : {"resire", "sirt", "genfire"}
    oversampling : int
        GENFIRE's Fourier-grid oversampling.
    chunk_bytes : int
        Working memory of one projector chunk.

    Returns
    -------
    int
    """
    nvox = int(np.prod(volume_shape))
    nproj = n_projections * int(np.prod(detector_shape))
    if method == "genfire":
        big = oversampling * max(list(volume_shape) + list(detector_shape))
        nf = big**3
        # real-space grid, its shifted copy and the inverse FFT (3 x 4 B per point); the
        # half-spectrum (8 B per half point); gridded values and indices (16 B per half point, at most)
        return int(nf * 4 * 3 + nf // 2 * (8 + 16) + nproj * 4 * 2 + nvox * 4 * 2)
    # x, momentum, previous x, column weights, gradient, support; b, residual, row weights; chunk buffers
    return int(nvox * 4 * 6 + nproj * 4 * 3 + 3 * chunk_bytes)


def _check_inputs(data: np.ndarray, angles) -> None:
    if data.ndim != 3:
        raise AETInputError(f"tilt series has shape {data.shape}; it must be a (projections, rows, cols) stack")
    if angles is None:
        raise AETInputError("no tilt angles given; pass --angles (degrees, one per projection)")
    if len(angles) != data.shape[0]:
        raise AETInputError(f"{len(angles)} angles for {data.shape[0]} projections; give one angle per projection")
    if not np.all(np.isfinite(data)):
        raise AETInputError(f"tilt series has {int((~np.isfinite(data)).sum())} NaN/Inf values; replace them before reconstructing")


def extended_padding(volume_shape, detector_shape, angles, max_pad_factor: float = 3.0) -> tuple:
    """Voxels to add on each side along y and x so that the volume holds every voxel whose
    ray reaches the detector at some angle (an extended object's reconstruction box).

    For each projection, the detector's corners are traced back to the top and bottom faces
    of the slab (z = +-nz/2); the widest reach beyond the box, over all projections, is the
    padding. Single-axis tilts about y need none along y. Near 90° the reach diverges, so each
    side is capped at ``max_pad_factor`` x the box edge.
    """
    from .geometry import as_euler_angles, euler_zyz_matrices

    nz, ny, nx = (int(s) for s in volume_shape)
    nv, nu = (int(s) for s in detector_shape)
    reach_y, reach_x = ny / 2, nx / 2
    for r in euler_zyz_matrices(as_euler_angles(angles)):
        a = r[:2, :2]  # detector (u, v) from sample (x, y) at fixed z
        if abs(np.linalg.det(a)) < 1e-6:
            reach_y, reach_x = np.inf, np.inf
            break
        inv = np.linalg.inv(a)
        for u in (-nu / 2, nu / 2):
            for v in (-nv / 2, nv / 2):
                for z in (-nz / 2, nz / 2):
                    x, y = inv @ (np.array([u, v]) - z * r[:2, 2])
                    reach_x, reach_y = max(reach_x, abs(x)), max(reach_y, abs(y))
    pad_y = min(int(np.ceil(reach_y - ny / 2)), int(max_pad_factor * ny))
    pad_x = min(int(np.ceil(reach_x - nx / 2)), int(max_pad_factor * nx))
    return max(pad_y, 0), max(pad_x, 0)


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
    euler_projector: str = "sheared",
    extended_object: bool = False,
    initial_volume: Optional[np.ndarray] = None,
) -> ReconstructionResult:
    """Reconstruct a tomogram from a tilt series.

    Parameters
    ----------
    tilt_series : :class:`TiltSeries` or array ``[a, v, u]``.
    angles : tilts (N,) or Euler (N, 3) in degrees (default: the tilt series' own).
    pixel_size : Å (default: the tilt series' own); becomes the voxel size.
    method : 'resire' (default), 'sirt' or 'genfire'.
    iterations : default 100 for every method (RESIRE: where the error against the ideal
        tomogram is lowest on the reference regime; more iterations start fitting noise).
    volume_shape : (nz, ny, nx); default (nu, nv, nu).
    support : optional boolean mask ``[z, y, x]``; voxels outside are kept at zero.
    device : 'auto', 'cpu' or 'cuda'.
    extended_object : the sample extends beyond the box (a film, a support leaving the field of
        view): reconstruct a volume widened along x and y until it holds every voxel whose ray
        reaches the detector at some angle (:func:`extended_padding`), so signal from outside
        the box is explained by voxels outside it instead of being folded in, then return the
        central box. RESIRE and SIRT only.
    initial_volume : start RESIRE/SIRT from this volume (same shape; e.g. the previous round of
        projection matching) instead of zero.
    euler_projector : projector for general Euler angles (RESIRE, SIRT): 'sheared' (default,
        shear-warp, ~8x faster) or 'splat' (direct; ~1 pm better RMSD on noise-free data,
        no better with noise; BENCHMARKS.md).
    oversampling, interpolation_cutoff, r_free_fraction : GENFIRE settings (cutoff in
        oversampled Fourier voxels; R-free share of gridded points held out, 0 = off).

    Returns
    -------
    ReconstructionResult
        ``volume`` float32 ``[z, y, x]`` with voxel size ``pixel_size`` (Å), the R-factor of
        every iteration (``r_factors``; ``r_free`` for GENFIRE), ``method``, ``device``,
        ``seconds`` and the ``settings`` used.
    """
    import torch

    from .projector import Projector, resolve_device

    data, angles, pixel_size = _inputs(tilt_series, angles, pixel_size)
    iterations = _check_settings(data, method, iterations, r_free_fraction, oversampling, interpolation_cutoff)
    n, nv, nu = data.shape
    volume_shape, box_shape, pad, support = _volume_geometry(data, angles, volume_shape, support, extended_object,
                                                             method)
    dev = resolve_device(device)
    if check_memory:
        from .validate import check_memory as _check_memory

        _check_memory(estimate_memory(volume_shape, n, (nv, nu), method, oversampling),
                      f"reconstructing {volume_shape} from {n} projections",
                      f"bin the tilt series by 2, reconstruct a smaller volume"
                      f"{' or use --device cpu' if dev.type == 'cuda' else ''}", device=dev)
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
            proj = Projector(volume_shape, angles, (nv, nu), device=dev, general=euler_projector)
            if initial_volume is not None and (extended_object or np.shape(initial_volume) != tuple(volume_shape)):
                raise AETInputError(f"initial volume has shape {np.shape(initial_volume)}, the reconstruction "
                                    f"{tuple(volume_shape)}; give a matching volume")
            vol, r_factors = _resire_sirt(proj, b, iterations, mask, positivity, momentum=(method == "resire"), rep=rep,
                                          initial=initial_volume)
            settings.update(momentum=method == "resire", single_axis_fast_path=proj.single_axis,
                            euler_projector=None if proj.single_axis else euler_projector)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    if extended_object:
        ny_box, nx_box = box_shape[1], box_shape[2]
        vol = vol[:, pad[0]:pad[0] + ny_box, pad[1]:pad[1] + nx_box]
        settings.update(extended_object=True, extended_padding_yx=list(pad), extended_volume=list(volume_shape))
    _check_volume(vol, method)
    return ReconstructionResult(
        volume=vol.detach().cpu().numpy().astype(np.float32), pixel_size=pixel_size, method=method,
        r_factors=r_factors, r_free=r_free, iterations=iterations, device=str(dev),
        seconds=time.perf_counter() - t0, settings=settings,
    )


def _inputs(tilt_series, angles, pixel_size) -> tuple:
    """Projections, angles (degrees) and pixel size (Å) from a TiltSeries or an array, checked."""
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
    from .validate import check_angle_values

    check_angle_values(angles)
    return data, angles, pixel_size


def _check_settings(data, method, iterations, r_free_fraction, oversampling, interpolation_cutoff) -> int:
    """The method's settings, checked; returns the number of iterations."""
    if method not in METHODS:
        raise AETInputError(f"reconstruction method {method!r} unknown; use one of {', '.join(METHODS)}")
    from .validate import check_int, check_number, check_tilt_signal

    check_tilt_signal(data)
    iterations = DEFAULT_ITERATIONS[method] if iterations is None else iterations
    iterations = check_int(iterations, "iterations", 1, MAX_ITERATIONS)
    check_number(r_free_fraction, "R-free fraction (--r-free)", 0.0, 0.5,
                 hint=" (a share of the Fourier points, e.g. 0.05)")
    check_int(oversampling, "oversampling", 1, 4)
    check_number(interpolation_cutoff, "interpolation cutoff", 0.0, 2.0, lo_open=True)
    return iterations


def _volume_geometry(data, angles, volume_shape, support, extended_object, method) -> tuple:
    """(reconstructed shape, output box shape, (y, x) padding, support) for the requested box;
    an extended object widens the reconstructed volume by the padding its rays need."""
    from .validate import check_int

    n, nv, nu = data.shape
    volume_shape = tuple(check_int(s, "volume size", 1, MAX_VOLUME_EDGE, hint=" voxels along each axis")
                         for s in (volume_shape or (nu, nv, nu)))
    if support is not None and tuple(support.shape) != volume_shape:
        raise AETInputError(f"support has shape {tuple(support.shape)} but the volume is {volume_shape}; give a matching mask")
    box_shape, pad = volume_shape, (0, 0)
    if extended_object:
        if method == "genfire":
            raise AETInputError("extended objects are reconstructed with --method resire or sirt, not genfire")
        pad = extended_padding(volume_shape, (nv, nu), angles)
        volume_shape = (volume_shape[0], volume_shape[1] + 2 * pad[0], volume_shape[2] + 2 * pad[1])
        check_int(max(volume_shape), "extended volume size", 1, MAX_VOLUME_EDGE,
                  hint=" voxels; reconstruct a thinner volume (--thickness) or limit the tilt range")
        if support is not None:
            support = np.pad(np.asarray(support, bool), ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])),
                             constant_values=True)
    return volume_shape, box_shape, pad, support


def _check_volume(vol, method: str) -> None:
    """Refuse a diverged (NaN/Inf) or empty reconstruction, naming what to change."""
    import torch

    if not bool(torch.isfinite(vol).all()):
        raise AETInputError(f"{method} diverged (NaN/Inf in the volume); use fewer iterations or another --method")
    if not bool((vol != 0).any()):
        raise AETInputError(f"{method} gave a volume that is zero everywhere; check the tilt series' sign and "
                            "background, the angles and the settings")


def _r_factor(residual, b_abs_sum) -> float:
    return float(residual.abs().sum() / b_abs_sum)


def _resire_sirt(proj, b, iterations: int, mask, positivity: bool, momentum: bool, rep: Reporter, initial=None):
    """SIRT / RESIRE: x <- x + C A^T R (b - A x), with Nesterov momentum for RESIRE; from
    ``initial`` (a warm start) or zero."""
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
    x = torch.zeros(shape, device=dev) if initial is None else torch.as_tensor(initial, dtype=torch.float32, device=dev).clone()
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


# Long: GENFIRE's steps (gridding, R-free split, the real/Fourier-space iteration) share a dozen
# tensors in one sequence; split up, each part would take and return them all.
def _genfire(b, angles, volume_shape, iterations, mask, positivity, dev, seed, oversampling, cutoff, r_free_fraction, rep):
    """GENFIRE-style reconstruction on an oversampled Fourier grid.

    The projections (zero-padded to the oversampled size) are Fourier transformed and, by
    the Fourier slice theorem, placed on the 3D grid: each measured point goes to the grid
    points within ``cutoff`` (grid units) of its position with inverse-distance weights.
    Iterations alternate between real space (support = the volume's box and an optional
    mask, positivity) and Fourier space (the gridded values imposed). A share
    ``r_free_fraction`` of gridded points can be held out: their error is R-free.
    """
    import torch

    from .projector import Projector

    if oversampling < 1 or oversampling > 4:
        raise AETInputError(f"oversampling {oversampling} out of range; use 1-4 (GENFIRE's default is 3, ours 2)")
    if not 0 < cutoff <= 1.0:
        raise AETInputError(f"interpolation cutoff {cutoff} out of range; use 0 < cutoff <= 1 (grid units)")
    nz, ny, nx = volume_shape
    n, nv, nu = b.shape
    big = int(oversampling * max(volume_shape + (nv, nu)))
    big += big % 2
    rot = torch.as_tensor(geometry.euler_zyz_matrices(angles), dtype=torch.float32, device=dev)

    # 1. Fourier transforms of the centred, zero-padded projections.
    pad = torch.zeros((n, big, big), device=dev)
    v0, u0 = big // 2 - nv // 2, big // 2 - nu // 2
    pad[:, v0:v0 + nv, u0:u0 + nu] = b
    spec = torch.fft.fft2(torch.fft.ifftshift(pad, dim=(-2, -1)))
    del pad
    f = torch.fft.fftfreq(big, d=1.0 / big, device=dev)
    kv, ku = torch.meshgrid(f, f, indexing="ij")
    keep = (ku.abs() < big / 2) & (kv.abs() < big / 2) & (ku**2 + kv**2 <= (big / 2) ** 2)
    ku, kv = ku[keep], kv[keep]
    sum_vals = torch.zeros(big * big * (big // 2 + 1), dtype=torch.complex64, device=dev)
    sum_w = torch.zeros(big * big * (big // 2 + 1), dtype=torch.float32, device=dev)
    half = big // 2 + 1
    for a in range(n):
        vals = spec[a][keep]
        # sample-frame frequency of detector frequency (ku, kv, 0): k = R^T (ku, kv, 0)
        k = ku[:, None] * rot[a, 0][None, :] + kv[:, None] * rot[a, 1][None, :]  # (m, 3) in (kx, ky, kz)
        for sign in (1.0, -1.0):  # the point and its Friedel mate
            kk = sign * k
            vv = vals if sign > 0 else vals.conj()
            base = torch.floor(kk)
            for corner in range(8):
                off = torch.tensor([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1], device=dev, dtype=kk.dtype)
                g = base + off
                d = torch.linalg.norm(g - kk, dim=1)
                ok = (d <= cutoff) & (g[:, 0] >= 0) & (g[:, 0] < half)
                if not ok.any():
                    continue
                gi = g[ok].long()
                w = 1.0 / (d[ok] + 1e-3)
                flat = (gi[:, 2] % big) * (big * half) + (gi[:, 1] % big) * half + gi[:, 0]
                sum_vals.index_add_(0, flat, vv[ok] * w)
                sum_w.index_add_(0, flat, w)
        rep.check()
    del spec
    measured = torch.nonzero(sum_w > 0).squeeze(1)
    values = sum_vals[measured] / sum_w[measured]
    del sum_vals, sum_w
    gen = torch.Generator(device="cpu").manual_seed(seed)
    free_sel = None
    if r_free_fraction > 0:
        perm = torch.randperm(len(measured), generator=gen).to(dev)
        n_free = int(r_free_fraction * len(measured))
        free_sel, work = perm[:n_free], perm[n_free:]
        free_idx, free_vals = measured[free_sel], values[free_sel]
        measured, values = measured[work], values[work]

    # 2. Iterations between real-space and Fourier-space constraints.
    z0, y0, x0 = big // 2 - nz // 2, big // 2 - ny // 2, big // 2 - nx // 2
    region = (slice(z0, z0 + nz), slice(y0, y0 + ny), slice(x0, x0 + nx))
    proj = Projector(volume_shape, angles, (nv, nu), device=dev)
    b_sum = float(b.abs().sum()) or 1.0
    x = torch.zeros((big, big, big), device=dev)
    r_factors, r_free = [], ([] if free_sel is not None else None)
    fourier = torch.zeros((big, big, half), dtype=torch.complex64, device=dev)
    for k in range(iterations):
        fourier = torch.fft.rfftn(torch.fft.ifftshift(x)).contiguous()
        flat = fourier.view(-1)
        if r_free is not None:
            r_free.append(float((flat[free_idx] - free_vals).abs().sum() / free_vals.abs().sum()))
        flat[measured] = values
        x = torch.fft.fftshift(torch.fft.irfftn(fourier, s=(big, big, big)))
        inner = x[region].clone()
        if positivity:
            inner.clamp_(min=0)
        if mask is not None:
            inner = inner * mask
        x.zero_()
        x[region] = inner
        r = float((proj.forward(inner) - b).abs().sum() / b_sum)
        r_factors.append(r)
        rep.step(f"R = {r:.4f}" + (f", R-free = {r_free[-1]:.4f}" if r_free else ""))
    return x[region].clone(), r_factors, r_free

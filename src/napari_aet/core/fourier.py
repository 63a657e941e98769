"""Fourier-space views of a tomogram: where the missing wedge lies and how full it is.

Geometry (contract): the tilt axis is y, so a single-axis tilt series over ±θ measures the
Fourier planes containing k_y whose normal lies within θ of z; in the kx-kz plane the
measured region is |k_z| <= |k_x| tan θ and the missing wedge is the rest, around k_z.
Volumes are indexed [z, y, x].
"""

from __future__ import annotations

import numpy as np

from .errors import AETInputError


def _check(volume) -> np.ndarray:
    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise AETInputError(f"a tomogram must be 3D [z, y, x]; got shape {vol.shape}")
    if not np.isfinite(vol).all():
        raise AETInputError("the tomogram contains NaN or infinite voxels; reconstruct it again or fix the file")
    return vol


def fourier_intensity(volume) -> np.ndarray:
    """Log Fourier intensity ``log10(1 + |F|² / median)`` of a tomogram, zero frequency at the
    centre; normalising by the median power makes the display independent of the intensity scale.

    Parameters
    ----------
    volume : (nz, ny, nx) array

    Returns
    -------
    (nz, ny, nx) float32 array
    """
    vol = _check(volume)
    power = np.abs(np.fft.fftshift(np.fft.fftn(vol))) ** 2
    ref = float(np.median(power)) or 1.0
    return np.log10(1.0 + power / ref).astype(np.float32)


def frequency_grids(shape) -> tuple:
    """Centred frequency grids matching ``fftshift``.

    Parameters
    ----------
    shape : (nz, ny, nx)

    Returns
    -------
    k_z, k_y, k_x : arrays of that shape
        Cycles per voxel.
    """
    ks = [np.fft.fftshift(np.fft.fftfreq(n)) for n in shape]
    return np.meshgrid(*ks, indexing="ij")


def missing_wedge_mask(shape, tilt_range: float, centred: bool = True) -> np.ndarray:
    """Where a single-axis tilt series (about y) over ±``tilt_range`` measured nothing.

    Parameters
    ----------
    shape : (nz, ny, nx)
        The tomogram's shape.
    tilt_range : float
        Largest |tilt|, degrees (:func:`~napari_aet.core.geometry.tilt_range`).
    centred : bool
        Zero frequency in the middle (as :func:`fourier_intensity`), else in FFT order.

    Returns
    -------
    (nz, ny, nx) bool array
        True inside the missing wedge.
    """
    if not 0 < tilt_range < 90:
        raise AETInputError(f"tilt range ±{tilt_range}° must lie between 0 and 90 degrees")
    kz, _, kx = frequency_grids(shape)
    mask = np.abs(kz) > np.abs(kx) * np.tan(np.deg2rad(tilt_range))
    return mask if centred else np.fft.ifftshift(mask)


def wedge_correlation(volume, ideal, tilt_range: float, complex_values: bool = False,
                      k_min: float = 3.0, k_max=None, margin: float = 1.0) -> float:
    """Pearson correlation between ``volume`` and ``ideal`` inside the missing wedge, of Fourier
    amplitudes or of complex coefficients (which also asks for the right phases).

    Parameters
    ----------
    volume, ideal : (nz, ny, nx) arrays
    tilt_range : float
        Largest |tilt|, degrees (tilts about y).
    complex_values : bool
    k_min, k_max : float
        Radii in FFT samples (default ``k_max``: Nyquist).
    margin : float
        Samples inside the wedge boundary a frequency must be.

    Returns
    -------
    float
    """
    vol, ref = _check(volume), _check(ideal)
    if vol.shape != ref.shape:
        raise AETInputError(f"volume {vol.shape} and ideal {ref.shape} differ in shape")
    f, g = np.fft.fftn(vol), np.fft.fftn(ref)
    if not complex_values:
        f, g = np.abs(f), np.abs(g)
    n = min(vol.shape)
    kz, ky, kx = [np.fft.ifftshift(k) * s for k, s in zip(frequency_grids(vol.shape), vol.shape)]
    r = np.sqrt(kx**2 + ky**2 + kz**2)
    k_max = n / 2 if k_max is None else k_max
    sel = (np.abs(kz) > np.abs(kx) * np.tan(np.deg2rad(tilt_range)) + margin) & (r > k_min) & (r < k_max)
    a, b = f[sel], g[sel]
    if complex_values:
        a, b = np.concatenate([a.real, a.imag]), np.concatenate([b.real, b.imag])
    return float(np.corrcoef(a, b)[0, 1])


def wedge_shell_correlation(volume, ideal, tilt_range: float, pixel_size: float,
                            k_range=(0.3, 1.0), n_shells: int = 14, margin: float = 1.0) -> float:
    """Mean over resolution shells of the complex correlation inside the missing wedge: each
    shell counts equally, so the strong low frequencies of the particle's envelope cannot
    dominate, and the atomic-resolution shells (lattice fringes) decide.

    Parameters
    ----------
    volume, ideal : (nz, ny, nx) arrays
    tilt_range : float
        Largest |tilt|, degrees (tilts about y).
    pixel_size : float
        Voxel size, Å.
    k_range : (float, float)
        Shells from and to, 1/Å.
    n_shells : int
    margin : float
        Samples inside the wedge boundary a frequency must be.

    Returns
    -------
    float
    """
    vol, ref = _check(volume), _check(ideal)
    f, g = np.fft.fftn(vol), np.fft.fftn(ref)
    kz, ky, kx = [np.fft.ifftshift(k) * s for k, s in zip(frequency_grids(vol.shape), vol.shape)]
    r = np.sqrt(kx**2 + ky**2 + kz**2) / (min(vol.shape) * pixel_size)  # 1/Å
    wedge = np.abs(kz) > np.abs(kx) * np.tan(np.deg2rad(tilt_range)) + margin
    edges = np.linspace(k_range[0], k_range[1], n_shells + 1)
    values = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = wedge & (r >= lo) & (r < hi)
        if sel.sum() < 16:
            continue
        a, b = f[sel], g[sel]
        num = np.real(np.vdot(b, a))
        den = np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real) or 1.0
        values.append(num / den)
    if not values:
        raise AETInputError("no Fourier samples in the requested shells; widen k_range or use a larger volume")
    return float(np.mean(values))

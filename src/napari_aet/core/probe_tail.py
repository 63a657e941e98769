"""The STEM probe's tail: the part of an atom's HAADF image a single Gaussian cannot hold.

A focused probe is not a Gaussian: an aberration-limited probe puts a sharp core on a broad
skirt that carries a sizeable share of its current. Every atom's projected image is that probe
convolved with the atom's own (thermally smeared) potential, so every atom, whatever its
species, is seen through the same detector-plane kernel

    T = (1 - f) δ + f G(σ_tail),

a delta function (the core, absorbed into each atom's own Gaussian width) plus a Gaussian tail
holding the fraction ``f`` of the intensity. Fitting Gaussian atoms without it makes them wider
(on abTEM projections of a Pt-Ni particle, B 26 Å² instead of 18 Å²), mixes the tails of bright
atoms into their faint neighbours' heights, and pulls the atoms off their sites.

:func:`apply_probe_tail` puts the tail on projections (torch, differentiable in ``f`` and
``σ_tail``; :func:`napari_aet.core.refine.refine_positions` fits both); :func:`remove_probe_tail`
takes a fitted tail off a measured tilt series. Its transfer function never falls below
``1 - f``, so the removal is stable (noise grows by at most ``1 / (1 - f)``) and the Gaussian
atom model then fits the series as it fits a probe without a tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AETInputError

__all__ = ["ProbeTail", "apply_probe_tail", "remove_probe_tail", "MIN_TAIL_FRACTION", "MAX_TAIL_FRACTION"]

MIN_TAIL_FRACTION = 0.05  # below this a fitted tail is not removed (within the fit's scatter on tail-free data)
MAX_TAIL_FRACTION = 0.8  # above this the removal would amplify noise more than five-fold


@dataclass(frozen=True)
class ProbeTail:
    """A Gaussian probe tail: ``fraction`` of every atom's intensity, spread with ``sigma`` (Å)."""

    fraction: float
    sigma: float

    def __post_init__(self):
        if not (0.0 <= self.fraction <= MAX_TAIL_FRACTION and math.isfinite(self.fraction)):
            raise AETInputError(f"probe tail fraction {self.fraction} is outside [0, {MAX_TAIL_FRACTION}]; "
                                "refit the atoms or leave the tail out")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise AETInputError(f"probe tail width {self.sigma} Å is not a positive number; refit the atoms")

    def summary(self) -> dict:
        return {"fraction": round(self.fraction, 4), "sigma_A": round(self.sigma, 4)}

    @classmethod
    def from_summary(cls, record) -> "ProbeTail | None":
        """The tail a report recorded (``{"fraction", "sigma_A"}``), or None."""
        if not record:
            return None
        return cls(float(record["fraction"]), float(record["sigma_A"]))


def _pad(sigma: float, pixel_size: float) -> int:
    return int(math.ceil(4 * sigma / pixel_size)) + 1


def _k2(shape, pixel_size: float) -> np.ndarray:
    """Squared spatial frequency (Å⁻²) on the rfft2 grid of ``shape``."""
    nv, nu = shape
    return np.fft.fftfreq(nv, d=pixel_size)[:, None] ** 2 + np.fft.rfftfreq(nu, d=pixel_size)[None, :] ** 2


def _transfer(k2, fraction, sigma, exp):
    """``(1 - f) + f exp(-2 π² σ² k²)``; ``exp`` is numpy's or torch's."""
    return (1 - fraction) + fraction * exp(-2 * math.pi**2 * sigma**2 * k2)


def apply_probe_tail(images, fraction, sigma, pixel_size: float):
    """Projections ``(..., nv, nu)`` (torch) seen through the probe tail (differentiable).

    Parameters
    ----------
    images : torch.Tensor
        Projections, last two axes (v, u).
    fraction : float or 0-d torch.Tensor
        Share of each atom's intensity in the tail.
    sigma : float or 0-d torch.Tensor
        Width of the tail, Å.
    pixel_size : float
        Å.

    Returns
    -------
    torch.Tensor
        Same shape; zero-padded by four tail widths so nothing wraps around the field.
    """
    import torch

    pad = _pad(float(sigma.detach()) if torch.is_tensor(sigma) else float(sigma), pixel_size)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    shape = padded.shape[-2:]
    k2 = torch.as_tensor(_k2(shape, pixel_size), dtype=images.dtype, device=images.device)
    t = _transfer(k2, fraction, sigma, torch.exp)
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * t, s=shape)
    return out[..., pad:pad + images.shape[-2], pad:pad + images.shape[-1]]


def remove_probe_tail(tilts, tail: ProbeTail, pixel_size: float) -> np.ndarray:
    """A tilt series ``[a, v, u]`` with the probe tail taken off (float32).

    Parameters
    ----------
    tilts : (a, nv, nu) array
        Measured projections.
    tail : ProbeTail
        The tail a refinement fitted.
    pixel_size : float
        Å.

    Returns
    -------
    (a, nv, nu) float32 array
        Divided by the tail's transfer function (at least ``1 - f``, so stable); the field is
        mirror-padded first, so a film running out of the field gets no false edge.
    """
    data = np.asarray(tilts, np.float32)
    if data.ndim != 3:
        raise AETInputError(f"a tilt series has 3 axes (projection, v, u), not {data.ndim}")
    if tail.fraction == 0:
        return data.copy()
    pad = min(_pad(tail.sigma, pixel_size), min(data.shape[1:]) - 1)
    padded = np.pad(data, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    t = _transfer(_k2(padded.shape[1:], pixel_size), tail.fraction, tail.sigma, np.exp)
    out = np.fft.irfft2(np.fft.rfft2(padded) / t, s=padded.shape[1:])
    return out[:, pad:pad + data.shape[1], pad:pad + data.shape[2]].astype(np.float32)

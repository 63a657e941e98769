"""Forward models of atoms: one family with one interface.

A forward model turns atoms (positions in Å, sample frame; species or integrated
intensities) into a noise-free HAADF tilt series ``[a, v, u]`` for given angles, in the
contract's projection geometry::

    model.project(positions, angles, shape, pixel_size, species=..., shifts=...)

- :class:`GaussianAtoms`: each atom an analytic Gaussian, integrated exactly over the
  pixels (integrated intensity ``(Z/78)^z_exponent``, Debye-Waller and probe blur); numpy,
  with a differentiable torch twin (:meth:`GaussianAtoms.torch_projector`) for refinement,
  and the ideal tomogram (:meth:`GaussianAtoms.density`).
- :class:`AbtemPotential`: abTEM projected potentials (Lobato or Kirkland) convolved with
  the STEM probe (:mod:`napari_aet.core.forward_abtem`; needs ``abtem``).

The simulator, alignment, refinement and training data take a model from here; none of
them borrows another stage's code.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.special import erf

from . import geometry
from .errors import AETInputError, Reporter

__all__ = ["GaussianAtoms", "AbtemPotential", "forward_model", "FORWARD_MODELS", "project_atoms", "atom_weights",
           "ideal_tomogram", "b_factor_to_sigma", "AtomProjector", "Z_REFERENCE"]

Z_REFERENCE = 78  # Pt: one Pt atom has unit intensity


def b_factor_to_sigma(b_factor: float) -> float:
    """Gaussian width (Å) of an atom with Debye-Waller factor ``b_factor`` (Å²).

    Parameters
    ----------
    b_factor : float
        Å².

    Returns
    -------
    float
        ``sqrt(B / (8 pi²))``, Å.
    """
    return math.sqrt(max(b_factor, 1e-6) / (8 * math.pi**2))


def atom_weights(species: Sequence[str], z_exponent: float = 1.7) -> np.ndarray:
    """Integrated HAADF intensity of each atom, ``(Z / 78) ** z_exponent`` (Pt = 1).

    Parameters
    ----------
    species : sequence of str
        Chemical symbols.
    z_exponent : float

    Returns
    -------
    (n,) array
    """
    from ase.data import atomic_numbers

    z = np.array([atomic_numbers[str(s)] for s in species], dtype=float)
    return (z / Z_REFERENCE) ** z_exponent


def _pixel_weights(centres: np.ndarray, sigma_px: float, half: int):
    """Exact pixel integrals of unit 1D Gaussians: first index (m,) and weights (m, 2*half+1)."""
    idx = (np.floor(centres + 0.5).astype(np.int64) - half)[:, None] + np.arange(2 * half + 1)[None]
    s = sigma_px * math.sqrt(2)
    w = 0.5 * (erf((idx + 0.5 - centres[:, None]) / s) - erf((idx - 0.5 - centres[:, None]) / s))
    return idx, w


def _splat(shape, centres_idx: np.ndarray, weights: np.ndarray, sigma_px: float, chunk: int = 2048) -> np.ndarray:
    """Sum of Gaussians (unit integral x weight) integrated over the pixels of an nD grid."""
    ndim = len(shape)
    half = max(1, int(math.ceil(4 * sigma_px)) + 1)
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    w1 = 2 * half + 1
    for start in range(0, len(weights), chunk):
        c = centres_idx[start:start + chunk]
        wt = weights[start:start + chunk]
        flat = np.zeros((len(c),) + (w1,) * ndim, dtype=np.int64)
        val = wt.reshape((-1,) + (1,) * ndim).astype(np.float64)
        valid = np.ones_like(flat, dtype=bool)
        stride = 1
        for ax in reversed(range(ndim)):
            idx, w = _pixel_weights(c[:, ax], sigma_px, half)
            sh = [len(c)] + [1] * ndim
            sh[ax + 1] = w1
            flat = flat + (idx * stride).reshape(sh)
            val = val * w.reshape(sh)
            valid = valid & ((idx >= 0) & (idx < shape[ax])).reshape(sh)
            stride *= shape[ax]
        out += np.bincount(flat[valid], weights=val[valid], minlength=out.size)
    return out.reshape(shape)


def ideal_tomogram(positions, weights, shape, pixel_size: float, b_factor: float = 5.0) -> np.ndarray:
    """The ideal tomogram ``[z, y, x]`` (float32): each atom a voxel-integrated 3D Gaussian.

    Parameters
    ----------
    positions : (n, 3) array
        Å, sample frame.
    weights : (n,) array
        Integrated intensities.
    shape : (nz, ny, nx)
    pixel_size : float
        Å.
    b_factor : float
        Å².

    Returns
    -------
    (nz, ny, nx) float32 array
    """
    shape = tuple(int(s) for s in shape)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    zyx = np.stack([geometry.angstrom_to_index(pos[:, 2 - k], shape[k], pixel_size) for k in range(3)], 1)
    sigma_px = b_factor_to_sigma(b_factor) / pixel_size
    return _splat(shape, zyx, np.asarray(weights, float), sigma_px).astype(np.float32)


def project_atoms(
    positions, weights, angles, shape, pixel_size: float, b_factor: float = 5.0,
    probe_sigma: float = 0.0, shifts=None, progress=None, cancel=None,
) -> np.ndarray:
    """Noise-free tilt series of Gaussian atoms (analytic line integrals).

    Parameters
    ----------
    positions : (n, 3) array
        Atom positions, Å (sample frame).
    weights : (n,) array
        Each atom's integrated intensity (e.g. Z^1.7).
    angles : (n_angles,) or (n_angles, 3) array
        Tilts or Z-Y-Z Euler angles, degrees.
    shape : (nv, nu)
        Rows and columns of each projection.
    pixel_size : float
        Detector pixel, Å.
    b_factor : float
        Debye-Waller B, Å² (Gaussian atoms of variance B / (8 pi²)).
    probe_sigma : float
        Extra Gaussian blur of the probe, Å.
    shifts : (n_angles, 2) array, optional
        Detector shifts (du, dv) in pixels.
    progress, cancel : callback ``progress(done, total, message)`` and a ``threading.Event``.

    Returns
    -------
    (n_angles, nv, nu) float32 array
    """
    rot = geometry.euler_zyz_matrices(angles)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    nv, nu = (int(s) for s in shape)
    sigma_px = math.hypot(b_factor_to_sigma(b_factor), probe_sigma) / pixel_size
    shifts = np.zeros((len(rot), 2)) if shifts is None else np.asarray(shifts, float)
    out = np.empty((len(rot), nv, nu), dtype=np.float32)
    rep = Reporter(len(rot), progress, cancel)
    for a, r in enumerate(rot):
        uvw = pos @ r.T
        vu = np.stack(
            [geometry.angstrom_to_index(uvw[:, 1], nv, pixel_size) + shifts[a, 1],
             geometry.angstrom_to_index(uvw[:, 0], nu, pixel_size) + shifts[a, 0]], 1,
        )
        out[a] = _splat((nv, nu), vu, np.asarray(weights, float), sigma_px)
        rep.step(f"projection {a + 1}/{len(rot)}")
    return out


class AtomProjector:
    """Differentiable projections ``[a, v, u]`` of Gaussian atoms for given angles."""

    def __init__(self, angles, detector_shape, pixel_size: float, device="cpu"):
        import torch

        self.rot = torch.as_tensor(geometry.euler_zyz_matrices(angles), dtype=torch.float32, device=device)
        self.nv, self.nu = (int(s) for s in detector_shape)
        self.p = float(pixel_size)
        self.device = device

    def project(self, positions, heights, sigmas, angle_index=None, max_elements: int = 2**23):
        """positions (n, 3) Å, heights (n,), sigmas (n,) Å -> projections (a, nv, nu).

        Angles are batched (as many as keep the atoms' pixel windows under ``max_elements``
        values) and each atom's window is added into an image padded by the window's half
        width, so no atom needs masking; the padding is cut off afterwards."""
        import torch

        rots = self.rot if angle_index is None else self.rot[angle_index]
        half = int(math.ceil(4 * float(sigmas.detach().max()) / self.p)) + 1  # window: +-4 sigma
        w = 2 * half + 1
        offs = torch.arange(w, device=positions.device) - half
        s = (sigmas / self.p * math.sqrt(2)).clamp(min=1e-3)[:, None]
        pv, pu = self.nv + 2 * w, self.nu + 2 * w  # padded image; windows land inside it
        n = positions.shape[0]
        step = max(1, int(max_elements // max(1, n * w * w)))
        out = []
        for k in range(0, len(rots), step):
            r = rots[k:k + step]
            uvw = torch.einsum("aij,nj->ani", r, positions)
            cu = uvw[..., 0] / self.p + self.nu // 2
            cv = uvw[..., 1] / self.p + self.nv // 2
            # atoms far outside the field are parked at the padding's edge (cut off below)
            iu0 = torch.floor(cu.detach() + 0.5).long().clamp(-w + half, self.nu + w - half - 1)
            iv0 = torch.floor(cv.detach() + 0.5).long().clamp(-w + half, self.nv + w - half - 1)
            iu = iu0[..., None] + offs
            iv = iv0[..., None] + offs
            wu = 0.5 * (torch.erf((iu + 0.5 - cu[..., None]) / s) - torch.erf((iu - 0.5 - cu[..., None]) / s))
            wv = 0.5 * (torch.erf((iv + 0.5 - cv[..., None]) / s) - torch.erf((iv - 0.5 - cv[..., None]) / s))
            val = heights[None, :, None, None] * wv[..., :, None] * wu[..., None, :]
            a_idx = torch.arange(len(r), device=positions.device)[:, None, None, None]
            flat = (a_idx * pv + (iv[..., :, None] + w)) * pu + (iu[..., None, :] + w)
            img = torch.zeros(len(r) * pv * pu, dtype=val.dtype, device=val.device)
            img = img.index_add(0, flat.reshape(-1), val.reshape(-1))
            out.append(img.view(len(r), pv, pu)[:, w:w + self.nv, w:w + self.nu])
        return torch.cat(out)


class GaussianAtoms:
    """Atoms as Gaussians of the Debye-Waller width (and a Gaussian probe), integrated
    exactly over each pixel: the project's own analytic model.

    Parameters
    ----------
    b_factor : float
        Debye-Waller B, Å².
    probe_sigma : float
        Extra Gaussian probe blur, Å.
    z_exponent : float
        Integrated intensity ``(Z / 78) ** z_exponent`` (Pt = 1).
    """

    name = "gaussian"

    def __init__(self, b_factor: float = 5.0, probe_sigma: float = 0.0, z_exponent: float = 1.7):
        self.b_factor, self.probe_sigma, self.z_exponent = float(b_factor), float(probe_sigma), float(z_exponent)

    def weights(self, n: int, species=None, weights=None) -> np.ndarray:
        """Each atom's integrated intensity: given, from its species, or 1 (Pt)."""
        if weights is not None:
            return np.asarray(weights, float)
        if species is not None:
            return atom_weights(species, self.z_exponent)
        return np.ones(n)

    def project(self, positions, angles, shape, pixel_size: float, species=None, weights=None, shifts=None,
                progress=None, cancel=None) -> np.ndarray:
        """Noise-free tilt series ``[a, v, u]`` (float32); see :func:`project_atoms`."""
        pos = np.asarray(positions, float).reshape(-1, 3)
        return project_atoms(pos, self.weights(len(pos), species, weights), angles, shape, pixel_size,
                             self.b_factor, self.probe_sigma, shifts, progress, cancel)

    def density(self, positions, shape, pixel_size: float, species=None, weights=None) -> np.ndarray:
        """The ideal tomogram ``[z, y, x]`` of the same atoms (no probe blur)."""
        pos = np.asarray(positions, float).reshape(-1, 3)
        return ideal_tomogram(pos, self.weights(len(pos), species, weights), shape, pixel_size, self.b_factor)

    def torch_projector(self, angles, shape, pixel_size: float, device="cpu") -> "AtomProjector":
        """The same projections, differentiable in positions, heights and widths (torch)."""
        return AtomProjector(angles, shape, pixel_size, device=device)


class AbtemPotential:
    """abTEM projected potentials convolved with the probe: a forward model the U-Net was not
    trained on (:func:`napari_aet.core.forward_abtem.abtem_projections`; needs ``abtem``)."""

    name = "abtem"

    def __init__(self, b_factor: float = 5.0, z_exponent: float = 1.7, probe=None, supersample: int = 3,
                 parametrization: str = "lobato"):
        self.b_factor, self.z_exponent, self.probe = float(b_factor), float(z_exponent), probe
        self.supersample, self.parametrization = int(supersample), parametrization

    def project(self, positions, angles, shape, pixel_size: float, species=None, weights=None, shifts=None,
                progress=None, cancel=None) -> np.ndarray:
        from .forward_abtem import abtem_projections

        if species is None:
            raise AETInputError("the abTEM model needs each atom's species (chemical symbols), not intensities")
        return abtem_projections(positions, species, angles, shape, pixel_size, b_factor=self.b_factor,
                                 z_exponent=self.z_exponent, probe=self.probe, supersample=self.supersample,
                                 parametrization=self.parametrization, shifts=shifts, progress=progress,
                                 cancel=cancel).astype(np.float32)

    def torch_projector(self, angles, shape, pixel_size: float, device="cpu"):
        raise AETInputError("the abTEM model has no differentiable twin; refine with the Gaussian model")


FORWARD_MODELS = {"gaussian": GaussianAtoms, "abtem": AbtemPotential}


def forward_model(name: str = "gaussian", **settings):
    """A forward model by name (``gaussian`` or ``abtem``) with its settings.

    Parameters
    ----------
    name : {"gaussian", "abtem"}
    **settings
        The model's own (e.g. ``b_factor``).

    Returns
    -------
    GaussianAtoms or AbtemPotential
    """
    if name not in FORWARD_MODELS:
        raise AETInputError(f"forward model {name!r} unknown; use one of {', '.join(FORWARD_MODELS)}")
    return FORWARD_MODELS[name](**settings)

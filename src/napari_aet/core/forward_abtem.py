"""A second, independent forward model: HAADF projections from abTEM's projected potentials.

The project's own simulator draws every atom as a Gaussian (analytic line integrals). This
model shares none of that code: each projection is the Lobato (or Kirkland) projected
potential that abTEM computes for the rotated atoms, on a grid ``supersample`` times finer
than the detector, scaled per element so that one atom integrates to ``(Z / 78) ** z_exponent``
(HAADF Z-contrast; a Pt atom is 1, as in the project's simulator), blurred by the thermal
vibration of the B-factor and convolved with the intensity of an abTEM probe (aperture,
defocus, spherical aberration: Airy rings and tails that a Gaussian lacks), then integrated
over each detector pixel. It is the incoherent-imaging approximation of HAADF-STEM with a
physical atom shape and probe; it leaves out channelling and dynamical scattering, which
only a multislice simulation (abTEM's ``Potential`` + ``Probe.scan`` with an annular
detector) includes.

abTEM is an optional dependency (``pip install "napari-aet[abtem]"``); it is imported here only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Optional, Sequence

import numpy as np

from . import geometry
from .errors import AETInputError, Reporter

__all__ = ["ProbeSettings", "abtem_projections"]


@dataclass
class ProbeSettings:
    """The STEM probe: 300 kV, 25 mrad aperture, no aberrations by default (lengths in Å)."""

    energy: float = 300e3  # eV
    semiangle_cutoff: float = 25.0  # mrad
    defocus: float = 0.0  # Å
    cs: float = 0.0  # Å (spherical aberration C30)

    def to_dict(self) -> dict:
        return asdict(self)


def _import_abtem():
    try:
        import abtem
    except ImportError:
        raise AETInputError("the abTEM forward model needs abTEM; install it with pip install \"napari-aet[abtem]\"")
    abtem.config.set({"device": "cpu"})
    return abtem


def _projected_potential(abtem, symbols, positions_xy, extent: float, gpts: int, parametrization: str) -> np.ndarray:
    """Projected potential image ``[x, y]`` of atoms at ``positions_xy`` (Å, grid frame) with abTEM."""
    import ase

    pos = np.c_[positions_xy, np.full(len(positions_xy), 1.0)]
    atoms = ase.Atoms(symbols=list(symbols), positions=pos, cell=[extent, extent, 2.0], pbc=False)
    pot = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=2.0, projection="infinite",
                          parametrization=parametrization, periodic=True)
    return np.asarray(pot.build().project().compute(progress_bar=False).array, dtype=np.float64)


def _gaussian_transfer(gpts: int, sampling: float, sigma: float) -> np.ndarray:
    k = np.fft.fftfreq(gpts, d=sampling)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    return np.exp(-2 * math.pi**2 * sigma**2 * k2)


def abtem_projections(
    positions,
    species: Sequence[str],
    angles,
    shape,
    pixel_size: float,
    b_factor: float = 5.0,
    z_exponent: float = 1.7,
    probe: Optional[ProbeSettings] = None,
    supersample: int = 3,
    parametrization: str = "lobato",
    shifts=None,
    progress=None,
    cancel=None,
) -> np.ndarray:
    """Noise-free HAADF tilt series ``[a, v, u]`` of atoms from abTEM projected potentials.

    Parameters
    ----------
    positions : (N, 3) atom positions in the sample frame, Å.
    species : N chemical symbols.
    angles : tilts (N,) or Z-Y-Z Euler angles (N, 3), degrees (the contract's geometry).
    shape : (rows, cols) of each projection; ``pixel_size`` in Å.
    b_factor : Debye-Waller B in Å² (thermal blur, the mean of frozen phonons).
    z_exponent : per-atom integrated intensity ``(Z / 78) ** z_exponent``.
    probe : the STEM probe (default :class:`ProbeSettings`).
    supersample : the potential is computed on a grid this many times finer than the detector.
    parametrization : 'lobato' or 'kirkland'.
    shifts : (A, 2) detector shifts (du, dv) in pixels.

    Returns
    -------
    ndarray, float32, ``(A, rows, cols)``: one Pt atom integrates to 1.
    """
    from ase.data import atomic_numbers

    from .simulate import b_factor_to_sigma

    abtem = _import_abtem()
    probe = probe or ProbeSettings()
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    species = np.asarray(list(species))
    if len(species) != len(pos):
        raise AETInputError(f"{len(species)} species for {len(pos)} atoms; give one symbol per atom")
    nv, nu = (int(s) for s in shape)
    if nv != nu:
        raise AETInputError(f"the abTEM model makes square projections; got {nv} x {nu}")
    f = int(supersample)
    gpts, sampling = nu * f, pixel_size / f
    extent = gpts * sampling
    rot = geometry.euler_zyz_matrices(angles)
    shifts = np.zeros((len(rot), 2)) if shifts is None else np.asarray(shifts, float)
    # fine grid point j sits at j * sampling; the detector pixel i (fine points i*f .. i*f+f-1)
    # has its centre at i * pixel_size after this offset, and index centre_index(n) is 0 Å
    offset = geometry.centre_index(nu) * pixel_size + (f - 1) / 2 * sampling

    # per-element scale: one isolated atom integrates to (Z / 78) ** z_exponent
    scale = {}
    for s in np.unique(species):
        single = _projected_potential(abtem, [s], np.array([[extent / 2, extent / 2]]), extent, gpts, parametrization)
        scale[s] = (atomic_numbers[str(s)] / 78.0) ** z_exponent / single.sum()

    # probe intensity (centred at the grid's middle by abTEM) times the thermal blur, in Fourier space
    p = abtem.Probe(energy=probe.energy, semiangle_cutoff=probe.semiangle_cutoff, defocus=probe.defocus,
                    Cs=probe.cs, gpts=(gpts, gpts), extent=extent)
    psf = np.asarray(p.build().intensity().compute(progress_bar=False).array, dtype=np.float64)
    psf = np.roll(psf, (-(gpts // 2), -(gpts // 2)), axis=(0, 1)) / psf.sum()
    transfer = np.fft.fft2(psf) * _gaussian_transfer(gpts, sampling, b_factor_to_sigma(b_factor))

    out = np.empty((len(rot), nv, nu), dtype=np.float32)
    rep = Reporter(len(rot), progress, cancel)
    for a, r in enumerate(rot):
        uvw = pos @ r.T
        u = uvw[:, 0] + offset + shifts[a, 0] * pixel_size
        v = uvw[:, 1] + offset + shifts[a, 1] * pixel_size
        image = np.zeros((gpts, gpts))
        for s in scale:
            sel = species == s
            if sel.any():
                # abTEM's arrays are indexed [x, y]: x along u (columns), y along v (rows)
                image += scale[s] * _projected_potential(abtem, species[sel], np.c_[u[sel], v[sel]], extent, gpts,
                                                          parametrization)
        image = np.real(np.fft.ifft2(np.fft.fft2(image) * transfer))
        binned = image.reshape(nu, f, nv, f).sum(axis=(1, 3))  # [u, v]
        out[a] = binned.T.astype(np.float32)
        rep.step(f"projection {a + 1}/{len(rot)}")
    return out

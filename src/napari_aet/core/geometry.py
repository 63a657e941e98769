"""Frames, index <-> angstrom conversions and projection geometry.

This is the one place that fixes the conventions of ``shared/CONTRACT.md``; every
stage calls it instead of re-deriving them.

* Lengths in angstrom (Å); angles in degrees at the API, radians inside.
* Sample frame: right-handed (x, y, z), origin at the tilt centre.
* Volumes are indexed ``vol[k, j, i]`` = (z, y, x); voxel ``n`` of an axis of length
  ``N`` sits at ``(n - N // 2) * pixel_size`` (the FFT centre convention).
* Tilt series are ``tilts[a, v, u]``; the beam runs along z at zero tilt.
* A projection with Euler angles (phi, theta, psi), Z-Y-Z, maps a sample point ``r`` to
  detector coordinates ``(u, v, w) = R(phi, theta, psi) @ r`` and integrates along ``w``.
  The single-axis tilt ``t`` about y is ``(0, t, 0)``: ``u = x cos t + z sin t``, ``v = y``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "centre_index",
    "index_to_angstrom",
    "angstrom_to_index",
    "voxel_coordinates",
    "napari_scale_translate",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "euler_zyz_matrix",
    "euler_zyz_matrices",
    "as_euler_angles",
    "is_single_axis",
    "project_points",
    "random_rotation",
    "ANGLE_CONVENTIONS",
    "zyz_from_matrix",
    "convert_angles",
    "NEIGHBOUR_CUTOFF",
    "neighbour_cutoff",
    "layer_index",
    "origin_angstrom",
    "tilt_range",
]


# A neighbour is nearer than this many nearest-neighbour distances (a / sqrt 2 in f.c.c.):
# between the first shell (1) and the second (sqrt 2 = 1.41), with room for strain and noise.
# The simulator's ground truth and the analysis count neighbours with the same cut-off.
NEIGHBOUR_CUTOFF = 1.2


def neighbour_cutoff(nearest_neighbour_distance: float) -> float:
    """Distance (Å) within which two atoms are nearest neighbours.

    Parameters
    ----------
    nearest_neighbour_distance : float
        Å (``a / sqrt 2`` in f.c.c.).

    Returns
    -------
    float
        :data:`NEIGHBOUR_CUTOFF` times it, Å.
    """
    return NEIGHBOUR_CUTOFF * float(nearest_neighbour_distance)


def layer_index(heights, layer_thickness: float, start: Optional[float] = None) -> np.ndarray:
    """Index of the one-unit-cell-thick layer each height (Å, along the layer axis) falls in,
    counted from ``start`` (default: the lowest height). One formula for the simulator's truth,
    the analysis and the per-layer maps.

    Parameters
    ----------
    heights : (n,) array
        Positions along the layer axis, Å.
    layer_thickness : float
        Å (one lattice constant).
    start : float, optional
        Å; default the lowest height.

    Returns
    -------
    (n,) int array
    """
    h = np.asarray(heights, float)
    start = float(h.min()) if start is None else float(start)
    return np.floor((h - start) / float(layer_thickness) + 1e-6).astype(int)


def origin_angstrom(n: int, pixel_size: float) -> float:
    """Coordinate (Å) of the first voxel of an axis of length ``n``: MRC origins, napari translates.

    Parameters
    ----------
    n : int
    pixel_size : float
        Å.

    Returns
    -------
    float
        Å.
    """
    return float(index_to_angstrom(0, n, pixel_size))


def centre_index(n: int) -> int:
    """Index of the coordinate origin on an axis of length ``n`` (``n // 2``).

    Parameters
    ----------
    n : int

    Returns
    -------
    int
    """
    return int(n) // 2


def index_to_angstrom(index, n: int, pixel_size: float):
    """Convert a (possibly fractional) voxel index on an axis of length ``n`` to Å.

    Parameters
    ----------
    index : float or array
    n : int
    pixel_size : float
        Å.

    Returns
    -------
    float array
        Å.
    """
    return (np.asarray(index, dtype=np.float64) - centre_index(n)) * float(pixel_size)


def angstrom_to_index(coord, n: int, pixel_size: float):
    """Convert a coordinate in Å to a fractional voxel index on an axis of length ``n``.

    Parameters
    ----------
    coord : float or array
        Å.
    n : int
    pixel_size : float
        Å.

    Returns
    -------
    float array
    """
    return np.asarray(coord, dtype=np.float64) / float(pixel_size) + centre_index(n)


def voxel_coordinates(n: int, pixel_size: float) -> np.ndarray:
    """Coordinates (Å) of the voxel centres of an axis of length ``n``.

    Parameters
    ----------
    n : int
    pixel_size : float
        Å.

    Returns
    -------
    (n,) array
        Å.
    """
    return index_to_angstrom(np.arange(int(n)), n, pixel_size)


def napari_scale_translate(shape, pixel_size: float):
    """napari ``scale`` and ``translate`` that put a (z, y, x) volume in sample-frame Å.

    Parameters
    ----------
    shape : tuple of int
    pixel_size : float
        Å.

    Returns
    -------
    scale, translate : tuples
        Å per voxel and the first voxel's coordinate, Å.
    """
    p = float(pixel_size)
    scale = tuple(p for _ in shape)
    translate = tuple(-centre_index(n) * p for n in shape)
    return scale, translate


def rotation_x(angle_rad: float) -> np.ndarray:
    """Active right-handed rotation about x by ``angle_rad``.

    Parameters
    ----------
    angle_rad : float

    Returns
    -------
    (3, 3) array
    """
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle_rad: float) -> np.ndarray:
    """Active right-handed rotation about y by ``angle_rad``.

    Parameters
    ----------
    angle_rad : float

    Returns
    -------
    (3, 3) array
    """
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(angle_rad: float) -> np.ndarray:
    """Active right-handed rotation about z by ``angle_rad``.

    Parameters
    ----------
    angle_rad : float

    Returns
    -------
    (3, 3) array
    """
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_zyz_matrix(phi: float, theta: float, psi: float) -> np.ndarray:
    """Z-Y-Z Euler rotation (degrees) taking sample coordinates to detector (u, v, w).

    ``R = Rz(phi) @ Ry(theta) @ Rz(psi)``; this is the single definition of the
    projection geometry. ``(0, t, 0)`` is the single-axis tilt about y:
    ``u = x cos t + z sin t``, ``v = y``.

    Parameters
    ----------
    phi, theta, psi : float
        Degrees.

    Returns
    -------
    (3, 3) array
    """
    p, t, s = np.deg2rad([phi, theta, psi])
    return rotation_z(p) @ rotation_y(t) @ rotation_z(s)


def euler_zyz_matrices(angles) -> np.ndarray:
    """Rotation matrices, shape (n, 3, 3), for tilt angles (n,) or Euler angles (n, 3), degrees.

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Degrees.

    Returns
    -------
    (n, 3, 3) array
    """
    euler = as_euler_angles(angles)
    return np.stack([euler_zyz_matrix(*row) for row in euler]) if len(euler) else np.zeros((0, 3, 3))


def as_euler_angles(angles) -> np.ndarray:
    """Return (n, 3) Z-Y-Z Euler angles (degrees) from single-axis tilts (n,) or Euler (n, 3).

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Degrees.

    Returns
    -------
    (n, 3) array
        (phi, theta, psi), degrees.
    """
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim == 0:
        a = a[None]
    if a.ndim == 1:
        out = np.zeros((a.shape[0], 3))
        out[:, 1] = a
        return out
    if a.ndim == 2 and a.shape[1] == 3:
        return a.copy()
    raise ValueError(
        f"angles have shape {a.shape}; give N tilt angles or an N x 3 table of Euler angles"
    )


def is_single_axis(angles, atol: float = 1e-9) -> bool:
    """True when all projections are tilts about y alone (phi = psi = 0).

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Degrees.
    atol : float
        Degrees.

    Returns
    -------
    bool
    """
    e = as_euler_angles(angles)
    return bool(np.all(np.abs(e[:, 0]) < atol) and np.all(np.abs(e[:, 2]) < atol))


def tilt_range(angles) -> Optional[float]:
    """The largest |tilt| (degrees) of a single-axis series about y, which bounds its missing
    wedge (:func:`~napari_aet.core.fourier.missing_wedge_mask`); None for general Euler angles,
    whose missing region is no wedge about y. The one definition every caller uses.

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Degrees.

    Returns
    -------
    float or None
        Degrees.
    """
    if not is_single_axis(angles, atol=1e-6):
        return None
    tilts = as_euler_angles(angles)[:, 1]
    return float(np.abs(tilts).max()) if len(tilts) else None


def project_points(xyz, angles) -> np.ndarray:
    """Detector coordinates (u, v) in Å of sample points ``xyz`` (m, 3) for each projection.

    Returns an array of shape (n_projections, m, 2).

    Parameters
    ----------
    xyz : (m, 3) array
        Å, sample frame.
    angles : (n,) or (n, 3) array
        Degrees.

    Returns
    -------
    (n, m, 2) array
        (u, v) in Å.
    """
    pts = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rot = euler_zyz_matrices(angles)
    uvw = np.einsum("aij,mj->ami", rot, pts)
    return uvw[..., :2]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly from SO(3) (unit quaternion method).

    Parameters
    ----------
    rng : numpy Generator

    Returns
    -------
    (3, 3) array
    """
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# ----------------------------------------------------------------------- angle conventions

ANGLE_CONVENTIONS = ("zyz", "zyx", "tilt-axis")


def zyz_from_matrix(m: np.ndarray) -> np.ndarray:
    """Z-Y-Z Euler angles (degrees) of a rotation matrix: ``R = Rz(phi) Ry(theta) Rz(psi)``,
    theta in [0, 180]; at theta = 0 or 180 the split between phi and psi is arbitrary and
    psi is set to 0.

    Parameters
    ----------
    m : (3, 3) array

    Returns
    -------
    (3,) array
        (phi, theta, psi), degrees.
    """
    m = np.asarray(m, dtype=np.float64)
    theta = np.arccos(np.clip(m[2, 2], -1.0, 1.0))
    if np.sin(theta) < 1e-9:
        phi = np.arctan2(m[1, 0], m[0, 0]) if m[2, 2] > 0 else np.arctan2(-m[1, 0], -m[0, 0])
        return np.degrees([phi, theta, 0.0])
    return np.degrees([np.arctan2(m[1, 2], m[0, 2]), theta, np.arctan2(m[2, 1], -m[2, 0])])


def convert_angles(angles, convention: str = "zyz", tilt_axis_angle: float = 0.0) -> np.ndarray:
    """Angles in another convention as the contract's (degrees).

    ``zyz``: the contract's own: tilts (N,) or Z-Y-Z Euler (N, 3), returned unchanged.
    ``zyx``: Euler (N, 3) (phi, theta, psi) as RESIRE reads them: it builds
    ``R = (Rz(phi) Ry(theta) Rx(psi))^T`` and puts a sample point at detector ``R r`` (its
    ``calculate3Dprojection``/``RT3`` code), so the contract's rotation is that transpose;
    returned as Z-Y-Z Euler (N, 3). RESIRE's MATLAB stacks are ``[x, y, projection]``: read
    them with ``stack_axis=2, transpose_projections=True``.
    ``tilt-axis``: single-axis tilts (N,) about an axis lying in the detector plane at
    ``tilt_axis_angle`` degrees from v (the image rows' direction, counter-clockwise towards
    -u); returned as Z-Y-Z Euler ``(alpha, t, -alpha)``.

    Parameters
    ----------
    angles : (n,) or (n, 3) array
        Degrees.
    convention : {"zyz", "zyx", "tilt-axis"}
    tilt_axis_angle : float
        Degrees (``tilt-axis`` only).

    Returns
    -------
    (n,) or (n, 3) array
        The contract's angles, degrees.
    """
    a = np.asarray(angles, dtype=np.float64)
    if convention == "zyz":
        return a
    if convention == "zyx":
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"Z-Y-X angles need three columns (phi theta psi); got shape {a.shape}")
        out = np.empty_like(a)
        for k, (phi, theta, psi) in enumerate(np.deg2rad(a)):
            out[k] = zyz_from_matrix((rotation_z(phi) @ rotation_y(theta) @ rotation_x(psi)).T)
        return out
    if convention == "tilt-axis":
        if a.ndim != 1:
            raise ValueError(f"tilt-axis angles are one tilt per projection; got shape {a.shape}")
        alpha = float(tilt_axis_angle)
        return np.stack([np.full_like(a, alpha), a, np.full_like(a, -alpha)], axis=1)
    raise ValueError(f"angle convention {convention!r} unknown; use one of {', '.join(ANGLE_CONVENTIONS)}")
